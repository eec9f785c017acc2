//! gRPC authentication and the other defences of issue 10 §3, black-box with the real binaries:
//! bearer tokens (one per service, SubmitOrder its own), health and reflection open, tokens
//! required off loopback (exit 78 naming the key), `WIX_INSTANCE_ID`, bounded refusal logs,
//! idempotent `SubmitLocalOrder`, and order versions that survive a rebuilt ingest.db.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tonic::Code;
use wixprint_shared::proto::ingest::ingest_admin_client::IngestAdminClient;
use wixprint_shared::proto::ingest::{self as iapi, SubmitLocalOrderRequest};
use wixprint_shared::proto::order::{LineItem, Order};
use wixprint_shared::proto::print::print_admin_client::PrintAdminClient;
use wixprint_shared::proto::print::print_service_client::PrintServiceClient;
use wixprint_shared::proto::print::{self as papi, SubmitOrderRequest};
use wixprint_tests::harness::{Stack, StackOptions, bin_path, client_auth, wait_until};
use wixprint_tests::sim::Ticket;
use wixprint_tests::webhook::{KeyPair, fixture};

const T: Duration = Duration::from_secs(30);
const CREATED: &str = "order_created.pickup.json";
const UPDATED: &str = "order_updated.pickup.json";
/// The app instance `KeyPair::sign_event` puts in L2.
const FIXTURE_INSTANCE: &str = "00000000-0000-4000-8000-00000000beef";

async fn stack(opts: StackOptions) -> Stack {
    Stack::start(opts).await.unwrap_or_else(|e| panic!("stack did not start: {e:#}"))
}

async fn tickets(stack: &Stack, n: usize) -> Vec<Ticket> {
    stack.sim.wait_for_tickets(n, T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()))
}

