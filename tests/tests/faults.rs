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
            .print_env("PRINT_CONFIRM_TIMEOUT_MS", "1500")
            .print_env("PRINT_CONFIRM_MODE", "process_id"),
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
    assert_eq!(
        JobState::try_from(jobs[0].state).unwrap(),
        JobState::AwaitingConfirm,
        "waiting is not failing\n{}",
        stack.logs()
    );
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

/// The printer's connectivity events, oldest first, as (from, to), after checking that every
/// event but the newest is closed with an end time.
async fn event_path(stack: &Stack) -> Vec<(String, String)> {
    let mut admin = stack.print_admin().await.unwrap();
    let events = admin
        .list_connectivity_events(ListConnectivityEventsRequest { kind: "printer".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    for e in events.iter().skip(1) {
        assert!(e.ended_at.is_some(), "every event but the current one is closed: {e:?}");
    }
    assert!(events.first().is_none_or(|e| e.ended_at.is_none()), "the current state is open");
    events.iter().rev().map(|e| (e.from_state.clone(), e.to_state.clone())).collect()
}

fn path(steps: &[(&str, &str)]) -> Vec<(String, String)> {
    steps.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printer_without_gs_h_prints_each_ticket_once_confirmed_by_status_read_back() {
    // Default confirm mode (auto) and the default 15 s confirmation timeout.
    let stack = stack(StackOptions::default().print_env("PRINT_RECEIPT_TYPES", "kitchen")).await;
    stack.sim.set_mode(Mode::NoProcessId);
    wait_state(&stack, "online").await;
    let started = std::time::Instant::now();
    for n in 1..=3 {
        stack.send_event(&distinct_order("order_created.pickup.json", n)).await.unwrap();
    }
    if let Err(e) = stack.sim.wait_for_tickets(3, T).await {
        panic!("{e:#}\n{}", stack.logs());
    }
    stack.wait_quiet(T).await.unwrap();
    // Quickly: no ticket waited for a GS ( H reply that never comes (15 s each).
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let tickets = stack.sim.tickets();
    assert_eq!(tickets.len(), 3, "each ticket exactly once");
    assert!(tickets.iter().all(|t| t.complete && !t.text.contains("KOPIE")), "{tickets:#?}");
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(jobs.len(), 3);
    for j in &jobs {
        assert_eq!(JobState::try_from(j.state).unwrap(), JobState::Printed, "{j:?}");
        assert!(!j.reprint && j.attempts == 1, "{j:?}");
    }
    let mut admin = stack.print_admin().await.unwrap();
    let status = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.printers[0].confirm_mode, "status");
    assert_eq!(status.printers[0].state, "online");
    let log = stack.print.log();
    assert_eq!(log.matches("does not answer GS ( H").count(), 1, "logged once:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epson_is_probed_once_and_confirmed_by_process_id() {
    let stack = stack(StackOptions::default().print_env("PRINT_RECEIPT_TYPES", "kitchen")).await;
    wait_state(&stack, "online").await;
    stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    stack.sim.wait_for_tickets(1, T).await.unwrap();
    stack.wait_quiet(T).await.unwrap();
    let mut admin = stack.print_admin().await.unwrap();
    let status = admin.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.printers[0].confirm_mode, "process_id");
    // The probe and the ticket's own GS ( H.
    assert_eq!(stack.sim.confirmations_sent(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_without_a_cause_while_a_ticket_awaits_confirmation_holds_it_and_it_prints_once() {
    let stack = stack(
        StackOptions::default()
            .print_env("PRINT_RECEIPT_TYPES", "kitchen")
            .print_env("PRINT_CONFIRM_TIMEOUT_MS", "1500"),
    )
    .await;
    wait_state(&stack, "online").await;
    // The printer goes offline (no cause named) as the ticket arrives, holding all of it.
    stack.sim.set_mode(Mode::OfflineAtTicket);
    stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    wait_state(&stack, "offline").await;
    // Well past the confirmation timeout: waiting is not failing (an absence has no signal).
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(JobState::try_from(jobs[0].state).unwrap(), JobState::AwaitingConfirm, "{jobs:?}\n{}", stack.logs());
    assert_eq!(printer_state(&stack).await, "offline");
    assert!(stack.sim.tickets().is_empty());

    stack.sim.set_mode(Mode::Online);
    stack.sim.wait_for_tickets(1, T).await.unwrap();
    stack.wait_quiet(T).await.unwrap();
    let tickets = stack.sim.tickets();
    assert_eq!(tickets.len(), 1, "the held original only, no KOPIE alongside: {tickets:#?}");
    assert!(!tickets[0].text.contains("KOPIE"));
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(JobState::try_from(jobs[0].state).unwrap(), JobState::Printed);
    assert!(!jobs[0].reprint && jobs[0].attempts == 1, "{:?}", jobs[0]);
    wait_state(&stack, "online").await;
    assert_eq!(event_path(&stack).await, path(&[("unknown", "online"), ("online", "offline"), ("offline", "online")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_near_end_is_a_warning_one_event_per_change_and_no_recovery_pause() {
    let stack = stack(StackOptions::default().print_env("PRINT_RECEIPT_TYPES", "kitchen")).await;
    stack.sim.set_mode(Mode::PaperOut);
    wait_state(&stack, "paper_out").await;
    for n in 1..=3 {
        stack.send_event(&distinct_order("order_created.pickup.json", n)).await.unwrap();
    }
    let admin = stack.print_admin().await.unwrap();
    wait_until(T, "three tickets queued", || {
        let mut admin = admin.clone();
        async move {
            let s = admin.get_status(GetStatusRequest {}).await?.into_inner();
            Ok(s.jobs.iter().map(|c| c.count).sum::<u64>() == 3)
        }
    })
    .await
    .unwrap();
    // A near-end roll goes in: the backlog drains, then more tickets print one by one.
    stack.sim.set_mode(Mode::PaperNearEnd);
    stack.sim.wait_for_tickets(3, T).await.unwrap();
    stack.wait_quiet(T).await.unwrap();
    for n in 4..=6 {
        stack.send_event(&distinct_order("order_created.pickup.json", n)).await.unwrap();
        stack.sim.wait_for_tickets(n as usize, T).await.unwrap();
        stack.wait_quiet(T).await.unwrap();
    }
    assert_eq!(printer_state(&stack).await, "paper_low");
    stack.sim.set_mode(Mode::Online);
    wait_state(&stack, "online").await;

    let tickets = stack.sim.tickets();
    assert_eq!(tickets.len(), 6, "{tickets:#?}");
    assert!(tickets.iter().all(|t| !t.text.contains("KOPIE")));
    assert_eq!(
        event_path(&stack).await,
        path(&[("unknown", "online"), ("online", "paper_out"), ("paper_out", "paper_low"), ("paper_low", "online")]),
        "{}",
        stack.logs()
    );
    let log = stack.print.log();
    assert!(!log.contains("session paused"), "paper near end paused a recovery:\n{log}");
    let mut admin = stack.print_admin().await.unwrap();
    let sessions = admin
        .list_recovery_sessions(wixprint_shared::proto::print::ListRecoverySessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 1, "one recovery for the one return: {sessions:#?}");
    assert_eq!(sessions[0].state, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_polls_and_tickets_share_one_connection() {
    let stack = stack(StackOptions::default().print_env("PRINT_RECEIPT_TYPES", "kitchen")).await;
    wait_state(&stack, "online").await;
    for n in 1..=5 {
        stack.send_event(&distinct_order("order_created.pickup.json", n)).await.unwrap();
        stack.sim.wait_for_tickets(n as usize, T).await.unwrap();
        stack.wait_quiet(T).await.unwrap();
        // Idle polling in between: a few status reads (three DLE EOT each) after the ticket.
        let seen = stack.sim.status_queries();
        wait_until(T, "idle status polls", || {
            let sim = stack.sim.clone();
            async move { Ok(sim.status_queries() >= seen + 9) }
        })
        .await
        .unwrap();
    }
    assert_eq!(stack.sim.tickets().len(), 5);
    // One persistent connection (a second one only if a status read timed out under load),
    // never one per poll and per ticket.
    assert!(stack.sim.connections() <= 2, "{} connections for polls and 5 tickets", stack.sim.connections());
}
