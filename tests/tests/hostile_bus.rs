//! A hostile connectivity bus, black-box with the real binaries: whatever a peer sends to a
//! service's PUB socket, or publishes to a service's SUB socket from a forged peer, both
//! services keep answering gRPC (health and GetStatus), keep printing, stay within a memory
//! bound (VmHWM, the peak RSS, from /proc) and react at a bounded rate (outbox flushes and
//! log volume). Every attack is written here by hand as raw ZMTP bytes over loopback TCP.

use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wixprint_shared::proto::events::{Component, ConnectivityState};
use wixprint_shared::proto::ingest::GetConnectivityRequest;
use wixprint_shared::time::{now_ms, timestamp_from_ms};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::webhook::distinct_order;

/// Largest growth of a service's peak RSS an attack may cause.
const RSS_BOUND_KB: u64 = 24 * 1024;
const PICKUP: &str = "order_created.pickup.json";
const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Raw ZMTP

fn greeting() -> Vec<u8> {
    let mut g = vec![0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[12..16].copy_from_slice(b"NULL");
    g
}

fn frame(body: &[u8], more: bool, command: bool) -> Vec<u8> {
    let mut flags = u8::from(more) | if command { 4 } else { 0 };
    let mut out = Vec::with_capacity(body.len() + 9);
    if body.len() > 255 {
        flags |= 2;
        out.push(flags);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(body.len() as u8);
    }
    out.extend_from_slice(body);
    out
}

fn ready(socket_type: &str) -> Vec<u8> {
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    frame(&body, false, true)
}

/// Greeting and READY as `socket_type`; the peer's greeting and READY are read and dropped.
async fn handshake(s: &mut TcpStream, socket_type: &str) -> std::io::Result<()> {
    s.write_all(&greeting()).await?;
    s.write_all(&ready(socket_type)).await?;
    let mut g = [0u8; 64];
    s.read_exact(&mut g).await?;
    let (_flags, len) = (s.read_u8().await?, s.read_u8().await?);
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await?;
    Ok(())
}

fn tcp(addr: &str) -> &str {
    addr.strip_prefix("tcp://").expect("the harness runs the bus on TCP loopback")
}

/// A bus message as a real peer sends it: topic frame + ConnectivityState.
fn state_message(instance: &str, sequence: u64) -> Vec<u8> {
    let state = ConnectivityState {
        source: "wix-print".into(),
        instance: instance.into(),
        sequence,
        at: Some(timestamp_from_ms(now_ms())),
        heartbeat_ms: 200,
        components: vec![Component {
            kind: "printer".into(),
            name: "kitchen".into(),
            state: "online".into(),
            since: Some(timestamp_from_ms(now_ms())),
            detail: String::new(),
        }],
    };
    let mut out = frame(b"connectivity", true, false);
    out.extend(frame(&state.encode_to_vec(), false, false));
    out
}

/// A forged wix-print: a PUB socket wix-ingest subscribes to (its PRINT_PUB_ADDR), writing
/// what `next` produces to every subscriber as fast as the connection takes it.
struct FakePub {
    addr: String,
    stop: CancellationToken,
    subscribed: std::sync::Arc<tokio::sync::Notify>,
}

impl FakePub {
    async fn start(next: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static) -> FakePub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("tcp://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let subscribed = std::sync::Arc::new(tokio::sync::Notify::new());
        let next = std::sync::Arc::new(next);
        let (token, notify) = (stop.clone(), subscribed.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let (mut s, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (token, notify, next) = (token.clone(), notify.clone(), next.clone());
                n += 1_000_000;
                let base = n;
                tokio::spawn(async move {
                    if handshake(&mut s, "PUB").await.is_err() {
                        return;
                    }
                    // The subscription: a short frame.
                    let mut sub = [0u8; 2];
                    if s.read_exact(&mut sub).await.is_err() {
                        return;
                    }
                    let mut topic = vec![0u8; sub[1] as usize];
                    if s.read_exact(&mut topic).await.is_err() {
                        return;
                    }
                    notify.notify_one();
                    let mut i = base;
                    loop {
                        i += 1;
                        let bytes = next(i);
                        tokio::select! {
                            _ = token.cancelled() => return,
                            w = s.write_all(&bytes) => if w.is_err() { return },
                        }
                    }
                });
            }
        });
        FakePub { addr, stop, subscribed }
    }
}

