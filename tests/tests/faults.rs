//! Printer faults seen from the outside: every stopped state is detected, reported with the
//! right name in wix-print's status and in its connectivity events (and, over the bus, in
//! wix-ingest's view of its peer), and a ticket interrupted by a fault comes back only with
//! the KOPIE banner.

use std::time::Duration;

use wixprint_shared::proto::ingest::GetStatusRequest as IngestStatusRequest;
use wixprint_shared::proto::print::{GetStatusRequest, JobState, ListConnectivityEventsRequest, ReceiptType};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::sim::Mode;
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(30);

async fn stack(opts: StackOptions) -> Stack {
    Stack::start(opts.print_env("PRINT_STATUS_POLL_MS", "100")).await.expect("stack starts")
}

/// wix-print's state for its only printer.
async fn printer_state(stack: &Stack) -> String {
    let mut admin = stack.print_admin().await.unwrap();
    let status = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    status.printers[0].state.clone()
}

async fn wait_state(stack: &Stack, want: &str) {
    let admin = stack.print_admin().await.unwrap();
    let res = wait_until(T, &format!("printer {want}"), || {
        let mut admin = admin.clone();
        async move {
            let s = admin.get_status(GetStatusRequest {}).await?.into_inner();
            Ok(s.printers[0].state == want)
        }
    })
    .await;
    if let Err(e) = res {
        panic!("{e:#}; now {}\n{}", printer_state(stack).await, stack.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stopped_state_is_reported_and_recorded_even_while_idle() {
    let stack = stack(StackOptions::default()).await;
    wait_state(&stack, "online").await;
    // Nothing is printing: the idle status poll notices each change on its own.
    for (mode, state) in [
        (Mode::PaperOut, "paper_out"),
        (Mode::CoverOpen, "cover_open"),
        (Mode::Silent, "offline"),
        (Mode::Offline, "offline"),
        (Mode::Unreachable, "offline"),
    ] {
        stack.sim.set_mode(mode);
        wait_state(&stack, state).await;
        stack.sim.set_mode(Mode::Online);
        wait_state(&stack, "online").await;
    }
    let mut admin = stack.print_admin().await.unwrap();
    let events = admin
        .list_connectivity_events(ListConnectivityEventsRequest { kind: "printer".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    // Newest first: the path back, read oldest first.
    let path: Vec<(String, String)> = events.iter().rev().map(|e| (e.from_state.clone(), e.to_state.clone())).collect();
    let expected: Vec<(String, String)> = [
        ("unknown", "online"),
        ("online", "paper_out"),
        ("paper_out", "online"),
        ("online", "cover_open"),
        ("cover_open", "online"),
        ("online", "offline"),
        ("offline", "online"),
        ("online", "offline"),
        ("offline", "online"),
        ("online", "offline"),
        ("offline", "online"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(path, expected, "{events:#?}");
    for e in &events[1..] {
        assert!(e.ended_at.is_some(), "only the newest event is open: {e:?}");
    }
    assert!(events[0].ended_at.is_none(), "the current state is open");
    let silent = &events[events.len() - 6];
    assert!(silent.detail.contains("DLE EOT"), "a silent printer says why: {silent:?}");
    assert!(events.iter().all(|e| e.name == "front"));

    // Bad input is refused, naming the field.
    let err = admin
        .list_connectivity_events(ListConnectivityEventsRequest { limit: 5000, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("limit"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_sees_the_printer_state_over_the_bus() {
    let stack = stack(StackOptions::default()).await;
    let ingest = stack.ingest_admin().await.unwrap();
    let printer_seen_by_ingest = |want: &'static str| {
        let ingest = ingest.clone();
        move || {
            let mut ingest = ingest.clone();
            async move {
                let s = ingest.get_status(IngestStatusRequest {}).await?.into_inner();
                let peer = s.peer.unwrap_or_default();
                Ok(peer.state == "live"
                    && peer.components.iter().any(|c| c.kind == "printer" && c.name == "front" && c.state == want))
            }
        }
    };
    wait_until(T, "ingest sees the printer online", printer_seen_by_ingest("online")).await.unwrap();
    stack.sim.set_mode(Mode::PaperOut);
    wait_until(T, "ingest sees paper out", printer_seen_by_ingest("paper_out")).await.unwrap();
    stack.sim.set_mode(Mode::Online);
    wait_until(T, "ingest sees the printer back", printer_seen_by_ingest("online")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_out_after_an_unconfirmed_ticket_reprints_it_once_with_the_banner() {
    let stack = stack(
        StackOptions::default()
            .print_env("PRINT_RECEIPT_TYPES", "kitchen")
            .print_env("PRINT_CONFIRM_TIMEOUT_MS", "1500"),
    )
    .await;
    wait_state(&stack, "online").await;
    // The ticket reaches the paper but the printer never says so, then runs out of paper.
    stack.sim.set_mode(Mode::WithholdConfirm);
    stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    stack.sim.wait_for_tickets(1, T).await.unwrap();
    stack.sim.set_mode(Mode::PaperOut);
    wait_state(&stack, "paper_out").await;
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(JobState::try_from(jobs[0].state).unwrap(), JobState::AwaitingConfirm, "waiting is not failing");
    stack.sim.set_mode(Mode::Online);
    stack.wait_quiet(T).await.unwrap();

    // Either the held confirmation request was answered once the paper was back (one ticket,
    // printed), or the outcome stayed unknown and exactly one marked copy followed.
    let tickets = stack.sim.tickets();
    assert!(!tickets[0].text.contains("KOPIE"), "{}", tickets[0].text);
    assert!(tickets.len() <= 2, "at most the original and one marked copy");
    if let Some(copy) = tickets.get(1) {
        assert!(copy.text.contains("KOPIE / REPRINT"), "the copy is marked:\n{}", copy.text);
    }
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].receipt_type, ReceiptType::Kitchen as i32);
    assert_eq!(JobState::try_from(jobs[0].state).unwrap(), JobState::Printed);
    assert_eq!(jobs[0].reprint, tickets.len() == 2);

    let mut admin = stack.print_admin().await.unwrap();
    let events =
        admin.list_connectivity_events(ListConnectivityEventsRequest::default()).await.unwrap().into_inner().events;
    assert!(events.iter().any(|e| e.to_state == "paper_out"), "{events:#?}");
}
