//! Several printers with the real binaries: each receipt type prints on the printer it is
//! routed to, copies and the buzzer follow the config, and a printer that stays offline hands
//! its tickets to its backup, where they print once with a banner naming it.

use std::time::Duration;

use wixprint_shared::proto::print::{GetStatusRequest, JobState, PreviewReceiptRequest, ReceiptType};
use wixprint_tests::harness::{Stack, StackOptions};
use wixprint_tests::sim::{Mode, PrinterSim, Ticket};
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(30);

struct Pair {
    stack: Stack,
    kitchen: PrinterSim,
    front: PrinterSim,
}

/// A stack whose wix-print drives two simulators, `kitchen` and `front`.
async fn two_printers(kitchen_spec: &str, extra: &[(&str, &str)]) -> Pair {
    let kitchen = PrinterSim::start("127.0.0.1:0").await.unwrap();
    let front = PrinterSim::start("127.0.0.1:0").await.unwrap();
    let mut opts = StackOptions::default()
        .print_env("PRINT_PRINTERS", format!("kitchen={}{kitchen_spec},front={}", kitchen.url(), front.url()))
        .print_env("PRINT_ROUTES", "kitchen=kitchen,driver=front,customer=front");
    for (k, v) in extra {
        opts = opts.print_env(k, *v);
    }
    let stack = Stack::start(opts).await.expect("stack starts");
    Pair { stack, kitchen, front }
}

async fn tickets(p: &Pair, sim: &PrinterSim, n: usize) -> Vec<Ticket> {
    match sim.wait_for_tickets(n, T).await {
        Ok(t) => t,
        Err(e) => panic!("{e:#}\n{}", p.stack.logs()),
    }
}

