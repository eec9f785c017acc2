//! Failing loudly, with the real binaries: a panic in the SQLite writer thread or in a
//! dispatcher, a database file deleted while the service runs, a corrupt database. Each ends
//! the process with a distinct non-zero exit code (so systemd restarts it and the operator can
//! tell why), health says NOT_SERVING before it goes, and no write is acknowledged into a
//! database nobody will find again.
//!
//! The panics are provoked through `WIXPRINT_FAILPOINTS` (a test hook nothing sets in
//! production).

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use wixprint_tests::harness::{Stack, StackOptions, bin_path, free_port};
use wixprint_tests::webhook::{distinct_order, fixture};

const EXIT_SOFTWARE: i32 = 70;
const EXIT_CORRUPT: i32 = 65;
const EXIT_DB_LOST: i32 = 74;
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// Polls `service`'s health on `addr` until it says NOT_SERVING (or the port closes first).
async fn saw_not_serving(addr: &str, service: &str) -> bool {
    let deadline = tokio::time::Instant::now() + EXIT_WITHIN;
    while tokio::time::Instant::now() < deadline {
        let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await
        else {
            return false;
        };
        let mut health = HealthClient::new(channel);
        match health.check(HealthCheckRequest { service: service.into() }).await {
            Ok(r) if r.get_ref().status == ServingStatus::NotServing as i32 => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_database_writer_makes_ingest_not_serving_and_exit_70() {
    let mut stack =
        Stack::start(StackOptions::default().ingest_env("WIXPRINT_FAILPOINTS", "webhook-write-panic")).await.unwrap();
    let (status, body) =
        stack.post_webhook(stack.keys.sign_event(&fixture("order_created.pickup.json"))).await.unwrap();
    assert_ne!(status, 200, "a webhook whose transaction panicked was acknowledged: {body}");
    assert!(
        saw_not_serving(&stack.ingest_grpc, "wixprint.ingest.v1.IngestAdmin").await,
        "health never said NOT_SERVING\n{}",
        stack.logs()
    );
    let exit = stack.ingest.wait_exit(EXIT_WITHIN).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert_eq!(exit.code(), Some(EXIT_SOFTWARE), "{}", stack.logs());
    assert!(stack.ingest.log().contains("failpoint webhook-write-panic"), "{}", stack.ingest.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_dispatcher_stops_wix_print_with_exit_70_and_a_restart_prints() {
    let mut stack =
        Stack::start(StackOptions::default().print_env("WIXPRINT_FAILPOINTS", "dispatcher-panic")).await.unwrap();
    stack.send_event(&fixture("order_created.pickup.json")).await.unwrap();
    assert!(
        saw_not_serving(&stack.print_grpc, "wixprint.print.v1.PrintService").await,
        "health never said NOT_SERVING\n{}",
        stack.logs()
    );
    let exit = stack.print.wait_exit(EXIT_WITHIN).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert_eq!(exit.code(), Some(EXIT_SOFTWARE), "{}", stack.logs());
    // What systemd does next: a restart (without the fault) prints the order.
    stack.print.set_env("WIXPRINT_FAILPOINTS", "");
    stack.print.start().await.unwrap();
    stack.sim.wait_for_tickets(3, Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_while_running_is_never_written_to_and_ends_the_service_with_exit_74() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    stack.sim.wait_for_tickets(3, Duration::from_secs(30)).await.unwrap();

    std::fs::remove_file(stack.dir.path().join("ingest.db")).unwrap();
    // The very next webhook is not acknowledged: it would live only in an unlinked file.
    // (An error means the service is already gone: nothing was acknowledged either.)
    if let Ok((status, body)) =
        stack.post_webhook(stack.keys.sign_event(&distinct_order("order_created.pickup.json", 2))).await
    {
        assert_ne!(status, 200, "acknowledged into a deleted database: {body}");
    }
    let exit = stack.ingest.wait_exit(EXIT_WITHIN).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert_eq!(exit.code(), Some(EXIT_DB_LOST), "{}", stack.logs());
    assert!(stack.ingest.log().contains("was deleted while the service ran"), "{}", stack.ingest.log());

    // wix-print notices on its own, idle, within seconds.
    std::fs::remove_file(stack.dir.path().join("print.db")).unwrap();
    let exit = stack.print.wait_exit(EXIT_WITHIN).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert_eq!(exit.code(), Some(EXIT_DB_LOST), "{}", stack.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_stops_the_service_with_exit_65_naming_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("print.db");
    std::fs::write(&db, b"this is not a database, it is a shopping list: rice, fish sauce, limes\n".repeat(100))
        .unwrap();
    let out = tokio::process::Command::new(bin_path("wix-print"))
        .env_clear()
        .env("PRINT_DB_PATH", &db)
        .env("PRINTER_URL", "tcp://127.0.0.1:9")
        .env("PRINT_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("PRINT_PUB_ADDR", format!("tcp://127.0.0.1:{}", free_port()))
        .env("INGEST_PUB_ADDR", format!("tcp://127.0.0.1:{}", free_port()))
        .output();
    let out = tokio::time::timeout(EXIT_WITHIN, out).await.expect("wix-print hung on a corrupt database").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{stderr}");
    assert!(stderr.contains(&db.display().to_string()) && stderr.contains("move the file"), "{stderr}");
}

/// print.db lost and rebuilt: a later event of an order it had printed does not bring a whole
/// receipt set back to the kitchen. An order placed within `PRINT_LATE_WINDOW_MINS` prints
/// again with the KOPIE banner (it may not have reached paper); an older one is recorded only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_print_db_reprints_only_recent_orders_and_with_the_banner() {
    use wixprint_tests::webhook::order_mut;
    let mut stack = Stack::start(StackOptions::default().ingest_env("INGEST_REORDER_WINDOW_MS", "200")).await.unwrap();
    let t = Duration::from_secs(30);
    // Order 10033 was placed in 2025; order 20007 ten minutes ago.
    let placed = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
    let recent = distinct_order("order_created.pickup.json", 7);
    let id = recent["entityId"].as_str().unwrap().to_owned();
    let mut recent = recent;
    order_mut(&mut recent).unwrap()["createdDate"] = serde_json::json!(placed.to_string());
    let mut recent_paid = fixture("order_payment_status_updated.pickup.json");
    recent_paid["id"] = serde_json::json!(format!("{:08x}-0000-4000-8000-00000000aaaa", rand::random::<u32>()));
    recent_paid["entityId"] = serde_json::json!(id);
    let o = order_mut(&mut recent_paid).unwrap();
    o["id"] = serde_json::json!(id);
    o["number"] = serde_json::json!("20007");
    o["createdDate"] = serde_json::json!(placed.to_string());

    stack.send_event(&fixture("order_created.pickup.json")).await.unwrap();
    stack.send_event(&recent).await.unwrap();
    stack.sim.wait_for_tickets(6, t).await.unwrap();
    stack.wait_quiet(t).await.unwrap();

    stack.print.terminate().await.unwrap();
    for f in ["print.db", "print.db-wal", "print.db-shm"] {
        let _ = std::fs::remove_file(stack.dir.path().join(f));
    }
    stack.print.start().await.unwrap();
    stack.send_event(&fixture("order_payment_status_updated.pickup.json")).await.unwrap();
    stack.send_event(&recent_paid).await.unwrap();
    let tickets = stack.sim.wait_for_tickets(9, t).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    stack.wait_quiet(t).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let all = stack.sim.tickets();
    let after: Vec<&str> = all[6..].iter().map(|t| t.text.as_str()).collect();
    assert_eq!(after.len(), 3, "only the recent order prints again:\n{after:#?}");
    assert!(after.iter().all(|t| t.contains("20007") && t.contains("KOPIE")), "{after:#?}");
    assert_eq!(tickets.len(), 9);
    let mut admin = stack.print_admin().await.unwrap();
    let st = admin.get_status(wixprint_shared::proto::print::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.orders, 2, "the old order is recorded, not printed");
}