impl Drop for FakePub {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---------------------------------------------------------------------------------------------
// What every test checks

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, in clock ticks (for the measurements printed).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// Both services' peak RSS (VmHWM) in kB.
fn peaks(stack: &Stack) -> [u64; 2] {
    [stack.ingest.pid(), stack.print.pid()].map(|p| p.map_or(0, |p| proc_status_kb(p, "VmHWM:")))
}

fn cpu(stack: &Stack) -> [u64; 2] {
    [stack.ingest.pid(), stack.print.pid()].map(|p| p.map_or(0, cpu_ticks))
}

/// Both processes run, answer health and GetStatus within 2 s, and an order still prints.
async fn alive_and_printing(stack: &mut Stack, what: &str, n: u64) {
    assert!(stack.ingest.is_running(), "{what}: wix-ingest died\n{}", stack.logs());
    assert!(stack.print.is_running(), "{what}: wix-print died\n{}", stack.logs());
    for addr in [&stack.ingest_grpc, &stack.print_grpc] {
        let answered = tokio::time::timeout(Duration::from_secs(2), async {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await?;
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let st = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?.into_inner();
            anyhow::Ok(st.status)
        })
        .await;
        let status = answered.unwrap_or_else(|_| panic!("{what}: {addr} did not answer health within 2 s"));
        assert_eq!(
            status.unwrap_or_else(|e| panic!("{what}: health on {addr}: {e:#}")),
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    let within = Duration::from_secs(2);
    tokio::time::timeout(within, async {
        let mut ingest = stack.ingest_admin().await?;
        ingest.get_status(wixprint_shared::proto::ingest::GetStatusRequest {}).await?;
        anyhow::Ok(())
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: ingest GetStatus took over 2 s"))
    .unwrap();
    tokio::time::timeout(within, async {
        let mut print = stack.print_admin().await?;
        print.get_status(wixprint_shared::proto::print::GetStatusRequest {}).await?;
        anyhow::Ok(())
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: print GetStatus took over 2 s"))
    .unwrap();
    let before = stack.sim.tickets().len();
    stack.send_event(&distinct_order(PICKUP, n)).await.unwrap();
    stack
        .sim
        .wait_for_tickets(before + 3, T)
        .await
        .unwrap_or_else(|e| panic!("{what}: the order did not print: {e:#}\n{}", stack.logs()));
}

fn within_rss_bound(stack: &Stack, what: &str, (before, cpu_before): ([u64; 2], [u64; 2])) {
    let (after, cpu_after) = (peaks(stack), cpu(stack));
    eprintln!(
        "{what}: peak RSS ingest {} -> {} kB, print {} -> {} kB; CPU used ingest {} ms, print {} ms",
        before[0],
        after[0],
        before[1],
        after[1],
        (cpu_after[0] - cpu_before[0]) * 10,
        (cpu_after[1] - cpu_before[1]) * 10
    );
    for (name, b, a) in [("wix-ingest", before[0], after[0]), ("wix-print", before[1], after[1])] {
        assert!(a <= b + RSS_BOUND_KB, "{what}: {name}'s peak RSS grew from {b} to {a} kB");
    }
}

async fn stack(opts: StackOptions) -> Stack {
    Stack::start(opts).await.expect("stack starts")
}

/// Connects to a PUB address; `None` when the service refused or closed the connection.
async fn connect(addr: &str) -> Option<TcpStream> {
    TcpStream::connect(tcp(addr)).await.ok()
}

// ---------------------------------------------------------------------------------------------
// Attacks on the PUB sockets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_on_the_pub_sockets_change_nothing() {
    let mut stack = stack(StackOptions::default()).await;
    alive_and_printing(&mut stack, "before", 1).await;
    let before = (peaks(&stack), cpu(&stack));
    let junk: Vec<u8> = (0..256 * 1024).map(|_| rand::random::<u8>()).collect();
    for addr in [stack.ingest_pub_addr.clone(), stack.print_pub_addr.clone()] {
        for round in 0..20 {
            let Some(mut s) = connect(&addr).await else { continue };
            if round % 2 == 1 {
                // A valid greeting and READY, then noise where frames belong.
                let _ = handshake(&mut s, "SUB").await;
            }
            let _ = s.write_all(&junk[round * 1000..]).await;
        }
    }
    alive_and_printing(&mut stack, "after garbage", 2).await;
    within_rss_bound(&stack, "garbage", before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_header_announcing_a_terabyte_is_refused() {
    let mut stack = stack(StackOptions::default()).await;
    alive_and_printing(&mut stack, "before", 1).await;
    let before = (peaks(&stack), cpu(&stack));
    // The 73 bytes: a greeting and one frame header announcing 2^40 bytes.
    let mut attack = greeting();
    attack.push(0x02);
    attack.extend_from_slice(&(1u64 << 40).to_be_bytes());
    assert_eq!(attack.len(), 73);
    for addr in [stack.ingest_pub_addr.clone(), stack.print_pub_addr.clone()] {
        for _ in 0..3 {
            let mut s = connect(&addr).await.expect("the PUB socket accepts a connection");
            s.write_all(&attack).await.unwrap();
            // The service answers the greeting and closes the connection: read to the end.
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
        }
    }
    alive_and_printing(&mut stack, "after the 2^40-byte frame header", 2).await;
    within_rss_bound(&stack, "oversized frame header", before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_messages_to_the_pub_sockets_are_refused() {
    let mut stack = stack(StackOptions::default()).await;
    alive_and_printing(&mut stack, "before", 1).await;
    let before = (peaks(&stack), cpu(&stack));
    let mut big = vec![1u8];
    big.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    let message = frame(&big, false, false);
    for addr in [stack.ingest_pub_addr.clone(), stack.print_pub_addr.clone()] {
        for _ in 0..4 {
            let Some(mut s) = connect(&addr).await else { continue };
            if handshake(&mut s, "SUB").await.is_err() {
                continue;
            }
            // A 10 MiB "subscription"; the service may hang up part way.
            let _ = s.write_all(&message).await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
        }
    }
    alive_and_printing(&mut stack, "after 10 MiB messages", 2).await;
    within_rss_bound(&stack, "10 MiB messages", before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_flood_neither_freezes_nor_bloats_a_service() {
    let mut stack = stack(StackOptions::default()).await;
    alive_and_printing(&mut stack, "before", 1).await;
    let before = (peaks(&stack), cpu(&stack));
    // Sockets x subscriptions of 1 KiB each, at both PUB sockets at once.
    const SOCKETS: usize = 150;
    const SUBSCRIPTIONS: usize = 200;
    let mut sub = vec![1u8];
    sub.extend((0..1024).map(|i| (i % 251) as u8));
    let mut flood = Vec::new();
    for i in 0..SUBSCRIPTIONS {
        sub[1..9].copy_from_slice(&(i as u64).to_be_bytes());
        flood.extend(frame(&sub, false, false));
    }
    let flood = std::sync::Arc::new(flood);
    let mut attackers = tokio::task::JoinSet::new();
    for addr in [stack.ingest_pub_addr.clone(), stack.print_pub_addr.clone()] {
        for _ in 0..SOCKETS {
            let (addr, flood) = (addr.clone(), flood.clone());
            attackers.spawn(async move {
                // A service that stops reading makes the attack end here, not hang the test.
                tokio::time::timeout(Duration::from_secs(10), async {
                    let mut s = connect(&addr).await?;
                    handshake(&mut s, "SUB").await.ok()?;
                    s.write_all(&flood).await.ok()?;
                    // Hold the connection (the service may close it) while the others flood.
                    Some(s)
                })
                .await
                .ok()
                .flatten()
            });
        }
    }
    let started = Instant::now();
    let mut held = Vec::new();
    while let Some(r) = attackers.join_next().await {
        held.extend(r.unwrap());
    }
    eprintln!("flood of {SOCKETS} x {SUBSCRIPTIONS} x 1 KiB per PUB sent in {:?}", started.elapsed());
    // While the attackers' connections are still open.
    alive_and_printing(&mut stack, "during the subscription flood", 2).await;
    within_rss_bound(&stack, "subscription flood", before);
    drop(held);
    // Once the attackers are gone, the real peers see each other again.
    let mut ingest = stack.ingest_admin().await.unwrap();
    wait_until(Duration::from_secs(10), "wix-print live again on ingest's bus", || {
        let mut ingest = ingest.clone();
        async move {
            let c = ingest.get_connectivity(GetConnectivityRequest {}).await?.into_inner();
            Ok(c.peer.is_some_and(|p| p.state == "live"))
        }
    })
    .await
    .unwrap();
    ingest.get_connectivity(GetConnectivityRequest {}).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Forged peers publishing to a service's SUB socket

/// Runs ingest against a forged wix-print publishing `next(i)` for `attack`, then checks the
/// outbox flushes and log volume stayed rate-limited; returns the stack for more checks.
async fn forged_peer(next: impl Fn(u64) -> Vec<u8> + Send + Sync + 'static, max_flushes: usize) -> Stack {
    let fake = FakePub::start(next).await;
    let mut stack = stack(StackOptions::default().ingest_env("PRINT_PUB_ADDR", fake.addr.clone())).await;
    tokio::time::timeout(T, fake.subscribed.notified()).await.expect("wix-ingest subscribes to the forged peer");
    let before = (peaks(&stack), cpu(&stack));
    let log_before = stack.ingest.log().len();
    // The attack runs for a fixed time: this is its length, not a wait for readiness.
    let attack = Duration::from_secs(3);
    let started = Instant::now();
    tokio::time::sleep(attack).await;
    let log = stack.ingest.log();
    let flushes = log.matches("flushing the outbox now").count();
    let grown = log.len().saturating_sub(log_before);
    eprintln!("{flushes} outbox flushes and {grown} bytes of log in {:?}", started.elapsed());
    assert!(flushes <= max_flushes, "{flushes} outbox flushes in {attack:?}");
    assert!(grown < 64 * 1024, "the log grew by {grown} bytes in {attack:?}");
    alive_and_printing(&mut stack, "under a forged peer", 1).await;
    within_rss_bound(&stack, "forged peer", before);
    drop(fake);
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_flood_flushes_the_outbox_at_a_bounded_rate() {
    // Every message announces a new wix-print instance: "restarted", as fast as possible.
    let stack = forged_peer(|i| state_message(&format!("forged-{i}"), 1), 6).await;
    let mut ingest = stack.ingest_admin().await.unwrap();
    let c = ingest.get_connectivity(GetConnectivityRequest {}).await.unwrap().into_inner();
    let peer = c.peer.unwrap();
    assert!(peer.restarts_seen <= 6, "{peer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_states_cause_no_storm() {
    // Replays: two instances alternating with their old sequence numbers, duplicates of the
    // same message, and garbage payloads under the right topic.
    let stack = forged_peer(
        |i| match i % 4 {
            0 => state_message("instance-a", 5),
            1 => state_message("instance-b", 5),
            2 => state_message("instance-a", 1),
            _ => {
                let mut m = frame(b"connectivity", true, false);
                m.extend(frame(&[0xff; 40], false, false));
                m
            }
        },
        3,
    )
    .await;
    let mut ingest = stack.ingest_admin().await.unwrap();
    let c = ingest.get_connectivity(GetConnectivityRequest {}).await.unwrap().into_inner();
    let peer = c.peer.unwrap();
    assert!(peer.restarts_seen <= 3, "replayed instances are not restarts: {peer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_peer_sending_ten_mib_messages_is_dropped() {
    let mut big = frame(b"connectivity", true, false);
    big.extend(frame(&vec![0u8; 10 * 1024 * 1024], false, false));
    let big = std::sync::Arc::new(big);
    forged_peer(move |_| big.to_vec(), 3).await;
}
