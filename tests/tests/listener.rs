//! The webhook listener sheds slow and idle clients (issue 10 §2), with the real wix-ingest:
//! a crowd trickling headers under `ulimit -n 1024` does not keep Wix out and does not grow
//! memory without bound; a slow body is a 408; a body shorter than its `Content-Length` is
//! never stored; idle keep-alive connections are closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use wixprint_shared::proto::ingest::GetStatusRequest;
use wixprint_tests::harness::{Stack, StackOptions, raise_nofile_limit, wait_until};
use wixprint_tests::webhook::distinct_order;

const PICKUP: &str = "order_created.pickup.json";
/// Wix gives up on a webhook after this.
const WIX_TIMEOUT: Duration = Duration::from_millis(1250);
const ATTACKERS: usize = 1100;

async fn stack(opts: StackOptions) -> Stack {
    Stack::start(opts).await.expect("stack starts")
}

fn http_addr(stack: &Stack) -> String {
    stack.http_url.trim_start_matches("http://").to_owned()
}

/// Reads one HTTP/1.1 response (head and `Content-Length` body); `None` when the server closed
/// the connection before a complete response.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = text.split_whitespace().nth(1)?.parse().ok()?;
                return Some((status, text));
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Posts a signed webhook on a new connection (as Wix does); returns the status and how long
/// the answer took.
async fn post_fresh(stack: &Stack, body: String) -> (u16, Duration) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let started = Instant::now();
    let resp = client
        .post(format!("{}/webhooks/wix", stack.http_url))
        .header("content-type", "text/plain")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match resp {
        Ok(r) => (r.status().as_u16(), started.elapsed()),
        Err(e) => panic!("webhook failed after {:?}: {e}\n{}", started.elapsed(), stack.ingest.log()),
    }
}

/// What a slow client trickles.
#[derive(Clone, Copy, PartialEq)]
enum Slow {
    /// A header line every 300 ms, never ending the head; reconnects 250 ms after a close.
    Headers,
    /// A complete head announcing 100 kB, then one body byte every 300 ms; never reconnects.
    Body,
}