async fn settle(stack: &Stack, expected_tickets: usize) {
    stack.wait_quiet(T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let all = stack.sim.tickets();
    assert_eq!(all.len(), expected_tickets, "{:#?}", all.iter().map(|t| &t.text).collect::<Vec<_>>());
}

fn forged_order() -> Order {
    Order {
        id: "forged-0001".into(),
        number: "66666".into(),
        status: wixprint_shared::proto::order::OrderStatus::Approved as i32,
        line_items: vec![LineItem { name: "FORGED".into(), quantity: 50, ..Default::default() }],
        ..Default::default()
    }
}

fn grpcurl(args: &[&str]) -> std::process::Output {
    Command::new("grpcurl").args(args).output().expect("grpcurl is not on PATH: run scripts/install-deps.sh")
}

/// Unsigned, wrong-token and cross-token calls are UNAUTHENTICATED and change nothing; health
/// and reflection answer without a token (grpcurl `list` works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_wants_its_own_token_and_health_and_reflection_stay_open() {
    let stack = stack(StackOptions::default()).await;
    let tokens = stack.tokens.clone().expect("the harness runs with tokens by default");
    let wrong = "wrong-token-0123456789abcdef";
    let print_ch = Stack::channel(&stack.print_grpc).await.unwrap();
    let ingest_ch = Stack::channel(&stack.ingest_grpc).await.unwrap();

    // SubmitOrder: no token, a wrong one, and the admin tokens: all refused.
    for token in [None, Some(wrong), Some(tokens.print_admin.as_str()), Some(tokens.ingest_admin.as_str())] {
        let mut c = PrintServiceClient::with_interceptor(print_ch.clone(), client_auth(token));
        let req = SubmitOrderRequest {
            order: Some(forged_order()),
            version: 1_000_000,
            previous_version: 0,
            received_at: None,
        };
        let err = c.submit_order(req).await.expect_err("a SubmitOrder without the submit token was accepted");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    // PrintAdmin and IngestAdmin: no token, a wrong one, the submit token, the other admin's.
    for token in [None, Some(wrong), Some(tokens.submit.as_str()), Some(tokens.ingest_admin.as_str())] {
        let mut c = PrintAdminClient::with_interceptor(print_ch.clone(), client_auth(token));
        let err = c.get_status(papi::GetStatusRequest {}).await.expect_err("PrintAdmin answered without its token");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    for token in [None, Some(wrong), Some(tokens.submit.as_str()), Some(tokens.print_admin.as_str())] {
        let mut c = IngestAdminClient::with_interceptor(ingest_ch.clone(), client_auth(token));
        let err = c
            .get_order(iapi::GetOrderRequest { id: "6d6062d8-0000-4000-8000-0000000000a1".into() })
            .await
            .expect_err("GetOrder answered without the admin token");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
        let err = c
            .submit_local_order(SubmitLocalOrderRequest { order: Some(forged_order()), ..Default::default() })
            .await
            .expect_err("SubmitLocalOrder accepted without the admin token");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    // Nothing changed.
    let st = stack.print_admin().await.unwrap().get_status(papi::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.order_versions), (0, 0), "a refused call stored an order");
    let ist = stack.ingest_admin().await.unwrap().get_status(iapi::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(ist.orders, 0, "a refused call stored an order");
    assert!(stack.sim.tickets().is_empty());

    // The right tokens work (SubmitOrder with the submit token).
    let mut submit = stack.print_submit().await.unwrap();
    let mut order = forged_order();
    order.line_items[0].name = "Pad Thai".into();
    order.line_items[0].quantity = 1;
    submit
        .submit_order(SubmitOrderRequest { order: Some(order), version: 1, previous_version: 0, received_at: None })
        .await
        .unwrap();

    // Health and reflection need no token.
    for (addr, service) in
        [(&stack.print_grpc, "wixprint.print.v1.PrintAdmin"), (&stack.ingest_grpc, "wixprint.ingest.v1.IngestAdmin")]
    {
        let ch = Stack::channel(addr).await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
        let st = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(st.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        let out = grpcurl(&["-plaintext", addr, "list"]);
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && list.contains(service), "grpcurl list: {list} {out:?}");
        // ... but a call to the admin service does.
        let method = format!("{service}/GetStatus");
        let out = grpcurl(&["-plaintext", addr, &method]);
        assert!(!out.status.success(), "grpcurl {method} without a token succeeded");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"), "{out:?}");
    }
}

/// wix-ingest with a wrong submit token delivers nothing (the row stays pending, the error
/// visible); with the right one the order prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_delivers_only_with_the_submit_token() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-submit-token-0123456789").unwrap();
    let mut stack =
        stack(StackOptions::default().ingest_env("PRINT_SUBMIT_TOKEN_FILE", wrong.display().to_string())).await;
    stack.send_event(&fixture(CREATED)).await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();
    wait_until(T, "the outbox to report the refusal", || {
        let mut ingest = ingest.clone();
        async move {
            let st = ingest.get_status(iapi::GetStatusRequest {}).await?.into_inner();
            Ok(st.outbox_pending == 1 && st.outbox_last_error.contains("wrong token"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert!(stack.sim.tickets().is_empty(), "an order delivered with the wrong token printed");
    let st = stack.print_admin().await.unwrap().get_status(papi::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.orders, 0);

    let right = stack.dir.path().join("print-submit.token").display().to_string();
    stack.ingest.set_env("PRINT_SUBMIT_TOKEN_FILE", right);
    stack.ingest.terminate().await.unwrap();
    stack.ingest.start().await.unwrap();
    tickets(&stack, 3).await;
    settle(&stack, 3).await;
    ingest = stack.ingest_admin().await.unwrap();
    assert_eq!(ingest.get_status(iapi::GetStatusRequest {}).await.unwrap().into_inner().outbox_pending, 0);
}

/// Runs `binary --check-config` (or without it) with only `env`; returns (exit code, stderr).
fn run_config(binary: &str, env: &[(&str, String)], check: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin_path(binary));
    cmd.env_clear().envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    if check {
        cmd.arg("--check-config");
    }
    let out = cmd.output().unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout)))
}

/// Off loopback, a service refuses to start without the tokens it needs (exit 78 naming the
/// key), and `--check-config` says the same; token files are trimmed, short ones refused, and
/// `%d/<name>` reads systemd's `$CREDENTIALS_DIRECTORY`. No port is bound: the configuration is
/// refused before any listener exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_without_tokens_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let token = |name: &str, text: &str| {
        std::fs::write(creds.join(name), text).unwrap();
        creds.join(name).display().to_string()
    };
    let admin = token("print-admin", "print-admin-0123456789abcdef\n");
    let submit = token("print-submit", "  print-submit-0123456789abcdef  \n");
    let short = token("short", "abc\n");
    let pem = dir.path().join("wix.pem");
    std::fs::write(&pem, &KeyPair::shared().public_pem).unwrap();

    let print = |extra: &[(&'static str, String)]| {
        let mut env =
            vec![("PRINTER_URL", "tcp://127.0.0.1:9".to_owned()), ("PRINT_GRPC_ADDR", "0.0.0.0:0".to_owned())];
        env.extend(extra.iter().cloned());
        env
    };
    for check in [true, false] {
        let (code, err) = run_config("wix-print", &print(&[]), check);
        assert_eq!(code, Some(78), "{err}");
        assert!(err.contains("PRINT_ADMIN_TOKEN_FILE") && err.contains("loopback"), "{err}");
    }
    let (code, err) = run_config("wix-print", &print(&[("PRINT_ADMIN_TOKEN_FILE", admin.clone())]), true);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("PRINT_SUBMIT_TOKEN_FILE"), "{err}");
    let (code, err) = run_config(
        "wix-print",
        &print(&[("PRINT_ADMIN_TOKEN_FILE", short.clone()), ("PRINT_SUBMIT_TOKEN_FILE", submit.clone())]),
        true,
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("PRINT_ADMIN_TOKEN_FILE") && err.contains("shorter than 16"), "{err}");
    assert!(!err.contains("abc\n") && !err.contains("print-submit-0123"), "a token was shown: {err}");
    let (code, err) = run_config(
        "wix-print",
        &print(&[("PRINT_ADMIN_TOKEN_FILE", submit.clone()), ("PRINT_SUBMIT_TOKEN_FILE", submit.clone())]),
        true,
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("PRINT_ADMIN_TOKEN_FILE") && err.contains("same token"), "{err}");
    // systemd LoadCredential=: `%d/<name>` with CREDENTIALS_DIRECTORY.
    let (code, out) = run_config(
        "wix-print",
        &print(&[
            ("PRINT_ADMIN_TOKEN_FILE", "%d/print-admin".into()),
            ("PRINT_SUBMIT_TOKEN_FILE", "%d/print-submit".into()),
            ("CREDENTIALS_DIRECTORY", creds.display().to_string()),
        ]),
        true,
    );
    assert_eq!(code, Some(0), "{out}");

    let ingest = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("WIX_WEBHOOK_PUBLIC_KEY_FILE", pem.display().to_string()),
            ("INGEST_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        env
    };
    let (code, err) = run_config("wix-ingest", &ingest(&[("INGEST_GRPC_ADDR", "0.0.0.0:0".into())]), true);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("INGEST_ADMIN_TOKEN_FILE"), "{err}");
    let (code, err) =
        run_config("wix-ingest", &ingest(&[("PRINT_SERVICE_URL", "http://192.0.2.7:50052".into())]), true);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("PRINT_SUBMIT_TOKEN_FILE") && err.contains("192.0.2.7"), "{err}");
    let (code, out) = run_config(
        "wix-ingest",
        &ingest(&[("PRINT_SERVICE_URL", "http://192.0.2.7:50052".into()), ("PRINT_SUBMIT_TOKEN_FILE", submit)]),
        true,
    );
    assert_eq!(code, Some(0), "{out}");
}

