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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_phone_orders_are_numbered_per_day_and_print_like_wix_orders() {
    use wixprint_shared::proto::ingest::{ListOrdersRequest, SubmitLocalOrderRequest};
    use wixprint_shared::proto::order::{
        Contact, Fulfillment, FulfillmentType, LineItem, Order, OrderSource, PriceSummary,
    };
    let stack = Stack::start(StackOptions::default().ingest_env("INGEST_TIME_ZONE", "Europe/Zurich")).await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();
    let order = Order {
        line_items: vec![LineItem {
            name: "Pad Thai\u{0}".into(),
            quantity: 2,
            unit_price: "19.50".into(),
            line_total: "39.00".into(),
            ..Default::default()
        }],
        fulfillment: Some(Fulfillment {
            r#type: FulfillmentType::Pickup as i32,
            contact: Some(Contact {
                first_name: "Anna".into(),
                phone: "+41 79 123 45 67".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        price_summary: Some(PriceSummary {
            subtotal: "39.00".into(),
            total: "39.00".into(),
            currency: "CHF".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let first = ingest
        .submit_local_order(SubmitLocalOrderRequest { order: Some(order.clone()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let second = ingest
        .submit_local_order(SubmitLocalOrderRequest { order: Some(order.clone()), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Zurich").unwrap())
        .strftime("%Y%m%d")
        .to_string();
    assert_eq!(first.number, format!("L-{today}-1"));
    assert_eq!(second.number, format!("L-{today}-2"));
    let t = tickets(&stack, 6).await;
    settle(&stack, 6).await;
    // Kitchen tickets go first across orders, so count rather than rely on positions.
    for n in [&first.number, &second.number] {
        assert_eq!(t.iter().filter(|t| t.text.contains(n.as_str())).count(), 3, "order {n}");
    }
    assert!(t.iter().all(|t| !t.text.contains('\u{0}')));
    assert!(t.iter().any(|t| t.text.contains("Pad Thai") && t.text.contains("39.00") && t.text.contains("CHF")));
    let orders = ingest.list_orders(ListOrdersRequest::default()).await.unwrap().into_inner().orders;
    assert!(orders.iter().all(|o| o.source == OrderSource::Local as i32), "{orders:?}");

    // Bad phone orders are refused with the field named, and change nothing.
    for (what, bad) in [
        ("no items", Order::default()),
        (
            "quantity 0",
            Order {
                line_items: vec![LineItem { name: "x".into(), quantity: 0, ..Default::default() }],
                ..Default::default()
            },
        ),
        (
            "absurd quantity",
            Order {
                line_items: vec![LineItem { name: "x".into(), quantity: 1_000_000, ..Default::default() }],
                ..Default::default()
            },
        ),
        (
            "bad money",
            Order {
                line_items: vec![LineItem {
                    name: "x".into(),
                    quantity: 1,
                    unit_price: "12,50 €".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ),
    ] {
        let err = ingest
            .submit_local_order(SubmitLocalOrderRequest { order: Some(bad), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains("line_items"), "{what}: {}", err.message());
    }
    settle(&stack, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_webhooks_get_clear_errors_or_bounded_tickets_never_control_bytes() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut ev = fixture("order_created.pickup.json");
        f(order_mut(&mut ev).unwrap());
        ev
    };
    let refused = [
        ("negative quantity", with(&|o| o["lineItems"][0]["quantity"] = json!(-3))),
        ("a million portions", with(&|o| o["lineItems"][0]["quantity"] = json!(1_000_000))),
        (
            "5000 line items",
            with(&|o| {
                let item = json!({"quantity": 1, "productName": {"original": "x"}});
                o["lineItems"] = json!(vec![item; 5000]);
            }),
        ),
    ];
    for (what, ev) in refused {
        let (status, body) = stack.post_webhook(stack.keys.sign_event(&ev)).await.unwrap();
        assert!(status == 400 || status == 413, "{what}: {status} {body}");
        assert!(body.contains("error"), "{what}: {body}");
    }
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(wixprint_shared::proto::ingest::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.webhook_events), (0, 0), "refused input was stored");

    // Accepted but made harmless: NUL and escape bytes in names and notes, a 100 KB name.
    let ev = with(&|o| {
        o["lineItems"][0]["productName"]["translated"] = json!("Nam\u{0}Tok\u{1b}@\u{1d}V\u{0}");
        o["buyerNote"] = json!(format!("ohne\u{0}Koriander {}", "x".repeat(100_000)));
    });
    stack.send_event(&ev).await.unwrap();
    let t = tickets(&stack, 3).await;
    settle(&stack, 3).await;
    for ticket in &t {
        assert!(ticket.complete && ticket.unknown_commands == 0, "ticket #{}", ticket.seq);
        assert!(
            !ticket.text.chars().any(|c| c.is_control() && c != '\n'),
            "control character on paper:\n{}",
            ticket.text
        );
        assert!(ticket.lines.len() < 200, "unbounded ticket: {} lines", ticket.lines.len());
    }
    assert!(t[0].text.contains("Nam Tok") || t[0].text.contains("NamTok"), "{}", t[0].text);
    let log = stack.logs();
    assert!(!log.contains('\u{0}'), "NUL reached the logs");
}

/// Wix delivers out of order (retries) and twice. Whatever the order of arrival, the paper is
/// the in-order paper: the set, one change slip, one STORNO, nothing for the payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_and_repeated_deliveries_print_the_in_order_paper() {
    let names = [
        "order_created.pickup.json",
        "order_updated.pickup.json",
        "order_payment_status_updated.pickup.json",
        "order_canceled.pickup.json",
    ];
    let shuffles: [[usize; 4]; 5] = [[0, 1, 2, 3], [3, 1, 2, 0], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]];
    for shuffle in shuffles {
        let stack = Stack::start(StackOptions::default()).await.unwrap();
        let poster = stack.poster();
        // Each event twice, the second copy of the first event at the very end.
        let mut bodies: Vec<String> = shuffle.iter().map(|&i| stack.keys.sign_event(&fixture(names[i]))).collect();
        bodies.insert(2, bodies[1].clone());
        bodies.push(bodies[0].clone());
        for b in bodies {
            let (status, body) = poster.post(b).await.unwrap();
            assert_eq!(status, 200, "{shuffle:?}: {body}");
        }
        let t = tickets(&stack, 5).await;
        settle(&stack, 5).await;
        let texts: Vec<&str> = t.iter().map(|t| t.text.as_str()).collect();
        let slips: Vec<&&str> = texts.iter().filter(|t| t.contains("ÄNDERUNG")).collect();
        assert_eq!(slips.len(), 1, "{shuffle:?}: {texts:#?}");
        assert!(slips[0].contains("Som Tam 3 -> 4"), "{shuffle:?}: {}", slips[0]);
        assert_eq!(texts.iter().filter(|t| t.contains("STORNO")).count(), 1, "{shuffle:?}: {texts:#?}");
        let sets: Vec<&&str> = texts.iter().filter(|t| !t.contains("ÄNDERUNG") && !t.contains("STORNO")).collect();
        assert_eq!(sets.len(), 3, "{shuffle:?}");
        assert!(sets[0].contains("3 x Som Tam"), "{shuffle:?}: the set shows the order as created:\n{}", sets[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_after_print_reprints_the_driver_slip_only_when_configured() {
    let stack =
        Stack::start(StackOptions::default().print_env("PRINT_REPRINT_DRIVER_WHEN_PAID", "true")).await.unwrap();
    stack.send_event(&fixture("order_created.pickup.json")).await.unwrap();
    let t = tickets(&stack, 3).await;
    settle(&stack, 3).await;
    assert!(t[1].text.contains("BAR ZU KASSIEREN"), "{}", t[1].text);
    stack.send_event(&fixture("order_updated.pickup.json")).await.unwrap();
    stack.send_event(&fixture("order_payment_status_updated.pickup.json")).await.unwrap();
    let t = tickets(&stack, 5).await;
    settle(&stack, 5).await;
    let reprint = t.iter().rev().find(|t| t.text.contains("BEZAHLT")).expect("a paid driver slip");
    assert!(!reprint.text.contains("BAR ZU KASSIEREN") && !reprint.text.contains("KOPIE"), "{}", reprint.text);
    let kinds: Vec<String> = stack.jobs().await.unwrap().into_iter().map(|j| j.kind).collect();
    assert_eq!(kinds, ["ticket", "ticket", "ticket", "change", "paid"]);
}