fn order_number(t: &Ticket) -> Option<&'static str> {
    ["20001", "20002", "20003"].into_iter().find(|n| t.text.contains(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_receipt_type_prints_on_its_printer_with_copies_and_buzzer() {
    let p = two_printers("", &[("PRINT_COPIES", "customer=2"), ("PRINT_BUZZER", "kitchen")]).await;
    p.stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    p.stack.send_event(&distinct_order("order_approved.delivery.json", 2)).await.unwrap();
    let kitchen = tickets(&p, &p.kitchen, 2).await;
    let front = tickets(&p, &p.front, 6).await;
    p.stack.wait_quiet(T).await.unwrap();

    assert_eq!(p.kitchen.tickets().len(), 2, "kitchen printer got more than the kitchen tickets");
    assert_eq!(p.front.tickets().len(), 6, "front printer: 2 driver slips + 2 x 2 customer receipts");
    for t in &kitchen {
        assert!(t.complete && t.unknown_commands == 0, "kitchen ticket:\n{}", t.text);
        assert!(
            !t.text.contains("CHF") && !t.text.contains("EUR"),
            "a priced receipt on the kitchen printer:\n{}",
            t.text
        );
        assert!(!t.buzzer.is_empty(), "kitchen ticket did not sound the buzzer");
    }
    for t in &front {
        assert!(t.complete && t.unknown_commands == 0, "front ticket:\n{}", t.text);
        assert!(t.buzzer.is_empty(), "only kitchen tickets buzz:\n{}", t.text);
    }
    for n in ["20001", "20002"] {
        assert_eq!(kitchen.iter().filter(|t| order_number(t) == Some(n)).count(), 1, "kitchen tickets of {n}");
        assert_eq!(front.iter().filter(|t| order_number(t) == Some(n)).count(), 3, "front tickets of {n}");
    }

    let jobs = p.stack.jobs().await.unwrap();
    assert_eq!(jobs.len(), 8);
    for j in &jobs {
        assert_eq!(JobState::try_from(j.state).unwrap(), JobState::Printed, "job {j:?}");
        let want = if j.receipt_type == ReceiptType::Kitchen as i32 { "kitchen" } else { "front" };
        assert_eq!(j.printer, want, "job {} ({:?})", j.id, ReceiptType::try_from(j.receipt_type));
    }
    let copies: Vec<u32> =
        jobs.iter().filter(|j| j.receipt_type == ReceiptType::Customer as i32).map(|j| j.copy).collect();
    assert_eq!(copies, [1, 2, 1, 2]);

    let mut admin = p.stack.print_admin().await.unwrap();
    let status = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    let names: Vec<_> = status.printers.iter().map(|s| (s.name.as_str(), s.state.as_str())).collect();
    assert_eq!(names, [("kitchen", "online"), ("front", "online")]);
    // The preview of a receipt type uses the printer it is routed to; an unknown printer is named.
    let preview = admin
        .preview_receipt(PreviewReceiptRequest {
            source: Some(wixprint_shared::proto::print::preview_receipt_request::Source::OrderId(
                jobs[0].order_id.clone(),
            )),
            receipt_type: ReceiptType::Customer as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.printer, "front");
    let err = admin
        .preview_receipt(PreviewReceiptRequest {
            source: Some(wixprint_shared::proto::print::preview_receipt_request::Source::OrderId(
                jobs[0].order_id.clone(),
            )),
            receipt_type: ReceiptType::Kitchen as i32,
            printer: "bar".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("kitchen, front"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_kitchen_printer_fails_over_to_the_front_printer_once_with_a_banner() {
    let p = two_printers("?backup=front", &[("PRINT_FAILOVER_AFTER_SECS", "1")]).await;
    p.kitchen.set_mode(Mode::Offline);
    p.stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    // Driver and customer print at once; the kitchen ticket follows after the failover time.
    let front = tickets(&p, &p.front, 3).await;
    p.stack.wait_quiet(T).await.unwrap();
    assert_eq!(p.kitchen.tickets().len(), 0, "the offline printer printed");
    let moved: Vec<_> = front.iter().filter(|t| t.text.contains("FOR: KITCHEN")).collect();
    assert_eq!(moved.len(), 1, "exactly one failed-over ticket:\n{front:#?}");
    let banner = moved[0].lines.iter().filter(|l| l.text.contains("FOR: KITCHEN")).collect::<Vec<_>>();
    assert_eq!(banner.len(), 2, "banner at the top and the bottom:\n{}", moved[0].text);
    assert!(banner.iter().all(|l| l.reverse && l.width_mult == 2), "banner is big and reversed");
    assert!(!moved[0].text.contains("CHF"), "the moved ticket is the kitchen ticket:\n{}", moved[0].text);

    let jobs = p.stack.jobs().await.unwrap();
    let kitchen_job = jobs.iter().find(|j| j.receipt_type == ReceiptType::Kitchen as i32).unwrap();
    assert_eq!(kitchen_job.printer, "front");
    assert_eq!(JobState::try_from(kitchen_job.state).unwrap(), JobState::Printed);
    assert_eq!(kitchen_job.attempts, 1, "waiting for the offline printer used no attempt");

    // The kitchen printer returns: the failed-over ticket is not printed again there, and new
    // kitchen tickets print on it, without a banner.
    p.kitchen.set_mode(Mode::Online);
    p.stack.send_event(&distinct_order("order_created.pickup.json", 2)).await.unwrap();
    let kitchen = tickets(&p, &p.kitchen, 1).await;
    p.stack.wait_quiet(T).await.unwrap();
    assert_eq!(p.kitchen.tickets().len(), 1);
    assert_eq!(order_number(&kitchen[0]), Some("20002"), "{}", kitchen[0].text);
    assert!(!kitchen[0].text.contains("FOR:"), "{}", kitchen[0].text);
    assert_eq!(p.front.tickets().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_held_by_a_printer_that_runs_out_of_paper_fails_over_once_with_both_banners() {
    let p = two_printers(
        "?backup=front",
        &[("PRINT_FAILOVER_AFTER_SECS", "1"), ("PRINT_RECEIPT_TYPES", "kitchen"), ("PRINT_STATUS_POLL_MS", "100")],
    )
    .await;
    // The kitchen printer takes the ticket and runs out of paper before printing any of it.
    p.kitchen.set_mode(Mode::PaperOutAtTicket);
    p.stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    let front = tickets(&p, &p.front, 1).await;
    p.stack.wait_quiet(T).await.unwrap();
    assert!(p.kitchen.tickets().is_empty(), "the stopped printer printed");
    let t = &front[0];
    assert!(t.text.contains("KOPIE / REPRINT"), "the doubt is printed:\n{}", t.text);
    assert!(t.text.contains("FOR: KITCHEN"), "the printer it was meant for:\n{}", t.text);
    let jobs = p.stack.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].printer, "front");
    assert_eq!(JobState::try_from(jobs[0].state).unwrap(), JobState::Printed);
    assert!(jobs[0].reprint);
    assert_eq!(jobs[0].attempts, 2, "one uncertain attempt on the kitchen printer, one on the backup");

    // Paper back: the held ticket was cleared from the kitchen printer, which prints only the
    // next order's ticket.
    p.kitchen.set_mode(Mode::Online);
    p.stack.send_event(&distinct_order("order_created.pickup.json", 2)).await.unwrap();
    let kitchen = tickets(&p, &p.kitchen, 1).await;
    p.stack.wait_quiet(T).await.unwrap();
    assert_eq!(order_number(&kitchen[0]), Some("20002"), "{}", kitchen[0].text);
    assert_eq!(p.kitchen.tickets().len(), 1, "{:#?}", p.kitchen.tickets());
    assert_eq!(p.front.tickets().len(), 1);
}
