//! Self-healing of the print path, from the outside (issue 11): failure classes, the printer
//! transport's circuit breaker, dead letters and their requeue.
//!
//! - "waiting is not failing": an offline or unreachable printer opens no breaker and uses no
//!   attempt, however long it stays away;
//! - a printer that drops the connection mid-ticket (transient) opens its breaker after the
//!   configured count; while open nothing connects; after the window a status read probes it
//!   and good tickets close it; every ticket that may be on paper twice carries the banner;
//! - a ticket dropped on every attempt is a dead letter after its attempts, with its reason;
//!   `RequeueJob` prints it once more, with the banner;
//! - a job whose stored data cannot become a ticket is a dead letter at once (permanent) and
//!   never blocks the queue.

use std::time::{Duration, Instant};

use wixprint_shared::proto::events::{ListBreakersRequest, ListHealingEventsRequest, ResetBreakerRequest};
use wixprint_shared::proto::print::{
    GetJobRequest, JobState, ListDeadLettersRequest, RequeueDeadLettersRequest, RequeueJobRequest,
};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::sim::Mode;
use wixprint_tests::webhook::distinct_order;

const T: Duration = Duration::from_secs(60);
const PICKUP: &str = "order_created.pickup.json";
const BANNER: &str = "KOPIE / REPRINT";

async fn stack(opts: StackOptions) -> Stack {
    Stack::start(opts.print_env("PRINT_STATUS_POLL_MS", "50")).await.expect("stack starts")
}

async fn breaker(stack: &Stack) -> wixprint_shared::proto::events::Breaker {
    let mut admin = stack.print_admin().await.unwrap();
    let list = admin.list_breakers(ListBreakersRequest {}).await.unwrap().into_inner().breakers;
    assert_eq!(list.len(), 1, "one breaker per printer: {list:?}");
    list.into_iter().next().unwrap()
}

