//! Recovery with the real binaries: a backlog built while the printer was away prints, when
//! it returns, at once, in priority order, each ticket once; SIGKILLs in the middle never make
//! an unmarked duplicate; an operator can pause, resume and cancel; the sessions are kept.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wixprint_shared::proto::print::{
    GetQueueStatusRequest, GetRecoveryRequest, GetRecoveryStatsRequest, JobState, ListJobsRequest,
    ListRecoverySessionsRequest, RecoveryControlRequest, RecoverySession,
};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::sim::{Mode, Ticket};
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(60);
const PICKUP: &str = "order_created.pickup.json";
/// Its note names an allergen (Erdnüsse): its kitchen ticket is CRITICAL.
const DELIVERY: &str = "order_approved.delivery.json";

/// Posts orders 1..=n (every third a delivery with an allergy note), 8 at a time.
async fn post_orders(stack: &Stack, n: u64) {
    let mut next = 1;
    while next <= n {
        let mut batch = Vec::new();
        for i in next..(next + 8).min(n + 1) {
            let ev = distinct_order(if i % 3 == 0 { DELIVERY } else { PICKUP }, i);
            let (poster, body) = (stack.poster(), stack.keys.sign_event(&ev));
            batch.push(tokio::spawn(async move { poster.post(body).await }));
        }
        for b in batch {
            let (status, body) = b.await.unwrap().unwrap();
            assert_eq!(status, 200, "{body}");
        }
        next += 8;
    }
}

async fn waiting(stack: &Stack) -> u64 {
    let mut admin = stack.print_admin().await.unwrap();
    admin.get_queue_status(GetQueueStatusRequest {}).await.unwrap().into_inner().waiting
}

