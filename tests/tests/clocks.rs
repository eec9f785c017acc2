//! Wall-clock steps (a Raspberry Pi without a real-time clock sets its time at boot): the real
//! wix-ingest runs under libfaketime, its wall clock is stepped by an hour while the monotonic
//! clock runs on, and no deadline stalls or fires early.
//!
//! - A held event (an update after a gap in Wix's sequence) is released after the reorder
//!   window, whether the clock stepped back an hour (a wall-clock deadline would hold it an
//!   hour) or forward an hour (a wall-clock deadline would release it at once).
//! - An outbox row waiting for its retry is delivered after the clock stepped back an hour (a
//!   wall-clock `next_attempt` would wait an hour), with wix-print's bus announcement out of
//!   the picture so only the retry can deliver it.
//! - wix-print (under libfaketime too): a ticket's reprint after an unknown outcome waits its
//!   backoff, neither hurried by a step forward nor stalled by a step back.

use std::time::{Duration, Instant};

use wixprint_shared::proto::ingest::GetStatusRequest;
use wixprint_tests::harness::{Stack, StackOptions, Step, free_port, wait_until};
use wixprint_tests::webhook::distinct_order;

const HOUR: Duration = Duration::from_secs(3600);
const WINDOW: Duration = Duration::from_millis(3000);

async fn ingest_status(stack: &Stack) -> wixprint_shared::proto::ingest::GetStatusResponse {
    let mut admin = stack.ingest_admin().await.unwrap();
    admin.get_status(GetStatusRequest {}).await.unwrap().into_inner()
}

