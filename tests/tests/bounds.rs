//! Bounds at wix-print's front door: `SubmitOrder` refuses what the webhook would not have let
//! through (no items, quantity 0, oversized text, amounts a receipt cannot print, times whose
//! milliseconds overflow) with `InvalidArgument` naming the field, and stores nothing.
//!
//! A 1.3-million-character note is *refused* (the note limit is 2000 characters, see README
//! "Validation limits"); the renderer's own caps (receipt unit tests) bound whatever got in
//! before the limit existed.

use std::time::{Duration, Instant};

use wixprint_shared::proto::order::{Fulfillment, LineItem, Order, PriceSummary};
use wixprint_shared::proto::print::{GetStatusRequest, SubmitOrderRequest};
use wixprint_tests::harness::{Stack, StackOptions};

const T: Duration = Duration::from_secs(30);

fn order(id: &str) -> Order {
    Order {
        id: id.into(),
        number: "7001".into(),
        created_at: Some(prost_types::Timestamp { seconds: 1_758_738_240, nanos: 0 }),
        line_items: vec![LineItem {
            name: "Pad Thai".into(),
            quantity: 2,
            unit_price: "19.50".into(),
            line_total: "39.00".into(),
            ..Default::default()
        }],
        price_summary: Some(PriceSummary { total: "39.00".into(), currency: "CHF".into(), ..Default::default() }),
        status: wixprint_shared::proto::order::OrderStatus::Approved as i32,
        catalog_app_ids: vec!["9a5d83fd-8570-482e-81ab-cfa88942ee60".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_order_refuses_what_the_webhook_refuses_and_stores_nothing() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let mut client = stack.print_submit().await.unwrap();
    let with = |f: &dyn Fn(&mut Order)| {
        let mut o = order("bad-1");
        f(&mut o);
        o
    };
    let huge_note = "Bitte klingeln. ".repeat(81_250);
    let cases: Vec<(&str, Order)> = vec![
        ("order.line_items", with(&|o| o.line_items.clear())),
        ("order.line_items[0].quantity", with(&|o| o.line_items[0].quantity = 0)),
        ("order.line_items[0].quantity", with(&|o| o.line_items[0].quantity = 1_000_000)),
        ("order.line_items[0].unit_price", with(&|o| o.line_items[0].unit_price = "12,50 €".into())),
        ("order.line_items[0].line_total", with(&|o| o.line_items[0].line_total = "9".repeat(60))),
        ("order.line_items[0].name", with(&|o| o.line_items[0].name = "x".repeat(5000))),
        ("order.buyer_note", with(&|o| o.buyer_note = huge_note.clone())),
        ("order.created_at", with(&|o| o.created_at = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }))),
        (
            "order.fulfillment.promised_from",
            with(&|o| {
                o.fulfillment = Some(Fulfillment {
                    promised_from: Some(prost_types::Timestamp { seconds: i64::MIN, nanos: 0 }),
                    ..Default::default()
                })
            }),
        ),
        ("order.line_items", with(&|o| o.line_items = vec![o.line_items[0].clone(); 1001])),
    ];
    for (field, bad) in cases {
        let started = Instant::now();
        let err = client
            .submit_order(SubmitOrderRequest { order: Some(bad), version: 1, previous_version: 0, received_at: None })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().starts_with(field), "{field}: {}", err.message());
        assert!(started.elapsed() < Duration::from_secs(5), "{field}: refusing took {:?}", started.elapsed());
    }
    let mut admin = stack.print_admin().await.unwrap();
    let st = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.order_versions), (0, 0), "a refused order was stored");
    assert!(st.jobs.iter().all(|c| c.count == 0), "{:?}", st.jobs);

    // The same order, valid, prints; its longest allowed note prints in full.
    let mut good = order("good-1");
    good.buyer_note = "ohne Koriander ".repeat(100).trim().to_owned();
    client
        .submit_order(SubmitOrderRequest { order: Some(good), version: 1, previous_version: 0, received_at: None })
        .await
        .unwrap();
    let tickets = stack.sim.wait_for_tickets(3, T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert!(tickets.iter().any(|t| t.text.contains("7001") && t.text.contains("Pad Thai")));
    assert!(tickets.iter().all(|t| !t.text.contains("truncated")));
}

/// The webhook applies the same rules: an order wix-print could not print is refused with a
/// 400 naming the field (Wix sees it), never acknowledged and then dropped downstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_order_that_cannot_print_is_refused_with_400_and_stores_nothing() {
    use wixprint_tests::webhook::{fixture, order_mut};
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let mut zero = fixture("order_created.pickup.json");
    order_mut(&mut zero).unwrap()["lineItems"][0]["quantity"] = serde_json::json!(0);
    let mut missing = fixture("order_created.pickup.json");
    order_mut(&mut missing).unwrap()["lineItems"][0].as_object_mut().unwrap().remove("quantity");
    let mut empty = fixture("order_created.pickup.json");
    order_mut(&mut empty).unwrap()["lineItems"] = serde_json::json!([]);
    for (event, field) in [
        (&zero, "line_items[0].quantity"),
        (&missing, "line_items[0].quantity"),
        (&empty, "order.line_items: an order needs at least one line item"),
    ] {
        let (status, body) = stack.post_webhook(stack.keys.sign_event(event)).await.unwrap();
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(field), "{field}: {body}");
    }
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(wixprint_shared::proto::ingest::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.webhook_events, st.outbox_pending), (0, 0, 0), "{st:#?}");
    // The same order with its quantity prints.
    stack.send_event(&fixture("order_created.pickup.json")).await.unwrap();
    stack.sim.wait_for_tickets(3, T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
}
