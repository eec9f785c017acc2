//! Black-box tests of the whole path with the real binaries: a signed Wix webhook in,
//! confirmed tickets out of the printer simulator. Each test reads like the promise it checks.

use std::time::Duration;

use serde_json::json;
use wixprint_shared::proto::ingest::{GetOrderRequest, GetStatusRequest as IngestStatusRequest};
use wixprint_shared::proto::print::{GetJobRequest, GetStatusRequest, JobState, ReceiptType};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::sim::{Mode, Ticket};
use wixprint_tests::webhook::{KeyPair, approved_after, fixture};

const T: Duration = Duration::from_secs(30);
const PICKUP: &str = "order_created.pickup.json";

async fn stack(opts: StackOptions) -> Stack {
    Stack::start(opts).await.expect("stack starts")
}

async fn tickets(stack: &Stack, n: usize) -> Vec<Ticket> {
    match stack.sim.wait_for_tickets(n, T).await {
        Ok(t) => t,
        Err(e) => panic!("{e:#}\n{}", stack.logs()),
    }
}

fn assert_well_formed(t: &Ticket, width: usize) {
    assert!(t.complete, "ticket #{} was not cut:\n{}", t.seq, t.text);
    assert_eq!(t.code_table, Some(19), "ticket #{} did not select PC858", t.seq);
    assert_eq!(t.unknown_commands, 0, "ticket #{} has unknown commands", t.seq);
    for l in &t.lines {
        assert!(l.columns() <= width, "ticket #{} line wider than {width}: {:?}", t.seq, l.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_pickup_order_prints_kitchen_driver_and_customer_tickets() {
    let stack = stack(StackOptions::default()).await;
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    let t = tickets(&stack, 3).await;
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 3);
    for ticket in &t {
        assert_well_formed(ticket, 48);
        assert!(ticket.text.contains("10033"), "order number missing:\n{}", ticket.text);
        assert!(!ticket.text.contains("KOPIE"), "first print carries a reprint banner:\n{}", ticket.text);
    }
    let (kitchen, driver, customer) = (&t[0].text, &t[1].text, &t[2].text);
    for word in ["Nam Tok", "Ente", "Som Tam"] {
        assert!(kitchen.contains(word), "kitchen ticket lacks {word}:\n{kitchen}");
    }
    for price in ["26.00", "54.00", "78.00", "132.00", "CHF"] {
        assert!(!kitchen.contains(price), "kitchen ticket shows a price ({price}):\n{kitchen}");
    }
    assert!(customer.contains("132.00") && customer.contains("CHF"), "customer ticket:\n{customer}");
    assert!(!customer.contains("EUR"), "customer ticket shows a foreign currency:\n{customer}");
    assert!(driver.contains("+41790000000"), "driver slip lacks the phone:\n{driver}");

    let jobs = stack.jobs().await.unwrap();
    assert_eq!(jobs.len(), 3);
    let types: Vec<_> = jobs.iter().map(|j| ReceiptType::try_from(j.receipt_type).unwrap()).collect();
    assert_eq!(types, vec![ReceiptType::Kitchen, ReceiptType::Driver, ReceiptType::Customer]);
    for j in &jobs {
        assert_eq!(JobState::try_from(j.state).unwrap(), JobState::Printed);
        assert_eq!(j.attempts, 1);
        assert!(!j.reprint);
    }
    // The admin preview is the same text the printer received.
    let mut admin = stack.print_admin().await.unwrap();
    let job = admin.get_job(GetJobRequest { id: jobs[0].id }).await.unwrap().into_inner();
    let trimmed = |s: &str| s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
    assert_eq!(trimmed(&job.text), trimmed(kitchen));
    assert!(job.transitions.iter().map(|t| t.to_state.as_str()).eq([
        "queued",
        "sending",
        "awaiting_confirm",
        "printed"
    ]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_and_store_nothing() {
    let stack = stack(StackOptions::default()).await;
    let good = stack.keys.sign_event(&fixture(PICKUP));

    // Forged: the payload changed after signing (signature no longer matches).
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut sig: Vec<char> = parts[2].chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    parts[2] = sig.into_iter().collect();
    let forged = parts.join(".");
    let other_key = KeyPair::generate().sign_event(&fixture(PICKUP));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expired = stack.keys.sign_claims(&json!({"data": "{}", "iat": now - 7200, "exp": now - 3600}));
    let plain_json = fixture(PICKUP).to_string();
    let truncated = good[..good.len() / 2].to_owned();

    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("forged signature", forged.into_bytes(), &[401]),
        ("signed with another key", other_key.into_bytes(), &[401]),
        ("expired token", expired.into_bytes(), &[401]),
        ("plain JSON", plain_json.into_bytes(), &[400]),
        ("truncated token", truncated.into_bytes(), &[400, 401]),
        ("invalid UTF-8", vec![0xFF, 0xFE, 0x00, 0x41], &[400]),
        ("empty body", Vec::new(), &[400]),
        ("2 MiB body", vec![b'a'; 2 << 20], &[413]),
    ];
    for (what, body, expected) in cases {
        let (status, text) = stack.post_webhook(body).await.unwrap();
        assert!(expected.contains(&status), "{what}: answered {status} ({text}), expected {expected:?}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: error body is not JSON: {text}"));
        assert!(!v["error"].as_str().unwrap_or("").is_empty(), "{what}: no reason given: {text}");
    }

    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(IngestStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.webhook_events, st.outbox_pending), (0, 0, 0), "bad input was stored");

    // The pipeline still works, and nothing from the refused requests printed.
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    tickets(&stack, 3).await;
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_and_approved_events_of_one_order_print_one_set() {
    let stack = stack(StackOptions::default()).await;
    let created = fixture(PICKUP);
    let token = stack.keys.sign_event(&created);
    let poster = stack.poster();
    let sends = (0..5).map(|_| {
        let (poster, token) = (poster.clone(), token.clone());
        async move { poster.post(token).await }
    });
    for r in futures_join(sends).await {
        let (status, body) = r.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    stack.send_event(&approved_after(&created)).await.unwrap();
    tickets(&stack, 3).await;
    stack.wait_quiet(T).await.unwrap();

    assert_eq!(stack.sim.tickets().len(), 3, "{:#?}", stack.sim.tickets().iter().map(|t| &t.text).collect::<Vec<_>>());
    let mut ingest = stack.ingest_admin().await.unwrap();
    let order = ingest
        .get_order(GetOrderRequest { id: "6d6062d8-0000-4000-8000-0000000000a1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.outbox.len(), 2, "created + approved are two versions");
    assert_eq!(order.events.len(), 2, "five deliveries of one event are one event");
    let mut print = stack.print_admin().await.unwrap();
    let st = print.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.order_versions), (1, 2));
    assert_eq!(stack.jobs().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_acknowledged_while_print_is_down_prints_once_it_starts() {
    let mut stack = stack(StackOptions::default().print_stopped()).await;
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(IngestStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.outbox_pending), (1, 1));
    assert!(stack.sim.tickets().is_empty());

    // Let the forwarder fail at least once against the missing wix-print.
    wait_until(T, "a failed delivery attempt", || {
        let mut ingest = ingest.clone();
        async move { Ok(!ingest.get_status(IngestStatusRequest {}).await?.into_inner().outbox_last_error.is_empty()) }
    })
    .await
    .unwrap();
    // wix-ingest crashes and comes back before wix-print does: the outbox row survives.
    stack.ingest.kill().await;
    stack.ingest.start().await.unwrap();
    stack.print.start().await.unwrap();
    tickets(&stack, 3).await;
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_503_when_the_order_cannot_be_committed_and_200_once_it_can() {
    let stack = stack(StackOptions::default().ingest_env("INGEST_DB_BUSY_TIMEOUT_MS", "200")).await;
    // Another process holds the write lock (a stuck backup, a full disk's worth of trouble).
    let db_path = stack.dir.path().join("ingest.db");
    let locker = rusqlite::Connection::open(&db_path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let token = stack.keys.sign_event(&fixture(PICKUP));
    let (status, body) = stack.post_webhook(token.clone()).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("could not store"), "{body}");
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(IngestStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.webhook_events), (0, 0), "a 503 must leave nothing behind");
    // Wix retries the same delivery: now it is stored and prints once.
    let (status, body) = stack.post_webhook(token).await.unwrap();
    assert_eq!(status, 200, "{body}");
    tickets(&stack, 3).await;
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_readback_confirmation_prints_for_printers_without_process_id() {
    let stack = stack(StackOptions::default().print_env("PRINT_CONFIRM_MODE", "status")).await;
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    tickets(&stack, 3).await;
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 3);
    assert_eq!(stack.sim.confirmations_sent(), 0, "status mode must not rely on GS ( H");
    assert!(stack.jobs().await.unwrap().iter().all(|j| j.state == JobState::Printed as i32 && j.attempts == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_unconfirmed_when_print_is_killed_reprints_with_banner_and_nothing_else_twice() {
    // An Epson (GS ( H) that has not confirmed yet; auto mode would take it for a clone.
    let mut stack = stack(
        StackOptions::default()
            .print_env("PRINT_CONFIRM_TIMEOUT_MS", "120000")
            .print_env("PRINT_CONFIRM_MODE", "process_id"),
    )
    .await;
    stack.sim.set_mode(Mode::WithholdConfirm);
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    tickets(&stack, 1).await;
    let mut admin = stack.print_admin().await.unwrap();
    wait_until(T, "kitchen job awaiting confirmation", || {
        let mut admin = admin.clone();
        async move {
            let jobs = admin
                .list_jobs(wixprint_shared::proto::print::ListJobsRequest {
                    state: JobState::AwaitingConfirm as i32,
                    ..Default::default()
                })
                .await?;
            Ok(jobs.into_inner().jobs.len() == 1)
        }
    })
    .await
    .unwrap();

    stack.print.kill().await;
    stack.sim.set_mode(Mode::Online);
    stack.print.start().await.unwrap();
    let t = tickets(&stack, 4).await;
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 4);
    assert!(!t[0].text.contains("KOPIE"));
    assert!(t[1].text.contains("KOPIE / REPRINT"), "the reprint lacks its banner:\n{}", t[1].text);
    assert!(
        t[1].text.contains("Nam Tok") && !t[1].text.contains("132.00"),
        "the reprint is not the kitchen ticket:\n{}",
        t[1].text
    );
    for other in &t[2..] {
        assert!(!other.text.contains("KOPIE"), "a ticket without doubt carries the banner:\n{}", other.text);
    }
    admin = stack.print_admin().await.unwrap();
    let jobs =
        admin.list_jobs(wixprint_shared::proto::print::ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    assert!(jobs.iter().all(|j| j.state == JobState::Printed as i32));
    assert_eq!(jobs.iter().map(|j| j.reprint).collect::<Vec<_>>(), vec![true, false, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printer_offline_or_unreachable_pauses_the_queue_without_using_attempts() {
    for mode in [Mode::Offline, Mode::Unreachable, Mode::PaperOut, Mode::CoverOpen, Mode::Silent] {
        let stack = stack(StackOptions::default()).await;
        stack.sim.set_mode(mode);
        stack.send_event(&fixture(PICKUP)).await.unwrap();
        let mut admin = stack.print_admin().await.unwrap();
        let expected = match mode {
            Mode::PaperOut => "paper_out",
            Mode::CoverOpen => "cover_open",
            _ => "offline",
        };
        wait_until(T, "printer reported not ready", || {
            let mut admin = admin.clone();
            async move {
                let st = admin.get_status(GetStatusRequest {}).await?.into_inner();
                Ok(st.printers[0].state == expected && st.order_versions == 1)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{mode:?}: {e}\n{}", stack.logs()));
        // Several status polls later, still nothing was attempted.
        let checks = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner().printers[0].checks;
        wait_until(T, "five more status polls", || {
            let mut admin = admin.clone();
            async move { Ok(admin.get_status(GetStatusRequest {}).await?.into_inner().printers[0].checks >= checks + 5) }
        })
        .await
        .unwrap();
        let jobs = stack.jobs().await.unwrap();
        assert_eq!(jobs.len(), 3);
        for j in &jobs {
            assert_eq!((j.state, j.attempts), (JobState::Queued as i32, 0), "{mode:?}: waiting used an attempt: {j:?}");
        }
        assert!(stack.sim.tickets().is_empty());

        stack.sim.set_mode(Mode::Online);
        tickets(&stack, 3).await;
        stack.wait_quiet(T).await.unwrap();
        let jobs = stack.jobs().await.unwrap();
        assert!(jobs.iter().all(|j| j.state == JobState::Printed as i32 && j.attempts == 1), "{mode:?}: {jobs:?}");
        let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.printers[0].state, "online");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_within_five_seconds_and_loses_nothing() {
    // An Epson (GS ( H) that has not confirmed yet; auto mode would take it for a clone.
    let mut stack = stack(
        StackOptions::default()
            .print_env("PRINT_CONFIRM_TIMEOUT_MS", "120000")
            .print_env("PRINT_CONFIRM_MODE", "process_id"),
    )
    .await;
    stack.sim.set_mode(Mode::WithholdConfirm);
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    tickets(&stack, 1).await;
    let (took, status) = stack.print.terminate().await.unwrap();
    assert!(took < Duration::from_secs(5), "wix-print took {took:?} to stop");
    assert!(status.success(), "wix-print exit status {status:?}");
    let (took, status) = stack.ingest.terminate().await.unwrap();
    assert!(took < Duration::from_secs(5) && status.success(), "wix-ingest: {took:?} {status:?}");

    stack.sim.set_mode(Mode::Online);
    stack.print.start().await.unwrap();
    stack.ingest.start().await.unwrap();
    let t = tickets(&stack, 4).await;
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 4);
    assert!(t[1].text.contains("KOPIE"), "the unconfirmed ticket must come back with the banner");
    assert_eq!(t.iter().filter(|x| x.text.contains("KOPIE")).count(), 1);
}

/// Runs futures concurrently (a tiny join_all without another crate).
async fn futures_join<F: std::future::Future + Send + 'static>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ports_serve_health_and_reflection_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let stack = stack(StackOptions::default()).await;
    for (addr, service) in
        [(&stack.print_grpc, "wixprint.print.v1.PrintAdmin"), (&stack.ingest_grpc, "wixprint.ingest.v1.IngestAdmin")]
    {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let st =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(st.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

        let mut c1 = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
        let req = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut stream = c1.server_reflection_info(tokio_stream::once(req)).await.unwrap().into_inner();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("v1 reflection did not list services");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == service) && names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");

        let mut ca = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
        let req = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                service.into(),
            )),
        };
        let mut stream = ca.server_reflection_info(tokio_stream::once(req)).await.unwrap().into_inner();
        let resp = stream.message().await.unwrap().unwrap().message_response;
        assert!(
            matches!(resp, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
            "v1alpha reflection cannot describe {service}: {resp:?}"
        );
    }
}

/// The operator's tool: grpcurl 1.8.6 (reflection v1alpha only) lists, describes and calls the
/// admin services exactly as the README shows. `scripts/install-deps.sh` installs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_calls_both_admin_services() {
    let stack = stack(StackOptions::default()).await;
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    tickets(&stack, 3).await;
    stack.wait_quiet(T).await.unwrap();
    let grpcurl = |args: &[&str]| {
        // The admin token of the service called (README: `-H 'authorization: Bearer …'`).
        let service = if args.contains(&stack.ingest_grpc.as_str()) { "ingest" } else { "print" };
        let out = std::process::Command::new("grpcurl")
            .args(stack.grpcurl_auth(service))
            .args(args)
            .output()
            .expect("grpcurl is not on PATH: run scripts/install-deps.sh");
        assert!(out.status.success(), "grpcurl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let list = grpcurl(&["-plaintext", &stack.print_grpc, "list"]);
    for s in ["wixprint.print.v1.PrintAdmin", "wixprint.print.v1.PrintService", "grpc.health.v1.Health"] {
        assert!(list.contains(s), "{list}");
    }
    let status = grpcurl(&["-plaintext", &stack.print_grpc, "wixprint.print.v1.PrintAdmin/GetStatus"]);
    assert!(status.contains("\"lastPrinted\"") && status.contains("JOB_STATE_PRINTED"), "{status}");
    let jobs = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"state":"JOB_STATE_PRINTED"}"#,
        &stack.print_grpc,
        "wixprint.print.v1.PrintAdmin/ListJobs",
    ]);
    assert_eq!(jobs.matches("\"orderNumber\": \"10033\"").count(), 3, "{jobs}");
    let orders = grpcurl(&["-plaintext", &stack.ingest_grpc, "wixprint.ingest.v1.IngestAdmin/ListOrders"]);
    assert!(orders.contains("10033") && orders.contains("\"delivered\": true"), "{orders}");
    let describe = grpcurl(&["-plaintext", &stack.ingest_grpc, "describe", "wixprint.order.v1.Order"]);
    assert!(describe.contains("price_summary"), "{describe}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_mid_ticket_reprints_that_ticket_with_banner() {
    let stack = stack(StackOptions::default()).await;
    stack.sim.set_mode(Mode::DropMidTicket);
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    let t = tickets(&stack, 4).await;
    stack.wait_quiet(T).await.unwrap();
    let all = stack.sim.tickets();
    assert_eq!(all.len(), 4, "{:#?}", all.iter().map(|t| &t.text).collect::<Vec<_>>());
    assert!(!t[0].complete, "the first ticket was cut off by the simulator");
    // The reprint waits out a short retry backoff, so other tickets may print before it.
    let reprints: Vec<_> = t[1..].iter().filter(|x| x.text.contains("KOPIE / REPRINT")).collect();
    assert_eq!(reprints.len(), 1);
    assert!(reprints[0].complete && reprints[0].text.contains("Nam Tok") && !reprints[0].text.contains("132.00"));
    assert!(t[1..].iter().all(|x| x.complete));
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(
        jobs.iter().map(|j| (j.attempts, j.reprint)).collect::<Vec<_>>(),
        vec![(2, true), (1, false), (1, false)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_ticket_as_it_prints_without_printing() {
    use wixprint_shared::proto::print::{PreviewReceiptRequest, preview_receipt_request::Source};
    let stack = stack(StackOptions::default()).await;
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    let t = tickets(&stack, 3).await;
    stack.wait_quiet(T).await.unwrap();
    let mut admin = stack.print_admin().await.unwrap();
    let id = "6d6062d8-0000-4000-8000-0000000000a1".to_owned();
    let req = |source, receipt_type: ReceiptType, width| PreviewReceiptRequest {
        source: Some(source),
        receipt_type: receipt_type as i32,
        printer: String::new(),
        width,
    };
    let kitchen =
        admin.preview_receipt(req(Source::OrderId(id.clone()), ReceiptType::Kitchen, 0)).await.unwrap().into_inner();
    let trimmed = |s: &str| s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n");
    assert_eq!(trimmed(&kitchen.text), trimmed(&t[0].text), "the preview is the printed ticket");
    assert_eq!(kitchen.width, 48);
    let narrow =
        admin.preview_receipt(req(Source::OrderId(id.clone()), ReceiptType::Customer, 32)).await.unwrap().into_inner();
    assert!(narrow.text.lines().all(|l| l.chars().count() <= 32) && narrow.text.contains("132.00"), "{}", narrow.text);
    let err = admin.preview_receipt(req(Source::OrderId("nope".into()), ReceiptType::Kitchen, 0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = admin.preview_receipt(req(Source::OrderId(id), ReceiptType::Unspecified, 0)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(stack.sim.tickets().len(), 3, "a preview never prints");
}
