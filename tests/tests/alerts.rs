//! E-mail alerts (issue 12), from the outside, against a real SMTP server (aiosmtpd driven by
//! `tests/smtp/server.py`, installed by `scripts/install-deps.sh`): what arrives (From, To,
//! subject and both parts, umlauts in German and English), the durable outbox across a
//! SIGKILL, a server that never answers (timeout, breaker, printing not delayed), wrong
//! password and TLS mismatch, throttling and digests.
//!
//! Every wait polls `ListAlerts` or the server's message directory with a deadline.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use wixprint_shared::proto::events::{AlertRecord, ListAlertsRequest, ListBreakersRequest, SendTestAlertRequest};
use wixprint_shared::proto::ingest::GetStatusRequest as IngestStatus;
use wixprint_shared::proto::print::GetStatusRequest as PrintStatus;
use wixprint_tests::harness::{Stack, StackOptions, free_port, wait_until};
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(60);
const TO: &str = "chef@example.com, Küchenchefin <kueche@example.org>";

/// The SMTP controller as a child process.
struct Smtp {
    child: tokio::process::Child,
}

impl Smtp {
    /// Starts `server.py` on `port` with `args`; returns once it said it is ready.
    async fn start(port: u16, dir: &Path, args: &[&str]) -> Smtp {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp/server.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--dir", &dir.display().to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 tests/smtp/server.py starts (scripts/install-deps.sh installs aiosmtpd)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP server says it is ready")
            .unwrap()
            .expect("a ready line");
        let ready: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ready["ready"].as_u64(), Some(u64::from(port)), "{line}");
        Smtp { child }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// Every message received in `dir`, in the order they arrived.
fn messages(dir: &Path) -> Vec<Value> {
    let mut out: Vec<Value> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name().to_string_lossy().ends_with(".json")
                        && !e.file_name().to_string_lossy().starts_with('.')
                })
                .map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|m: &Value| m["received_ms"].as_i64());
    out
}