async fn wait_waiting(stack: &Stack, n: u64) {
    let admin = stack.print_admin().await.unwrap();
    wait_until(T, &format!("{n} jobs waiting"), || {
        let mut admin = admin.clone();
        async move { Ok(admin.get_queue_status(GetQueueStatusRequest {}).await?.into_inner().waiting == n) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
}

/// (order number, receipt kind) of a sim ticket, from its number and title line.
fn identify(t: &Ticket) -> (String, &'static str) {
    let number = t.text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 5 && w.starts_with('2'));
    let title = t.lines.iter().map(|l| l.text.trim()).find(|l| !l.is_empty()).unwrap_or_default();
    let kind = match title {
        "KÜCHE" | "KITCHEN" => "kitchen",
        "FAHRER" | "DRIVER" | "ABHOLSCHEIN" | "PICKUP SLIP" => "driver",
        _ if title.contains("KOPIE") => "copy",
        _ => "customer",
    };
    (number.unwrap_or("?").to_owned(), kind)
}

async fn sessions(stack: &Stack) -> Vec<RecoverySession> {
    let mut admin = stack.print_admin().await.unwrap();
    admin.list_recovery_sessions(ListRecoverySessionsRequest::default()).await.unwrap().into_inner().sessions
}

async fn wait_session(stack: &Stack, what: &str, pred: impl Fn(&RecoverySession) -> bool) -> RecoverySession {
    let pred = &pred;
    if let Err(e) = wait_until(T, what, || async move { Ok(sessions(stack).await.first().is_some_and(pred)) }).await {
        panic!("{e:#}: {:#?}\n{}", sessions(stack).await.first(), stack.logs());
    }
    sessions(stack).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_backlog_of_300_orders_prints_in_priority_order_once_when_the_printer_returns() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    stack.sim.set_mode(Mode::Offline);
    post_orders(&stack, 300).await;
    wait_waiting(&stack, 900).await;
    let mut admin = stack.print_admin().await.unwrap();
    let jobs = admin.list_jobs(ListJobsRequest { limit: 1000, ..Default::default() }).await.unwrap().into_inner().jobs;
    assert!(jobs.iter().all(|j| j.attempts == 0), "waiting for the printer used attempts");
    assert_eq!(stack.sim.tickets().len(), 0);

    let back = Instant::now();
    stack.sim.set_mode(Mode::Online);
    stack.sim.wait_for_tickets(1, T).await.unwrap();
    let first = back.elapsed();
    stack.sim.wait_for_tickets(900, T).await.unwrap();
    let all = back.elapsed();
    stack.wait_quiet(T).await.unwrap();
    assert!(first < Duration::from_secs(1), "first ticket {first:?} after the printer returned");
    eprintln!("first ticket after {first:?}; 900 tickets after {all:?}");

    let tickets = stack.sim.tickets();
    assert_eq!(tickets.len(), 900, "each ticket exactly once");
    let mut seen = HashMap::new();
    let mut last_class = 0;
    for t in &tickets {
        assert!(t.complete && !t.text.contains("KOPIE"), "{}", t.text);
        let (number, kind) = identify(t);
        *seen.entry((number.clone(), kind)).or_insert(0) += 1;
        let allergy = number.parse::<u64>().is_ok_and(|n| (n - 20000) % 3 == 0);
        let class = match kind {
            "kitchen" if allergy => 0,
            "kitchen" => 1,
            "driver" => 2,
            _ => 3,
        };
        assert!(class >= last_class, "ticket #{} ({number} {kind}) printed after a lower priority", t.seq);
        last_class = class;
    }
    assert_eq!(seen.len(), 900);
    assert!(seen.values().all(|&n| n == 1));

    let s = wait_session(&stack, "session completed", |s| s.state == "completed").await;
    assert_eq!((s.total, s.done, s.failed, s.remaining), (900, 900, 0, 0), "{s:#?}");
    assert_eq!(s.trigger, "printer_online");
    assert!(s.duration_ms > 0 && s.rate_per_s > 0.0 && s.percent == 100.0, "{s:#?}");
    assert!(s.start_latency_ms < 1000, "{s:#?}");
    eprintln!("session: {} tickets/s, first ticket {} ms after the return", s.rate_per_s, s.start_latency_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_20_times_during_a_recovery_of_500_orders_loses_nothing_and_marks_every_copy() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    stack.sim.set_mode(Mode::Offline);
    post_orders(&stack, 500).await;
    wait_waiting(&stack, 1500).await;
    stack.sim.set_mode(Mode::Online);
    for _ in 0..20 {
        let pause = 50 + rand::random::<u64>() % 350;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        stack.print.kill().await;
        stack.print.start().await.unwrap();
    }
    stack.wait_quiet(Duration::from_secs(120)).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));

    let mut copies: HashMap<(String, &str), (u32, u32)> = HashMap::new();
    for t in stack.sim.tickets().iter().filter(|t| t.complete) {
        let marked = t.text.contains("KOPIE / REPRINT");
        let (number, kind) = identify_unmarked(t);
        let e = copies.entry((number, kind)).or_default();
        if marked { e.1 += 1 } else { e.0 += 1 }
    }
    assert_eq!(copies.len(), 1500, "every ticket of the 500 orders is on paper");
    for (k, (plain, _marked)) in &copies {
        assert!(*plain <= 1, "{k:?} printed {plain} times without the banner");
    }
    let mut admin = stack.print_admin().await.unwrap();
    let jobs = admin.list_jobs(ListJobsRequest { limit: 1000, ..Default::default() }).await.unwrap().into_inner().jobs;
    let more = admin
        .list_jobs(ListJobsRequest { limit: 1000, state: JobState::Printed as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.iter().all(|j| j.state == JobState::Printed as i32), "all printed");
    assert_eq!(more.len(), 1000, "(list is capped at 1000)");
    let dead = admin
        .list_jobs(ListJobsRequest { limit: 1000, state: JobState::Dead as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(dead.is_empty(), "no job used up its attempts: {dead:#?}");
    assert_eq!(waiting(&stack).await, 0);
    let all = sessions(&stack).await;
    assert!(all.iter().any(|s| s.trigger == "startup"), "a restart with a backlog starts a session: {all:#?}");
}

/// Like [`identify`], for tickets that may carry the reprint banner on top.
fn identify_unmarked(t: &Ticket) -> (String, &'static str) {
    let mut t = t.clone();
    t.lines.retain(|l| !l.text.contains("KOPIE"));
    identify(&t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_resumes_and_cancels_a_recovery() {
    let stack = Stack::start(
        StackOptions::default().print_env("PRINT_RECOVERY_RATE", "20").print_env("PRINT_RECEIPT_TYPES", "kitchen"),
    )
    .await
    .unwrap();
    stack.sim.set_mode(Mode::Offline);
    post_orders(&stack, 60).await;
    wait_waiting(&stack, 60).await;
    stack.sim.set_mode(Mode::Online);
    let s = wait_session(&stack, "processing", |s| s.state == "processing" && s.done >= 3).await;
    let mut admin = stack.print_admin().await.unwrap();

    let paused = admin.pause_recovery(RecoveryControlRequest { session_id: s.id }).await.unwrap().into_inner();
    assert_eq!((paused.state.as_str(), paused.paused_reason.as_str()), ("paused", "operator"));
    // Proving that nothing prints needs a wait: at 20 tickets/s, 600 ms would print about 12.
    let before = stack.sim.tickets().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = stack.sim.tickets().len();
    assert!(after <= before + 1, "printing went on while paused: {before} -> {after}");

    admin.resume_recovery(RecoveryControlRequest { session_id: s.id }).await.unwrap();
    stack.sim.wait_for_tickets(after + 3, T).await.unwrap();

    let cancelled = admin.cancel_recovery(RecoveryControlRequest { session_id: s.id }).await.unwrap().into_inner();
    assert_eq!(cancelled.state, "cancelled");
    assert!(cancelled.summary.contains("held"), "{cancelled:?}");
    let held = admin
        .list_jobs(ListJobsRequest { state: JobState::Held as i32, limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(!held.is_empty(), "the rest of the backlog is kept");
    let printed_at_cancel = stack.sim.tickets().len();
    assert!(printed_at_cancel + held.len() >= 60);
    // New orders still print at once.
    post_orders_from(&stack, 1000, 1).await;
    let t = stack.sim.wait_for_tickets(printed_at_cancel + 1, T).await.unwrap();
    assert!(t.last().unwrap().text.contains("21000"), "the new order printed:\n{}", t.last().unwrap().text);

    // Resuming a cancelled session prints what was held; nothing twice.
    admin.resume_recovery(RecoveryControlRequest { session_id: s.id }).await.unwrap();
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(stack.sim.tickets().len(), 61);
    let done = wait_session(&stack, "completed", |s| s.state == "completed").await;
    assert_eq!((done.total, done.done), (60, 60), "{done:#?}");
    let stats = admin.get_recovery_stats(GetRecoveryStatsRequest {}).await.unwrap().into_inner();
    assert!(stats.sessions >= 1 && stats.completed >= 1 && stats.tickets_recovered >= 60, "{stats:#?}");

    // Bad requests say what is wrong.
    let e = admin.pause_recovery(RecoveryControlRequest { session_id: 9999 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = admin.pause_recovery(RecoveryControlRequest { session_id: s.id }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "a completed session does not pause");
    let e = admin.cancel_recovery(RecoveryControlRequest { session_id: 0 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = admin.get_recovery(GetRecoveryRequest { printer: "bar".into(), session_id: 0 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

async fn post_orders_from(stack: &Stack, first: u64, n: u64) {
    for i in first..first + n {
        let ev = distinct_order(PICKUP, i);
        stack.send_event(&ev).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printer_loss_mid_recovery_pauses_the_session_and_its_return_resumes_it() {
    let stack = Stack::start(
        StackOptions::default().print_env("PRINT_RECOVERY_RATE", "20").print_env("PRINT_RECEIPT_TYPES", "kitchen"),
    )
    .await
    .unwrap();
    stack.sim.set_mode(Mode::Offline);
    post_orders(&stack, 40).await;
    wait_waiting(&stack, 40).await;
    stack.sim.set_mode(Mode::Online);
    wait_session(&stack, "processing", |s| s.state == "processing" && s.done >= 2).await;
    stack.sim.set_mode(Mode::PaperOut);
    let paused = wait_session(&stack, "paused by the printer", |s| s.state == "paused").await;
    assert!(paused.paused_reason.contains("paper_out"), "{paused:?}");
    stack.sim.set_mode(Mode::Online);
    let done = wait_session(&stack, "completed", |s| s.state == "completed").await;
    assert_eq!((done.total, done.done, done.failed), (40, 40, 0));
    stack.wait_quiet(T).await.unwrap();
    let tickets = stack.sim.tickets();
    let plain: Vec<_> = tickets.iter().filter(|t| t.complete && !t.text.contains("KOPIE")).map(identify).collect();
    let mut unique = plain.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), plain.len(), "no ticket twice without the banner");
    assert_eq!(unique.len(), 40);
}