/// `WIX_INSTANCE_ID`: an event signed for another app instance is a 401 and stores nothing; one
/// of the listed instances is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_another_app_instance_are_refused_and_store_nothing() {
    let stack =
        stack(StackOptions::default().ingest_env("WIX_INSTANCE_ID", "11111111-0000-4000-8000-000000000001")).await;
    let (status, body) = stack.post_webhook(stack.keys.sign_event(&fixture(CREATED))).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("instance"), "{body}");
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(iapi::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.webhook_events, st.orders, st.outbox_pending), (0, 0, 0));

    let both = format!("11111111-0000-4000-8000-000000000001, {FIXTURE_INSTANCE}");
    let stack = self::stack(StackOptions::default().ingest_env("WIX_INSTANCE_ID", both)).await;
    stack.send_event(&fixture(CREATED)).await.unwrap();
    tickets(&stack, 3).await;
}

/// A flood of forged webhooks and wrong-token gRPC calls costs a bounded number of log lines,
/// and the log says that refusals are being suppressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_requests_does_not_flood_the_log() {
    let stack = stack(StackOptions::default()).await;
    let forger = KeyPair::generate();
    let poster = stack.poster();
    for i in 0..300 {
        let body = if i % 2 == 0 { forger.sign_event(&fixture(CREATED)) } else { format!("garbage.{i}.jwt") };
        let (status, _) = poster.post(body).await.unwrap();
        assert!(status == 401 || status == 400, "forged webhook got {status}");
    }
    let ch = Stack::channel(&stack.print_grpc).await.unwrap();
    let mut c = PrintServiceClient::with_interceptor(ch, client_auth(Some("wrong-token-0123456789abcdef")));
    for _ in 0..300 {
        let err = c
            .submit_order(SubmitOrderRequest {
                order: Some(forged_order()),
                version: 1,
                previous_version: 0,
                received_at: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    // A real event still gets through and is logged.
    stack.send_event(&fixture(CREATED)).await.unwrap();
    tickets(&stack, 3).await;

    let ingest_log = stack.ingest.log();
    let refused = ingest_log.lines().filter(|l| l.contains("webhook refused")).count();
    assert!((1..=10).contains(&refused), "{refused} refusal lines for 300 forged webhooks");
    assert!(ingest_log.contains("further refusals are suppressed"), "{ingest_log}");
    let print_log = stack.print.log();
    let refused = print_log.lines().filter(|l| l.contains("gRPC call refused")).count();
    assert!((1..=10).contains(&refused), "{refused} refusal lines for 300 forged calls");
    assert!(print_log.contains("further refusals are suppressed"), "{print_log}");
    assert!(!print_log.contains("wrong-token-0123456789abcdef"), "a presented token was logged");
}

/// A retried `SubmitLocalOrder` (same `client_request_id`) returns the same order and prints
/// nothing more; another id is another order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_local_order_is_one_order() {
    let stack = stack(StackOptions::default()).await;
    let mut ingest = stack.ingest_admin().await.unwrap();
    let order = Order {
        line_items: vec![LineItem { name: "Pad Thai".into(), quantity: 2, ..Default::default() }],
        ..Default::default()
    };
    let req = |id: &str| SubmitLocalOrderRequest { order: Some(order.clone()), client_request_id: id.into() };
    let first = ingest.submit_local_order(req("phone-7f3a")).await.unwrap().into_inner();
    tickets(&stack, 3).await;
    let retry = ingest.submit_local_order(req("phone-7f3a")).await.unwrap().into_inner();
    assert_eq!((&retry.id, &retry.number, retry.version), (&first.id, &first.number, first.version));
    settle(&stack, 3).await;
    let other = ingest.submit_local_order(req("phone-8b21")).await.unwrap().into_inner();
    assert_ne!(other.id, first.id);
    tickets(&stack, 6).await;
    settle(&stack, 6).await;
    let mut changed = req("phone-7f3a");
    changed.order.as_mut().unwrap().buyer_note = "a different order".into();
    let err = ingest.submit_local_order(changed).await.unwrap_err();
    assert!(err.code() == Code::AlreadyExists && err.message().contains("phone-7f3a"), "{err:?}");
    settle(&stack, 6).await;
    let err = ingest.submit_local_order(req("has spaces")).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("client_request_id"), "{err:?}");
}