/// One slow client.
async fn trickle(addr: String, connected: Arc<AtomicUsize>, stop: CancellationToken, slow: Slow) {
    while !stop.is_cancelled() {
        if let Ok(mut s) = TcpStream::connect(&addr).await {
            connected.fetch_add(1, Ordering::Relaxed);
            let mut line: &[u8] = match slow {
                Slow::Headers => b"POST /webhooks/wix HTTP/1.1\r\nHost: localhost\r\n",
                Slow::Body => b"POST /webhooks/wix HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
            };
            loop {
                if s.write_all(line).await.is_err() {
                    break;
                }
                line = if slow == Slow::Headers { b"X-Slow: 1\r\n" } else { b"x" };
                let mut probe = [0u8; 64];
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    // Closed (or answered) by the server: this connection is done.
                    _ = s.read(&mut probe) => break,
                }
            }
        }
        if slow == Slow::Body {
            stop.cancelled().await;
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_trickling_headers_under_ulimit_1024_neither_keeps_wix_out_nor_grows_memory() {
    let limit = raise_nofile_limit().expect("raising this test's descriptor limit");
    assert!(limit >= 4096, "this test needs a hard descriptor limit of at least 4096 (ulimit -Hn is {limit})");
    let stack = stack(StackOptions::default().ingest_nofile(1024)).await;
    let (status, _) = post_fresh(&stack, stack.keys.sign_event(&distinct_order(PICKUP, 1))).await;
    assert_eq!(status, 200);
    let rss_before = stack.ingest.rss_kib().unwrap();

    let stop = CancellationToken::new();
    let connected = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| tokio::spawn(trickle(http_addr(&stack), connected.clone(), stop.clone(), Slow::Headers)))
        .collect();
    wait_until(Duration::from_secs(30), "every slow client connected once", || {
        let n = connected.load(Ordering::Relaxed);
        async move { Ok(n >= ATTACKERS) }
    })
    .await
    .unwrap();
    // The crowd is in: the listener reached its cap and sheds (a client's connect can complete
    // before the server accepts it, so the count above alone does not say so).
    wait_until(Duration::from_secs(30), "the listener sheds the crowd", || {
        let shedding = stack.ingest.log().contains("shedding idle and slow clients");
        async move { Ok(shedding) }
    })
    .await
    .unwrap();

    let mut worst = Duration::ZERO;
    for n in 2..=6 {
        let (status, took) = post_fresh(&stack, stack.keys.sign_event(&distinct_order(PICKUP, n))).await;
        assert_eq!(status, 200, "webhook {n} under attack:\n{}", stack.ingest.log());
        assert!(took < WIX_TIMEOUT, "webhook {n} took {took:?} under attack (Wix gives up at {WIX_TIMEOUT:?})");
        worst = worst.max(took);
    }
    let rss_during = stack.ingest.rss_kib().unwrap();
    let reconnects = connected.load(Ordering::Relaxed);
    stop.cancel();
    for a in attackers {
        let _ = a.await;
    }
    eprintln!(
        "under {ATTACKERS} trickling clients ({reconnects} connections in all): slowest webhook {worst:?}, \
         VmRSS {rss_before} KiB before, {rss_during} KiB during"
    );
    assert!(
        rss_during < rss_before + 48 * 1024,
        "wix-ingest grew from {rss_before} KiB to {rss_during} KiB under {ATTACKERS} slow clients"
    );
    let mut admin = stack.ingest_admin().await.unwrap();
    let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.webhook_events, 6, "every accepted webhook is stored, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_slow_bodies_under_ulimit_1024_does_not_keep_wix_out() {
    let limit = raise_nofile_limit().expect("raising this test's descriptor limit");
    assert!(limit >= 4096, "this test needs a hard descriptor limit of at least 4096 (ulimit -Hn is {limit})");
    let stack = stack(StackOptions::default().ingest_nofile(1024)).await;
    let stop = CancellationToken::new();
    let connected = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| tokio::spawn(trickle(http_addr(&stack), connected.clone(), stop.clone(), Slow::Body)))
        .collect();
    wait_until(Duration::from_secs(30), "every slow client connected", || {
        let n = connected.load(Ordering::Relaxed);
        async move { Ok(n >= ATTACKERS) }
    })
    .await
    .unwrap();
    // Every connection now holds a request whose body trickles. Those requests become
    // evictable once older than Wix's own timeout (wix_ingest::listener::STALE_REQUEST); that
    // is an age, there is no event to wait for.
    tokio::time::sleep(wix_ingest::listener::STALE_REQUEST).await;
    let mut worst = Duration::ZERO;
    for n in 1..=5 {
        let (status, took) = post_fresh(&stack, stack.keys.sign_event(&distinct_order(PICKUP, n))).await;
        assert_eq!(status, 200, "webhook {n} behind slow bodies:\n{}", stack.ingest.log());
        assert!(took < WIX_TIMEOUT, "webhook {n} took {took:?} behind slow bodies");
        worst = worst.max(took);
    }
    let rss = stack.ingest.rss_kib().unwrap();
    stop.cancel();
    for a in attackers {
        let _ = a.await;
    }
    eprintln!("behind {ATTACKERS} slow bodies: slowest webhook {worst:?}, VmRSS {rss} KiB");
    let mut admin = stack.ingest_admin().await.unwrap();
    let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.webhook_events, 5, "every accepted webhook is stored, no slow body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_share_one_memory_budget() {
    // Room for one body at a time: a stalled body holds most of it; another request is told
    // to come back (503, Wix retries) until the stalled one is given up (408).
    let stack = stack(
        StackOptions::default()
            .ingest_env("INGEST_MAX_BODY_BYTES", "65536")
            .ingest_env("INGEST_HTTP_BODY_BUDGET_BYTES", "65536")
            .ingest_env("INGEST_HTTP_BODY_TIMEOUT_MS", "1500"),
    )
    .await;
    let mut stalled = TcpStream::connect(http_addr(&stack)).await.unwrap();
    stalled.write_all(head(65_000).as_bytes()).await.unwrap();
    stalled.write_all(&[b'x'; 64_000]).await.unwrap();
    let body = stack.keys.sign_event(&distinct_order(PICKUP, 1));
    assert!(body.len() > 65_536 - 64_000, "the fixture is bigger than what the budget has left");
    let client = reqwest::Client::new();
    let url = format!("{}/webhooks/wix", stack.http_url);
    // The stalled body's bytes reach the server asynchronously: retry until they are counted.
    wait_until(Duration::from_secs(1), "a webhook refused for the budget", || {
        let req = client.post(&url).body(body.clone()).send();
        async move {
            let r = req.await?;
            let status = r.status().as_u16();
            let text = r.text().await?;
            anyhow::ensure!(status != 200, "accepted while the budget should be spent: {text}");
            Ok(status == 503 && text.contains("too many webhook bodies in flight"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.ingest.log()));
    let (status, _) = read_response(&mut stalled).await.expect("the stalled body is answered");
    assert_eq!(status, 408);
    let (status, _) = post_fresh(&stack, body).await;
    assert_eq!(status, 200, "the budget is back once the stalled body is given up");
}

fn head(len: usize) -> String {
    format!(
        "POST /webhooks/wix HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_a_408() {
    let stack = stack(StackOptions::default().ingest_env("INGEST_HTTP_BODY_TIMEOUT_MS", "500")).await;
    let addr = http_addr(&stack);

    // Half the body, then nothing: Wix's retry must be invited (408), not refused (400).
    let body = stack.keys.sign_event(&distinct_order(PICKUP, 1));
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(head(body.len()).as_bytes()).await.unwrap();
    s.write_all(&body.as_bytes()[..body.len() / 2]).await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s)).await;
    let (status, text) = answer.expect("answered within 5 s").expect("a complete response");
    assert_eq!(status, 408, "{text}");
    assert!(started.elapsed() >= Duration::from_millis(400), "answered before the body timeout: {text}");
    let mut admin = stack.ingest_admin().await.unwrap();
    let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.webhook_events, st.orders), (0, 0), "nothing of a timed-out request is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_never_stored() {
    let stack = stack(StackOptions::default()).await;
    let addr = http_addr(&stack);

    // A complete, validly signed JWT, but the request announced 100 bytes more and the
    // client closed its side: the request is incomplete and must not be accepted.
    let body = stack.keys.sign_event(&distinct_order(PICKUP, 2));
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(head(body.len() + 100).as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut s)).await.expect("within 5 s");
    assert!(!matches!(answer, Some((200, _))), "a short body was accepted: {answer:?}");

    let mut admin = stack.ingest_admin().await.unwrap();
    let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.webhook_events, st.orders), (0, 0), "nothing of a refused request is stored");

    // The same body, sent whole, is accepted.
    let (status, _) = post_fresh(&stack, body).await;
    assert_eq!(status, 200);
    let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.webhook_events, st.orders), (1, 1));
}

/// Waits for the server to close `s`; returns how long it took, or `None` after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_and_silent_connections_are_closed_after_their_timeouts() {
    let stack = stack(
        StackOptions::default()
            .ingest_env("INGEST_HTTP_IDLE_TIMEOUT_MS", "600")
            .ingest_env("INGEST_HTTP_HEADER_TIMEOUT_MS", "600"),
    )
    .await;
    let addr = http_addr(&stack);

    // A keep-alive connection after its response.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let (status, _) = read_response(&mut kept).await.expect("healthz answers");
    assert_eq!(status, 200);
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(&addr).await.unwrap();

    let idle = closed_within(&mut kept, Duration::from_secs(5)).await;
    let idle = idle.expect("an idle keep-alive connection is closed within 5 s");
    assert!(idle >= Duration::from_millis(450), "closed after {idle:?}, before the idle timeout");
    let silent = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(silent.is_some(), "a connection that sends no request head is closed within 5 s");

    // The listener still serves.
    let (status, _) = post_fresh(&stack, stack.keys.sign_event(&distinct_order(PICKUP, 1))).await;
    assert_eq!(status, 200);
}