/// Posts an update that arrives after a gap (sequence 3, nothing stored): held.
async fn post_held_update(stack: &Stack, n: u64) {
    let ev = distinct_order("order_updated.pickup.json", n);
    let body = stack.send_event(&ev).await.unwrap();
    assert!(body.contains("held"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_are_released_after_the_window_whichever_way_the_wall_clock_steps() {
    let opts = StackOptions::default()
        .fake_clock("wix-ingest")
        .ingest_env("INGEST_REORDER_WINDOW_MS", WINDOW.as_millis().to_string());
    let mut stack = Stack::start(opts).await.unwrap();

    // Back an hour: released after the window, not an hour later.
    let held_at = Instant::now();
    post_held_update(&stack, 1).await;
    assert_eq!(ingest_status(&stack).await.held_events, 1);
    stack.step_clock(HOUR, Step::Back).unwrap();
    wait_until(WINDOW + Duration::from_secs(5), "held event released after a step back", || async {
        Ok(ingest_status(&stack).await.held_events == 0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert!(held_at.elapsed() >= WINDOW, "released before its window: {:?}", held_at.elapsed());

    // Forward an hour (two from where it was): still held for the whole window, then released.
    // (Posted before the step: the webhook token would have expired an hour ahead.)
    let held_at = Instant::now();
    post_held_update(&stack, 2).await;
    stack.step_clock(2 * HOUR, Step::Forward).unwrap();
    while held_at.elapsed() < WINDOW - Duration::from_millis(500) {
        assert_eq!(ingest_status(&stack).await.held_events, 1, "released early, at {:?}", held_at.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(Duration::from_secs(5), "held event released after a step forward", || async {
        Ok(ingest_status(&stack).await.held_events == 0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert!(held_at.elapsed() >= WINDOW, "released before its window: {:?}", held_at.elapsed());

    // Both released versions reach paper.
    stack.wait_quiet(Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert_eq!(ingest_status(&stack).await.outbox_pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_retry_is_not_stalled_by_the_wall_clock_stepping_back() {
    // Backoff 1-2 s; wix-print starts later on a bus port wix-ingest does not listen to, so no
    // "wix-print is back" flush can cut the wait short: only the retry delivers.
    let opts = StackOptions::default()
        .fake_clock("wix-ingest")
        .print_stopped()
        .ingest_env("INGEST_OUTBOX_BACKOFF_MIN_MS", "1000")
        .ingest_env("INGEST_OUTBOX_BACKOFF_MAX_MS", "2000");
    let mut stack = Stack::start(opts).await.unwrap();
    stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    wait_until(Duration::from_secs(10), "a failed delivery attempt", || async {
        let st = ingest_status(&stack).await;
        Ok(st.outbox_pending == 1 && !st.outbox_last_error.is_empty())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    stack.step_clock(HOUR, Step::Back).unwrap();
    stack.print.set_env("PRINT_PUB_ADDR", format!("tcp://127.0.0.1:{}", free_port()));
    stack.print.start().await.unwrap();
    let started = Instant::now();
    wait_until(Duration::from_secs(15), "the outbox row delivered by its retry", || async {
        Ok(ingest_status(&stack).await.outbox_pending == 0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert!(started.elapsed() < Duration::from_secs(15));
    stack.sim.wait_for_tickets(3, Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
}

/// Waits until the only job is `uncertain` (its retry scheduled), and returns when that was seen.
async fn wait_uncertain(stack: &Stack) -> Instant {
    use wixprint_shared::proto::print::JobState;
    wait_until(Duration::from_secs(10), "the ticket uncertain", || async {
        Ok(stack.jobs().await?.iter().any(|j| j.state == JobState::Uncertain as i32))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_print_retry_waits_its_backoff_whichever_way_the_wall_clock_steps() {
    use wixprint_tests::sim::Mode;
    // The printer prints but never confirms (GS ( H withheld): after 500 ms the outcome is
    // unknown and the reprint waits its backoff, exactly 3 s (no jitter here).
    let backoff_floor = Duration::from_millis(2800);
    let opts = StackOptions::default()
        .fake_clock("wix-print")
        .print_env("PRINT_RECEIPT_TYPES", "kitchen")
        .print_env("PRINT_CONFIRM_MODE", "process_id")
        .print_env("PRINT_CONFIRM_TIMEOUT_MS", "500")
        .print_env("PRINT_RETRY_BACKOFF_MIN_MS", "3000")
        .print_env("PRINT_RETRY_BACKOFF_MAX_MS", "3000")
        .print_env("PRINT_RETRY_JITTER_PCT", "0");
    let mut stack = Stack::start(opts).await.unwrap();
    let t = Duration::from_secs(20);

    // Forward an hour: a wall-clock retry time would be due at once.
    stack.sim.set_mode(Mode::WithholdConfirm);
    stack.send_event(&distinct_order("order_created.pickup.json", 1)).await.unwrap();
    stack.sim.wait_for_tickets(1, t).await.unwrap();
    let uncertain_at = wait_uncertain(&stack).await;
    stack.sim.set_mode(Mode::Online);
    stack.step_clock(HOUR, Step::Forward).unwrap();
    let tickets = stack.sim.wait_for_tickets(2, t).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert!(tickets[1].text.contains("KOPIE"), "{}", tickets[1].text);
    assert!(uncertain_at.elapsed() >= backoff_floor, "reprinted early, after {:?}", uncertain_at.elapsed());
    stack.wait_quiet(t).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));

    // Back two hours: a wall-clock retry time would lie an hour ahead.
    stack.sim.set_mode(Mode::WithholdConfirm);
    stack.send_event(&distinct_order("order_created.pickup.json", 2)).await.unwrap();
    stack.sim.wait_for_tickets(3, t).await.unwrap();
    let uncertain_at = wait_uncertain(&stack).await;
    stack.sim.set_mode(Mode::Online);
    stack.step_clock(2 * HOUR, Step::Back).unwrap();
    let tickets = stack.sim.wait_for_tickets(4, t).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert!(tickets[3].text.contains("KOPIE") && tickets[3].text.contains("20002"), "{}", tickets[3].text);
    assert!(uncertain_at.elapsed() >= backoff_floor, "reprinted early, after {:?}", uncertain_at.elapsed());
    stack.wait_quiet(t).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
}
