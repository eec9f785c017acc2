//! An order's life after its first ticket, black-box with the real binaries: changes print a
//! change slip, a cancellation prints a STORNO slip (or cancels what has not printed yet),
//! payment and fulfilment print nothing, and orders from other Wix apps never print.

use std::time::Duration;

use serde_json::json;
use wixprint_shared::proto::print::{JobState, ListJobsRequest};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::sim::{Mode, Ticket};
use wixprint_tests::webhook::{fixture, order_mut};

const T: Duration = Duration::from_secs(30);

async fn tickets(stack: &Stack, n: usize) -> Vec<Ticket> {
    match stack.sim.wait_for_tickets(n, T).await {
        Ok(t) => t,
        Err(e) => panic!("{e:#}\n{}", stack.logs()),
    }
}

async fn settle(stack: &Stack, expected_tickets: usize) {
    stack.wait_quiet(T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let all = stack.sim.tickets();
    assert_eq!(all.len(), expected_tickets, "{:#?}", all.iter().map(|t| &t.text).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_updated_paid_canceled_prints_set_change_slip_and_storno_once() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let events = [
        "order_created.pickup.json",
        "order_updated.pickup.json",
        "order_payment_status_updated.pickup.json",
        "order_canceled.pickup.json",
    ];
    stack.send_event(&fixture(events[0])).await.unwrap();
    tickets(&stack, 3).await;
    settle(&stack, 3).await;

    stack.send_event(&fixture(events[1])).await.unwrap();
    let t = tickets(&stack, 4).await;
    settle(&stack, 4).await;
    let slip = &t[3].text;
    assert!(slip.contains("ÄNDERUNG") && slip.contains("Som Tam 3 -> 4"), "change slip:\n{slip}");
    assert!(!slip.contains("Nam Tok"), "the change slip lists only what changed:\n{slip}");

    stack.send_event(&fixture(events[2])).await.unwrap();
    settle(&stack, 4).await;

    stack.send_event(&fixture(events[3])).await.unwrap();
    let t = tickets(&stack, 5).await;
    settle(&stack, 5).await;
    assert!(t[4].text.contains("STORNO") && t[4].text.contains("10033"), "storno slip:\n{}", t[4].text);

    // Wix redelivers everything: nothing more prints.
    for e in events {
        stack.send_event(&fixture(e)).await.unwrap();
    }
    settle(&stack, 5).await;
    let jobs = stack.jobs().await.unwrap();
    let kinds: Vec<_> = jobs.iter().map(|j| j.kind.as_str()).collect();
    assert_eq!(kinds, ["ticket", "ticket", "ticket", "change", "storno"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_canceled_before_printing_prints_nothing() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    stack.sim.set_mode(Mode::Offline);
    stack.send_event(&fixture("order_created.pickup.json")).await.unwrap();
    stack.send_event(&fixture("order_canceled.pickup.json")).await.unwrap();
    let mut admin = stack.print_admin().await.unwrap();
    wait_until(T, "tickets cancelled", || {
        let mut admin = admin.clone();
        async move {
            let req = ListJobsRequest { state: JobState::Cancelled as i32, ..Default::default() };
            Ok(admin.list_jobs(req).await?.into_inner().jobs.len() == 3)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    stack.sim.set_mode(Mode::Online);
    // Another order prints; the cancelled one never does.
    stack.send_event(&fixture("order_approved.delivery.json")).await.unwrap();
    let t = tickets(&stack, 3).await;
    settle(&stack, 3).await;
    assert!(t.iter().all(|t| !t.text.contains("10033")), "a cancelled order printed");
    let jobs = admin.list_jobs(ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    assert_eq!(jobs.iter().filter(|j| j.kind == "storno").count(), 0, "nothing was on paper: no STORNO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_from_other_wix_apps_do_not_print() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let mut store_order = fixture("order_created.pickup.json");
    for item in order_mut(&mut store_order).unwrap()["lineItems"].as_array_mut().unwrap() {
        item["catalogReference"]["appId"] = json!("215238eb-22a5-4c36-9e7b-e7c08025e04e");
    }
    let body = stack.send_event(&store_order).await.unwrap();
    assert!(body.contains("applied"), "{body}");
    stack.send_event(&fixture("order_approved.delivery.json")).await.unwrap();
    tickets(&stack, 3).await;
    settle(&stack, 3).await;
    let mut print = stack.print_admin().await.unwrap();
    let st = print.get_status(wixprint_shared::proto::print::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.orders, 2, "the filtered order is still recorded");
    let jobs = stack.jobs().await.unwrap();
    assert!(jobs.iter().all(|j| j.order_number != "10033"));
}