/// ingest.db lost: the rebuilt wix-ingest numbers versions as before (from Wix's updatedDate
/// and sequence), so a redelivered old event prints nothing and a later change prints a change
/// slip, never a second receipt set, and is not dropped as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_ingest_db_keeps_the_meaning_of_versions() {
    let mut stack = stack(StackOptions::default()).await;
    stack.send_event(&fixture(CREATED)).await.unwrap();
    tickets(&stack, 3).await;
    settle(&stack, 3).await;

    stack.ingest.terminate().await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(stack.dir.path().join(format!("ingest.db{suffix}")));
    }
    stack.ingest.start().await.unwrap();
    // The rebuilt wix-ingest first hears of the order through its next event: it is not
    // version 1 (which wix-print already has, so it would be a duplicate and never print).
    stack.send_event(&fixture(UPDATED)).await.unwrap();
    let t = tickets(&stack, 4).await;
    settle(&stack, 4).await;
    assert!(t[3].text.contains("ÄNDERUNG") && t[3].text.contains("Som Tam 3 -> 4"), "change slip:\n{}", t[3].text);
    // Wix then redelivers the created event (a retry): older, nothing prints.
    let mut again = fixture(CREATED);
    again["id"] = json!("a0a0a0a0-0000-4000-8000-00000000a0a0");
    stack.send_event(&again).await.unwrap();
    settle(&stack, 4).await;
    let kinds: Vec<String> = stack.jobs().await.unwrap().into_iter().map(|j| j.kind).collect();
    assert_eq!(kinds, ["ticket", "ticket", "ticket", "change"]);
}