async fn wait_messages(dir: &Path, n: usize, stack: &Stack) -> Vec<Value> {
    wait_until(T, &format!("{n} mail(s)"), || async { Ok(messages(dir).len() >= n) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}\n{}", messages(dir), stack.logs()));
    messages(dir)
}

macro_rules! list_alerts {
    ($client:expr) => {
        $client
            .clone()
            .list_alerts(ListAlertsRequest { limit: 0, state: String::new() })
            .await
            .map(|r| r.into_inner().alerts)
    };
}

/// Polls `ListAlerts` of `client` until `pred` holds for the list.
macro_rules! wait_alerts {
    ($stack:expr, $client:expr, $what:expr, $pred:expr) => {{
        let client = $client.clone();
        let pred = $pred;
        let mut last: Vec<AlertRecord> = Vec::new();
        let deadline = Instant::now() + T;
        loop {
            if let Ok(list) = list_alerts!(client) {
                if pred(&list) {
                    break list;
                }
                last = list;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {}: {last:#?}\n{}", $what, $stack.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

fn by_id(list: &[AlertRecord], id: i64) -> Option<&AlertRecord> {
    list.iter().find(|a| a.id == id)
}

fn common(opts: StackOptions, which: &str, url: &str) -> StackOptions {
    let set = |o: StackOptions, k: &str, v: &str| if which == "print" { o.print_env(k, v) } else { o.ingest_env(k, v) };
    let o = set(opts, "ALERT_SMTP_URL", url);
    let o = set(o, "ALERT_FROM", "Bestelldrucker <drucker@example.com>");
    let o = set(o, "ALERT_TO", TO);
    let o = set(o, "ALERT_RESTAURANT_NAME", "Gasthof Zur Mühle");
    let o = set(o, "ALERT_DIGEST_SECS", "0");
    let o = set(o, "ALERT_RETRY_FIRST_MS", "100");
    set(o, "ALERT_RETRY_MAX_MS", "400")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_alert_arrives_once_with_both_parts_in_german_and_english() {
    let mail = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, mail.path(), &[]).await;
    let url = format!("smtp://127.0.0.1:{port}");
    let opts = common(common(StackOptions::default(), "print", &url), "ingest", &url)
        .print_env("ALERT_LANGUAGE", "de")
        .ingest_env("ALERT_LANGUAGE", "en")
        .print_env("PRINT_TIME_ZONE", "Europe/Zurich");
    let stack = Stack::start(opts).await.expect("stack starts");
    let mut print = stack.print_admin().await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();

    let status = print.get_status(PrintStatus {}).await.unwrap().into_inner();
    assert_eq!(status.alerts, format!("on: smtp://127.0.0.1:{port} (to chef@example.com, kueche@example.org)"));
    let status = ingest.get_status(IngestStatus {}).await.unwrap().into_inner();
    assert!(status.alerts.starts_with("on: smtp://"), "{}", status.alerts);

    let de = print
        .send_test_alert(SendTestAlertRequest { kind: String::new(), subject: "Küche".into() })
        .await
        .unwrap()
        .into_inner()
        .id;
    let list = wait_alerts!(stack, print, "the German test alert sent", |l: &Vec<AlertRecord>| by_id(l, de)
        .is_some_and(|a| a.state == "sent"));
    let row = by_id(&list, de).unwrap();
    assert_eq!((row.kind.as_str(), row.event.as_str(), row.attempts, row.mail_id), ("test", "test", 1, de));
    let got = wait_messages(mail.path(), 1, &stack).await;
    assert_eq!(got.len(), 1, "exactly one mail: {got:#?}");
    let m = &got[0];
    assert_eq!(m["subject"], "[TEST INFO] Testmeldung Küche — Gasthof Zur Mühle", "{m:#}");
    assert!(m["raw_subject"].as_str().unwrap().contains("=?utf-8?"), "the subject is encoded: {m:#}");
    assert_eq!(m["from"], "Bestelldrucker <drucker@example.com>");
    assert_eq!(m["to"], serde_json::json!(["chef@example.com", "kueche@example.org"]));
    assert_eq!(m["rcpt_tos"], serde_json::json!(["chef@example.com", "kueche@example.org"]));
    assert_eq!(m["content_type"], "multipart/alternative");
    let text = m["text"].as_str().unwrap();
    let html = m["html"].as_str().unwrap();
    for want in [
        "Testmeldung Küche",
        "Was Sie tun sollten",
        "funktionieren",
        "Gasthof Zur Mühle",
        "wix-print",
        "(Europe/Zurich)",
    ] {
        assert!(text.contains(want), "text lacks {want:?}:\n{text}");
    }
    assert!(html.contains("Was Sie tun sollten") && html.contains("Gasthof Zur Mühle"), "{html}");

    let en = ingest
        .send_test_alert(SendTestAlertRequest { kind: String::new(), subject: "Bäckerei".into() })
        .await
        .unwrap()
        .into_inner()
        .id;
    wait_alerts!(stack, ingest, "the English test alert sent", |l: &Vec<AlertRecord>| by_id(l, en)
        .is_some_and(|a| a.state == "sent"));
    let got = wait_messages(mail.path(), 2, &stack).await;
    assert_eq!(got.len(), 2, "one mail more: {got:#?}");
    let m = &got[1];
    assert_eq!(m["subject"], "[TEST INFO] Test alert Bäckerei — Gasthof Zur Mühle", "{m:#}");
    let text = m["text"].as_str().unwrap();
    for want in ["What you should do", "alerts work", "Bäckerei", "wix-ingest"] {
        assert!(text.contains(want), "text lacks {want:?}:\n{text}");
    }
    assert!(m["html"].as_str().unwrap().contains("Bäckerei"));

    // Bad requests name their field.
    let e =
        print.send_test_alert(SendTestAlertRequest { kind: "nope".into(), subject: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("kind:"), "{}", e.message());
    let e = print.list_alerts(ListAlertsRequest { limit: 1001, state: String::new() }).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().starts_with("limit:"), "{e:?}");
    let e = ingest.list_alerts(ListAlertsRequest { limit: 0, state: "lost".into() }).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().starts_with("state:"), "{e:?}");
    smtp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_raised_while_smtp_is_down_survives_a_sigkill_and_arrives_once() {
    let mail = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let opts = common(StackOptions::default(), "print", &url).print_env("ALERT_SMTP_BREAKER_OPEN_MS", "300");
    let mut stack = Stack::start(opts).await.expect("stack starts");
    let mut print = stack.print_admin().await.unwrap();

    let id = print.send_test_alert(SendTestAlertRequest::default()).await.unwrap().into_inner().id;
    let list =
        wait_alerts!(stack, print, "a failed attempt", |l: &Vec<AlertRecord>| by_id(l, id)
            .is_some_and(|a| a.attempts >= 1 && a.state == "pending" && !a.last_error.is_empty()));
    println!("while SMTP is down: {:?}", by_id(&list, id).unwrap().last_error);

    stack.print.kill().await;
    stack.print.start().await.unwrap();
    let print = stack.print_admin().await.unwrap();
    let smtp = Smtp::start(port, mail.path(), &[]).await;
    wait_alerts!(stack, print, "the alert sent after the restart", |l: &Vec<AlertRecord>| by_id(l, id)
        .is_some_and(|a| a.state == "sent"));
    // A marker of another kind: once it is here, the loop has passed the first row again.
    let marker = print
        .clone()
        .send_test_alert(SendTestAlertRequest { kind: "paper_low".into(), subject: "marker".into() })
        .await
        .unwrap()
        .into_inner()
        .id;
    wait_alerts!(stack, print, "the marker sent", |l: &Vec<AlertRecord>| by_id(l, marker)
        .is_some_and(|a| a.state == "sent"));
    let got = wait_messages(mail.path(), 2, &stack).await;
    let subjects: Vec<&str> = got.iter().map(|m| m["subject"].as_str().unwrap()).collect();
    assert_eq!(got.len(), 2, "the alert once, then the marker: {subjects:#?}");
    assert!(subjects[0].contains("Testmeldung"), "{subjects:?}");
    assert!(subjects[1].contains("marker"), "{subjects:?}");
    smtp.stop().await;
}

/// Webhook → first new ticket on the printer simulator.
async fn latency(stack: &Stack, n: u64) -> Duration {
    let before = stack.sim.tickets().len();
    let t0 = Instant::now();
    stack.send_event(&distinct_order("order_created.pickup.json", n)).await.unwrap();
    wait_until(T, "a ticket", || async { Ok(stack.sim.tickets().len() > before) }).await.unwrap();
    let took = t0.elapsed();
    // Let the rest of the order's tickets print before the next measurement.
    let settle = stack.sim.tickets().len();
    let _ = wait_until(Duration::from_millis(300), "", || async { Ok(stack.sim.tickets().len() > settle) }).await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_that_never_answers_times_out_opens_the_breaker_and_does_not_delay_printing() {
    let mail = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let opts = common(StackOptions::default(), "print", &url)
        .print_env("ALERT_SEND_TIMEOUT_MS", "700")
        .print_env("ALERT_SMTP_BREAKER_OPEN_MS", "3000")
        .print_env("PRINT_STATUS_POLL_MS", "50");
    let stack = Stack::start(opts).await.expect("stack starts");
    let print = stack.print_admin().await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();

    // wix-ingest has no ALERT_* here: off, and SendTestAlert says which key.
    assert_eq!(ingest.get_status(IngestStatus {}).await.unwrap().into_inner().alerts, "off");
    let e = ingest.send_test_alert(SendTestAlertRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("ALERT_SMTP_URL"), "{}", e.message());

    let mut baseline = Vec::new();
    for n in 0..5 {
        baseline.push(latency(&stack, n).await);
    }
    let hang = Smtp::start(port, mail.path(), &["--hang"]).await;
    let sent_at = Instant::now();
    let id = print.clone().send_test_alert(SendTestAlertRequest::default()).await.unwrap().into_inner().id;
    let mut during = Vec::new();
    for n in 5..10 {
        during.push(latency(&stack, n).await);
    }
    let hanging_for = sent_at.elapsed();
    let list = wait_alerts!(stack, print, "the timeout in ListAlerts", |l: &Vec<AlertRecord>| by_id(l, id)
        .is_some_and(|a| a.last_error.contains("timed out")));
    let row = by_id(&list, id).unwrap().clone();
    let mut admin = print.clone();
    wait_until(T, "the smtp breaker open", || {
        let mut admin = admin.clone();
        async move {
            let b = admin.list_breakers(ListBreakersRequest {}).await?.into_inner().breakers;
            Ok(b.iter().any(|b| b.name == "smtp" && b.state == "open"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let ms = |v: &[Duration]| v.iter().map(|d| d.as_millis()).collect::<Vec<_>>();
    let max = |v: &[Duration]| v.iter().max().copied().unwrap();
    println!(
        "webhook → first ticket, ms: baseline {:?}, while SMTP sends hung ({} ms of orders) {:?}; alert: {} attempts, {:?}",
        ms(&baseline),
        hanging_for.as_millis(),
        ms(&during),
        row.attempts,
        row.last_error
    );
    assert!(
        max(&during) <= max(&baseline) * 3 + Duration::from_millis(300),
        "printing was delayed while SMTP hung: baseline {:?} vs {:?}",
        ms(&baseline),
        ms(&during)
    );
    assert!(stack.print.log().contains("alert mail not sent"), "{}", stack.print.log());
    assert_eq!(row.state, "pending");

    // The server recovers: the alert is delivered (the next mail is the breaker's probe).
    hang.stop().await;
    let smtp = Smtp::start(port, mail.path(), &[]).await;
    wait_alerts!(stack, print, "the alert sent after recovery", |l: &Vec<AlertRecord>| by_id(l, id)
        .is_some_and(|a| a.state == "sent"));
    let got = wait_messages(mail.path(), 1, &stack).await;
    assert_eq!(got.len(), 1, "{got:#?}");
    wait_until(T, "the smtp breaker closed", || {
        let mut a = admin.clone();
        async move {
            Ok(a.list_breakers(ListBreakersRequest {})
                .await?
                .into_inner()
                .breakers
                .iter()
                .any(|b| b.name == "smtp" && b.state == "closed"))
        }
    })
    .await
    .unwrap();
    let _ = admin.list_breakers(ListBreakersRequest {}).await.unwrap();
    smtp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_a_tls_mismatch_are_clear_errors_and_nothing_crashes() {
    let mail = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("smtp-password");
    std::fs::write(&pw, "wrong-password\n").unwrap();
    let (auth_port, plain_port) = (free_port(), free_port());
    let auth = Smtp::start(auth_port, &mail.path().join("auth"), &["--auth", "alerts:right-password"]).await;
    let plain = Smtp::start(plain_port, &mail.path().join("plain"), &[]).await;
    let opts = common(StackOptions::default(), "print", &format!("smtp://alerts@127.0.0.1:{auth_port}"))
        .print_env("ALERT_SMTP_PASSWORD_FILE", pw.display().to_string());
    // smtps:// (implicit TLS) against a plain SMTP server.
    let opts = common(opts, "ingest", &format!("smtps://127.0.0.1:{plain_port}"));
    let stack = Stack::start(opts).await.expect("stack starts");
    let mut print = stack.print_admin().await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();
    let status = print.get_status(PrintStatus {}).await.unwrap().into_inner().alerts;
    assert!(!status.contains("wrong-password") && status.contains("smtp://127.0.0.1"), "{status}");

    let a = print.send_test_alert(SendTestAlertRequest::default()).await.unwrap().into_inner().id;
    let b = ingest.send_test_alert(SendTestAlertRequest::default()).await.unwrap().into_inner().id;
    let pl = wait_alerts!(stack, print, "the auth error", |l: &Vec<AlertRecord>| by_id(l, a)
        .is_some_and(|r| !r.last_error.is_empty()));
    let il = wait_alerts!(stack, ingest, "the TLS error", |l: &Vec<AlertRecord>| by_id(l, b)
        .is_some_and(|r| !r.last_error.is_empty()));
    let (pe, ie) = (by_id(&pl, a).unwrap().last_error.clone(), by_id(&il, b).unwrap().last_error.clone());
    println!("wrong password: {pe}\nTLS mismatch: {ie}");
    assert!(pe.contains("535") || pe.to_lowercase().contains("authentication"), "{pe}");
    assert!(
        ie.to_lowercase().contains("tls") || ie.to_lowercase().contains("corrupt") || ie.contains("InvalidContentType"),
        "{ie}"
    );
    assert!(stack.print.log().contains(&pe), "the log says it too:\n{}", stack.print.log());
    assert!(stack.ingest.log().contains("alert mail not sent"), "{}", stack.ingest.log());
    // Still up, answering, nothing arrived.
    print.get_status(PrintStatus {}).await.unwrap();
    ingest.get_status(IngestStatus {}).await.unwrap();
    assert!(messages(&mail.path().join("auth")).is_empty() && messages(&mail.path().join("plain")).is_empty());
    auth.stop().await;
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_counts_suppressed_alerts_and_a_digest_is_one_mail() {
    let mail = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, mail.path(), &[]).await;
    let url = format!("smtp://127.0.0.1:{port}");
    let opts = common(common(StackOptions::default(), "print", &url), "ingest", &url)
        .print_env("ALERT_LANGUAGE", "en")
        .print_env("ALERT_THROTTLE_SECS", "3")
        .ingest_env("ALERT_LANGUAGE", "en")
        .ingest_env("ALERT_DIGEST_SECS", "2");
    let stack = Stack::start(opts).await.expect("stack starts");
    let print = stack.print_admin().await.unwrap();
    let ingest = stack.ingest_admin().await.unwrap();

    // Throttling (wix-print): three test alerts within the window → one mail.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(print.clone().send_test_alert(SendTestAlertRequest::default()).await.unwrap().into_inner().id);
        wait_alerts!(stack, print, "decided", |l: &Vec<AlertRecord>| by_id(l, *ids.last().unwrap())
            .is_some_and(|a| a.state != "pending"));
    }
    let list = list_alerts!(print).unwrap();
    let states: Vec<&str> = ids.iter().map(|id| by_id(&list, *id).unwrap().state.as_str()).collect();
    assert_eq!(states, ["sent", "suppressed", "suppressed"], "{list:#?}");
    assert_eq!(messages(mail.path()).len(), 1);
    // After the window the next mail of the kind reports the two.
    let sent_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(sent_at.elapsed()) + Duration::from_millis(300)).await;
    let next = print.clone().send_test_alert(SendTestAlertRequest::default()).await.unwrap().into_inner().id;
    wait_alerts!(stack, print, "the next mail", |l: &Vec<AlertRecord>| by_id(l, next)
        .is_some_and(|a| a.state == "sent"));
    let got = wait_messages(mail.path(), 2, &stack).await;
    let text = got[1]["text"].as_str().unwrap();
    assert!(text.contains("2 more times since"), "{text}");
    println!("after the window: {}", text.lines().find(|l| l.contains("more times")).unwrap());

    // A digest (wix-ingest): two kinds within ALERT_DIGEST_SECS → one mail.
    let k1 = ingest
        .clone()
        .send_test_alert(SendTestAlertRequest { kind: "printer_not_ready".into(), subject: "Küche".into() })
        .await
        .unwrap()
        .into_inner()
        .id;
    let k2 = ingest
        .clone()
        .send_test_alert(SendTestAlertRequest { kind: "internet_offline".into(), subject: String::new() })
        .await
        .unwrap()
        .into_inner()
        .id;
    let list = wait_alerts!(stack, ingest, "the digest sent", |l: &Vec<AlertRecord>| [k1, k2]
        .iter()
        .all(|id| by_id(l, *id).is_some_and(|a| a.state == "sent")));
    assert_eq!(by_id(&list, k2).unwrap().mail_id, k1, "one mail carried both: {list:#?}");
    let got = wait_messages(mail.path(), 3, &stack).await;
    assert_eq!(got.len(), 3, "{got:#?}");
    let subject = got[2]["subject"].as_str().unwrap();
    assert!(subject.starts_with("[TEST CRITICAL] 2 alerts: "), "{subject}");
    let text = got[2]["text"].as_str().unwrap();
    assert!(text.contains("Printer Küche is not ready") && text.contains("The internet is unreachable"), "{text}");
    smtp.stop().await;
}

/// The acceptance, through the real trigger: the kitchen printer out of paper longer
/// than the (shortened) threshold → exactly one mail naming the reason; paper back → one
/// "resolved" mail; a second outage within the hour (the shortened throttle window) → no new
/// mail; the next mail of the kind, after the window, counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printer_out_of_paper_mails_once_then_resolved_and_a_second_outage_is_counted_not_mailed() {
    use wixprint_tests::sim::Mode;
    let mail = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, mail.path(), &[]).await;
    let url = format!("smtp://127.0.0.1:{port}");
    let throttle = Duration::from_secs(6);
    let opts = common(StackOptions::default(), "print", &url)
        .print_env("ALERT_LANGUAGE", "en")
        .print_env("ALERT_PRINTER_NOT_READY_SECS", "1")
        .print_env("ALERT_THROTTLE_SECS", throttle.as_secs().to_string())
        .print_env("PRINT_STATUS_POLL_MS", "100");
    let stack = Stack::start(opts).await.expect("stack starts");
    let print = stack.print_admin().await.unwrap();
    let printer_mails = |dir: &Path| {
        messages(dir)
            .into_iter()
            .filter(|m| m["subject"].as_str().unwrap_or("").contains("Printer"))
            .collect::<Vec<_>>()
    };

    // Out of paper: after the threshold, one mail with the reason.
    stack.sim.set_mode(Mode::PaperOut);
    let first_raised = Instant::now();
    wait_until(T, "the not-ready mail", || async { Ok(!printer_mails(mail.path()).is_empty()) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}\n{}", messages(mail.path()), stack.logs()));
    let got = printer_mails(mail.path());
    let subject = got[0]["subject"].as_str().unwrap();
    assert!(subject.starts_with("[CRITICAL] Printer front is not ready"), "{subject}");
    let text = got[0]["text"].as_str().unwrap();
    assert!(text.contains("reason: paper_out"), "the reason is in the mail: {text}");
    assert!(first_raised.elapsed() >= Duration::from_secs(1), "not before the threshold");

    // Paper back: one "resolved" mail.
    stack.sim.set_mode(Mode::Online);
    wait_until(T, "the resolved mail", || async { Ok(printer_mails(mail.path()).len() >= 2) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}\n{}", messages(mail.path()), stack.logs()));
    let resolved_at = Instant::now();
    let got = printer_mails(mail.path());
    assert!(got[1]["subject"].as_str().unwrap().starts_with("[OK] Resolved: Printer front is not ready"), "{got:#?}");

    // A second outage within the window: recorded as suppressed, not mailed.
    stack.sim.set_mode(Mode::CoverOpen);
    let list =
        wait_alerts!(stack, print, "the second outage suppressed", |l: &Vec<AlertRecord>| l
            .iter()
            .any(|a| a.kind == "printer_not_ready" && a.event == "raise" && a.state == "suppressed"));
    let second = list.iter().find(|a| a.kind == "printer_not_ready" && a.state == "suppressed").unwrap();
    assert!(second.facts.iter().any(|f| f == "reason=cover_open"), "{second:?}");
    stack.sim.set_mode(Mode::Online);
    wait_alerts!(stack, print, "its resolve suppressed too", |l: &Vec<AlertRecord>| l
        .iter()
        .any(|a| a.kind == "printer_not_ready" && a.event == "resolve" && a.state == "suppressed"));
    assert_eq!(printer_mails(mail.path()).len(), 2, "no mail for the second outage");

    // After the window (counted from the last mail of the kind), the next outage's mail says
    // what was not mailed.
    let wait = throttle.saturating_sub(resolved_at.elapsed()) + Duration::from_millis(500);
    tokio::time::sleep(wait).await;
    stack.sim.set_mode(Mode::PaperOut);
    wait_until(T, "the third outage's mail", || async { Ok(printer_mails(mail.path()).len() >= 3) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}\n{}", messages(mail.path()), stack.logs()));
    let got = printer_mails(mail.path());
    let text = got[2]["text"].as_str().unwrap();
    assert!(text.contains("more times since"), "the suppressed outage is counted: {text}");
    stack.sim.set_mode(Mode::Online);
    smtp.stop().await;
}

/// wix-ingest's internet alert: raised while the internet is away (the mail cannot leave
/// then: here the SMTP server is on loopback, so it does), resolved when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internet_away_longer_than_its_threshold_is_mailed_and_its_return_resolves_it() {
    let mail = tempfile::tempdir().unwrap();
    let port = free_port();
    let smtp = Smtp::start(port, mail.path(), &[]).await;
    let url = format!("smtp://127.0.0.1:{port}");
    let opts = common(StackOptions::default(), "ingest", &url)
        .ingest_env("ALERT_LANGUAGE", "en")
        .ingest_env("ALERT_INTERNET_OFFLINE_SECS", "1");
    let mut stack = Stack::start(opts).await.expect("stack starts");
    let internet_mails = |dir: &Path| {
        messages(dir)
            .into_iter()
            .filter(|m| m["subject"].as_str().unwrap_or("").contains("nternet"))
            .collect::<Vec<_>>()
    };
    stack.cut_internet().await;
    wait_until(T, "the internet mail", || async { Ok(!internet_mails(mail.path()).is_empty()) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}\n{}", messages(mail.path()), stack.logs()));
    let got = internet_mails(mail.path());
    assert!(got[0]["subject"].as_str().unwrap().starts_with("[CRITICAL]"), "{got:#?}");
    stack.restore_internet().await.unwrap();
    wait_until(T, "the resolved mail", || async { Ok(internet_mails(mail.path()).len() >= 2) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{:#?}\n{}", messages(mail.path()), stack.logs()));
    let got = internet_mails(mail.path());
    assert!(got[1]["subject"].as_str().unwrap().starts_with("[OK] Resolved:"), "{got:#?}");
    assert_eq!(got.len(), 2, "once each: {got:#?}");
    smtp.stop().await;
}
