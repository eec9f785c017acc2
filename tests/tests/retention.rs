//! Retention with the real binaries under a wall clock the test moves (libfaketime): forty
//! days after an order, its webhook events, versions, jobs and personal data are gone from
//! both databases, what is still to do (an undelivered outbox row) is kept and delivered, and a
//! late Wix event of a pruned order prints nothing.

use std::time::Duration;

use wixprint_shared::proto::ingest::{GetOrderRequest, GetStatusRequest};
use wixprint_tests::harness::{Stack, StackOptions, Step, wait_until};
use wixprint_tests::webhook::{distinct_order, fixture};

const T: Duration = Duration::from_secs(30);
const DAYS_40: Duration = Duration::from_secs(40 * 86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_retention_old_orders_are_gone_pending_work_stays_and_late_events_print_nothing() {
    let opts = StackOptions::default()
        .fake_clock("wix-ingest")
        .fake_clock("wix-print")
        .ingest_env("INGEST_REORDER_WINDOW_MS", "200")
        .ingest_env("INGEST_RETENTION_DAYS", "30")
        .print_env("PRINT_RETENTION_DAYS", "30");
    let mut stack = Stack::start(opts).await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();
    let status = |mut c: wixprint_shared::proto::ingest::ingest_admin_client::IngestAdminClient<_>| async move {
        c.get_status(GetStatusRequest {}).await.unwrap().into_inner()
    };

    // Two orders print; a third waits in the outbox while wix-print is down.
    stack.send_event(&fixture("order_created.pickup.json")).await.unwrap();
    stack.send_event(&distinct_order("order_created.pickup.json", 2)).await.unwrap();
    stack.sim.wait_for_tickets(6, T).await.unwrap();
    stack.wait_quiet(T).await.unwrap();
    stack.print.terminate().await.unwrap();
    let pending = distinct_order("order_created.pickup.json", 3);
    let pending_id = pending["entityId"].as_str().unwrap().to_owned();
    stack.send_event(&pending).await.unwrap();
    assert_eq!(status(ingest.clone()).await.outbox_pending, 1);

    // Forty days later, wix-ingest restarts (still without wix-print) and prunes at once.
    stack.ingest.terminate().await.unwrap();
    stack.step_clock(DAYS_40, Step::Forward).unwrap();
    stack.ingest.start().await.unwrap();
    ingest = stack.ingest_admin().await.unwrap();
    let pruned = wait_until(T, "ingest pruned", || {
        let c = ingest.clone();
        async move { Ok(status(c).await.orders == 1) }
    })
    .await;
    if let Err(e) = pruned {
        panic!("{e:#}: {:#?}\n{}", status(ingest.clone()).await, stack.logs());
    }
    let st = status(ingest.clone()).await;
    assert_eq!((st.webhook_events, st.outbox_pending, st.outbox_delivered), (0, 1, 0), "{st:#?}");
    let gone = ingest.get_order(GetOrderRequest { id: "6d6062d8-0000-4000-8000-0000000000a1".into() }).await;
    assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound, "names and phones are gone with the order");
    assert!(ingest.get_order(GetOrderRequest { id: pending_id }).await.is_ok(), "an undelivered order is kept");

    // wix-print returns: it prunes its own old jobs and versions, and prints what waited.
    stack.print.start().await.unwrap();
    stack.sim.wait_for_tickets(9, T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    stack.wait_quiet(T).await.unwrap();
    let mut print = stack.print_admin().await.unwrap();
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(jobs.len(), 3, "only the order printed after the step keeps its jobs: {jobs:#?}");
    assert!(jobs.iter().all(|j| j.order_number == "20003"), "{jobs:#?}");
    let ps = print.get_status(wixprint_shared::proto::print::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(ps.order_versions, 1, "old versions (and the personal data in them) are gone");

    // A late Wix event of the first order (its records pruned on both sides) prints nothing.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap() + DAYS_40;
    let late = stack.keys.sign_event_at(&fixture("order_payment_status_updated.pickup.json"), now.as_secs());
    let (code, body) = stack.post_webhook(late).await.unwrap();
    assert_eq!(code, 200, "{body}");
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 9, "a late event of a pruned order printed again");
}