async fn wait_breaker(stack: &Stack, state: &str, within: Duration) -> Instant {
    let admin = stack.print_admin().await.unwrap();
    wait_until(within, &format!("breaker {state}"), || {
        let mut admin = admin.clone();
        let state = state.to_owned();
        async move {
            let b = admin.list_breakers(ListBreakersRequest {}).await?.into_inner().breakers;
            Ok(b.first().is_some_and(|b| b.state == state))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    Instant::now()
}

/// The breaker's recorded history, oldest first: (action, from, to).
async fn breaker_history(stack: &Stack) -> Vec<(String, String, String)> {
    let mut admin = stack.print_admin().await.unwrap();
    let events = admin
        .list_healing_events(ListHealingEventsRequest { kind: "breaker".into(), limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .events;
    events.into_iter().rev().map(|e| (e.action, e.before, e.after)).collect()
}

async fn post(stack: &Stack, n: u64) {
    let (status, body) = stack.post_webhook(stack.keys.sign_event(&distinct_order(PICKUP, n))).await.unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_drops_mid_ticket_open_the_breaker_nothing_connects_while_open_and_good_tickets_close_it() {
    let window = Duration::from_millis(2500);
    let stack = stack(
        StackOptions::default()
            .print_env("PRINT_BREAKER_OPEN_MS", window.as_millis().to_string())
            // Enough attempts that no job dies here: the breaker is what is tested.
            .print_env("PRINT_MAX_ATTEMPTS", "10"),
    )
    .await;
    assert_eq!(breaker(&stack).await.state, "closed");
    stack.sim.drop_tickets(5);
    // Two orders: six tickets, of which the first five sent are cut off.
    post(&stack, 1).await;
    post(&stack, 2).await;
    let five = wait_until(T, "five partial tickets", || {
        let n = stack.sim.tickets().iter().filter(|t| !t.complete).count();
        async move { Ok(n >= 5) }
    })
    .await;
    five.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let dropped_at = Instant::now();
    let opened_at = wait_breaker(&stack, "open", Duration::from_secs(1)).await;
    assert!(opened_at - dropped_at < Duration::from_secs(1), "visible in ListBreakers within 1 s");
    let b = breaker(&stack).await;
    assert_eq!((b.name.as_str(), b.opened, b.failure_threshold), ("printer:front", 1, 5), "{b:?}");
    assert!(b.reason.contains("connection") || b.reason.contains("outcome"), "the reason is visible: {b:?}");
    assert!(b.retry_at.is_some(), "{b:?}");

    // While open nothing touches the printer: no connection, no status read. (A window with
    // nothing in it can only be watched: there is no signal for "nothing happened".)
    let (connections, reads) = (stack.sim.connections(), stack.sim.status_queries());
    tokio::time::sleep(window * 3 / 5).await;
    assert_eq!(breaker(&stack).await.state, "open");
    assert_eq!(
        (stack.sim.connections(), stack.sim.status_queries()),
        (connections, reads),
        "the printer was contacted while the breaker was open\n{}",
        stack.logs()
    );

    // After the window: a status-read probe, then three good tickets close it.
    wait_breaker(&stack, "closed", T).await;
    stack.wait_quiet(T).await.unwrap();
    assert_eq!(
        breaker_history(&stack).await,
        [("opened", "closed", "open"), ("half_open", "open", "half_open"), ("closed", "half_open", "closed")]
            .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    );
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(jobs.len(), 6);
    assert!(jobs.iter().all(|j| j.state == JobState::Printed as i32), "{jobs:#?}");
    let tickets = stack.sim.tickets();
    let complete: Vec<_> = tickets.iter().filter(|t| t.complete).collect();
    assert_eq!(complete.len(), 6, "each ticket on paper once in full");
    assert_eq!(tickets.iter().filter(|t| !t.complete).count(), 5);
    // Each cut-off ticket may be on paper twice: its reprint says so; the others do not.
    assert_eq!(complete.iter().filter(|t| t.text.contains(BANNER)).count(), 5);
    assert_eq!(jobs.iter().filter(|j| j.reprint).count(), 5);
    // Every attempt is recorded with its class.
    let mut admin = stack.print_admin().await.unwrap();
    let failed: usize = {
        let mut n = 0;
        for j in &jobs {
            let t = admin.get_job(GetJobRequest { id: j.id }).await.unwrap().into_inner().transitions;
            n += t.iter().filter(|t| t.failure_class == "transient").count();
        }
        n
    };
    assert_eq!(failed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_dropped_on_every_attempt_is_a_dead_letter_and_requeue_prints_it_once_with_the_banner() {
    let stack = stack(
        StackOptions::default().print_env("PRINT_RECEIPT_TYPES", "kitchen").print_env("PRINT_BREAKER_OPEN_MS", "300"),
    )
    .await;
    stack.sim.drop_tickets(5);
    post(&stack, 1).await;
    let mut admin = stack.print_admin().await.unwrap();
    let dead = {
        let mut admin = admin.clone();
        wait_until(T, "a dead letter", || {
            let mut admin = admin.clone();
            async move { Ok(admin.list_dead_letters(ListDeadLettersRequest::default()).await?.into_inner().total == 1) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
        admin.list_dead_letters(ListDeadLettersRequest::default()).await.unwrap().into_inner().dead_letters.remove(0)
    };
    assert_eq!(
        (dead.reason.as_str(), dead.failure_class.as_str(), dead.attempts),
        ("attempts_exhausted", "transient", 5),
        "{dead:?}"
    );
    assert!(!dead.last_error.is_empty() && dead.dead_at.is_some(), "{dead:?}");
    let job = dead.job.clone().unwrap();
    assert_eq!((job.printer.as_str(), job.state), ("front", JobState::Dead as i32));
    let transitions = admin.get_job(GetJobRequest { id: job.id }).await.unwrap().into_inner().transitions;
    assert_eq!(transitions.iter().filter(|t| t.failure_class == "transient").count(), 5, "{transitions:#?}");
    assert!(transitions.last().unwrap().detail.contains("attempts used up"), "{transitions:#?}");
    assert_eq!(stack.sim.tickets().len(), 5);
    assert!(stack.sim.tickets().iter().all(|t| !t.complete));

    // Requeue refusals name what was wrong and change nothing.
    let e = admin.requeue_job(RequeueJobRequest { id: 0 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = admin.requeue_job(RequeueJobRequest { id: 999_999 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = admin.requeue_dead_letters(RequeueDeadLettersRequest { printer: "nope".into() }).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("printer"), "{e:?}");
    let e = admin.list_dead_letters(ListDeadLettersRequest { limit: 5000, ..Default::default() }).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("limit"), "{e:?}");

    // The printer behaves again: the requeued job prints once, with the banner.
    assert_eq!(stack.sim.mode(), Mode::Online);
    let requeued = admin.requeue_job(RequeueJobRequest { id: job.id }).await.unwrap().into_inner().jobs;
    assert_eq!(requeued.len(), 1);
    assert_eq!((requeued[0].state, requeued[0].reprint), (JobState::Queued as i32, true));
    let tickets = stack.sim.wait_for_tickets(6, T).await.unwrap();
    stack.wait_quiet(T).await.unwrap();
    assert!(tickets[5].complete && tickets[5].text.contains(BANNER), "{}", tickets[5].text);
    let jobs = stack.jobs().await.unwrap();
    assert_eq!((jobs.len(), jobs[0].state), (1, JobState::Printed as i32));
    assert_eq!(stack.sim.tickets().len(), 6, "printed once more, not twice");
    let e = admin.requeue_job(RequeueJobRequest { id: job.id }).await.unwrap_err();
    assert!(e.code() == tonic::Code::FailedPrecondition && e.message().contains("printed"), "{e:?}");
    assert_eq!(admin.list_dead_letters(ListDeadLettersRequest::default()).await.unwrap().into_inner().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printer_away_for_a_long_time_changes_no_breaker_and_uses_no_attempt() {
    // A breaker that would open on the first counted failure: nothing here may count.
    let stack = stack(
        StackOptions::default()
            .print_env("PRINT_RECEIPT_TYPES", "kitchen")
            .print_env("PRINT_BREAKER_FAILURES", "1")
            .print_env("PRINT_OFFLINE_POLL_MS", "20"),
    )
    .await;
    stack.sim.set_mode(Mode::Offline);
    post(&stack, 1).await;
    // Hundreds of rounds of "not ready" stand in for ten minutes of an offline printer (at
    // the default 500 ms poll, ten minutes are 1,200 reads).
    let reads = stack.sim.status_queries();
    wait_until(T, "300 status reads while offline", || {
        let n = stack.sim.status_queries();
        async move { Ok(n >= reads + 300) }
    })
    .await
    .unwrap();
    // Paper out and unreachable (refused connections) are waiting too.
    stack.sim.set_mode(Mode::PaperOut);
    let reads = stack.sim.status_queries();
    wait_until(T, "status reads while out of paper", || {
        let n = stack.sim.status_queries();
        async move { Ok(n >= reads + 100) }
    })
    .await
    .unwrap();
    stack.sim.set_mode(Mode::Unreachable);
    // Unreachable: the monitor says offline; wait for a confirmation of that state.
    let admin = stack.print_admin().await.unwrap();
    wait_until(T, "printer offline", || {
        let mut admin = admin.clone();
        async move {
            let s = admin.get_status(wixprint_shared::proto::print::GetStatusRequest {}).await?.into_inner();
            Ok(s.printers[0].state == "offline")
        }
    })
    .await
    .unwrap();
    assert_eq!(breaker(&stack).await.state, "closed");
    stack.sim.set_mode(Mode::Online);
    stack.sim.wait_for_tickets(1, T).await.unwrap();
    stack.wait_quiet(T).await.unwrap();
    let jobs = stack.jobs().await.unwrap();
    assert_eq!((jobs[0].attempts, jobs[0].reprint, jobs[0].state), (1, false, JobState::Printed as i32));
    let b = breaker(&stack).await;
    assert_eq!((b.state.as_str(), b.opened, b.consecutive_failures), ("closed", 0, 0), "{b:?}");
    assert!(breaker_history(&stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resets_an_open_breaker_and_unknown_names_are_refused() {
    let stack = stack(
        StackOptions::default()
            .print_env("PRINT_RECEIPT_TYPES", "kitchen")
            .print_env("PRINT_BREAKER_FAILURES", "1")
            .print_env("PRINT_BREAKER_OPEN_MS", "600000"),
    )
    .await;
    stack.sim.drop_tickets(1);
    post(&stack, 1).await;
    wait_breaker(&stack, "open", T).await;
    let mut admin = stack.print_admin().await.unwrap();
    let e = admin.reset_breaker(ResetBreakerRequest { name: "printer:nope".into() }).await.unwrap_err();
    assert!(e.code() == tonic::Code::NotFound && e.message().contains("printer:front"), "{e:?}");
    let e = admin.reset_breaker(ResetBreakerRequest { name: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Ten minutes of open window: only the reset lets the reprint through.
    let b = admin.reset_breaker(ResetBreakerRequest { name: "printer:front".into() }).await.unwrap().into_inner();
    assert_eq!(b.state, "closed");
    let tickets = stack.sim.wait_for_tickets(2, T).await.unwrap();
    assert!(tickets[1].complete && tickets[1].text.contains(BANNER));
    let history = breaker_history(&stack).await;
    assert_eq!(history.last().map(|h| h.0.as_str()), Some("reset"), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_can_never_print_is_a_permanent_dead_letter_and_blocks_nothing() {
    let mut stack = stack(StackOptions::default().print_env("PRINT_RECEIPT_TYPES", "kitchen")).await;
    stack.sim.set_mode(Mode::Offline);
    post(&stack, 1).await;
    let admin = stack.print_admin().await.unwrap();
    wait_until(T, "a queued job", || {
        let mut admin = admin.clone();
        async move {
            let q = admin.get_queue_status(wixprint_shared::proto::print::GetQueueStatusRequest {}).await?;
            Ok(q.into_inner().waiting == 1)
        }
    })
    .await
    .unwrap();
    stack.print.terminate().await.unwrap();
    // Damage the stored order of the queued job (as a bad disk block or a bad migration would).
    {
        let db = rusqlite::Connection::open(stack.dir.path().join("print.db")).unwrap();
        let n = db.execute("UPDATE order_versions SET order_pb = x'ffffffff'", []).unwrap();
        assert_eq!(n, 1);
    }
    stack.print.start().await.unwrap();
    stack.sim.set_mode(Mode::Online);
    post(&stack, 2).await;
    let tickets = stack.sim.wait_for_tickets(1, T).await.unwrap();
    assert!(tickets[0].text.contains("20002"), "the next order prints: {}", tickets[0].text);
    let mut admin = stack.print_admin().await.unwrap();
    let dead = admin.list_dead_letters(ListDeadLettersRequest::default()).await.unwrap().into_inner();
    assert_eq!(dead.total, 1, "{dead:?}\n{}", stack.logs());
    let d = &dead.dead_letters[0];
    assert_eq!((d.reason.as_str(), d.failure_class.as_str(), d.attempts), ("permanent", "permanent", 0), "{d:?}");
    assert!(d.last_error.contains("job"), "{d:?}");
    assert_eq!(breaker(&stack).await.state, "closed", "invalid data is not the printer's failure");
}
