//! The order sync (polling safety net) against the fake Wix API, black-box with the real
//! binaries: it finds what webhooks missed, pages through backlogs, survives rate limits,
//! shows auth errors instead of hammering (a permanent failure: the wix-api breaker stays
//! closed), and never double-prints with webhooks. The breaker itself: `wix_breaker.rs`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use wixprint_shared::proto::events::{Breaker, ListBreakersRequest, ListHealingEventsRequest};
use wixprint_shared::proto::ingest::{GetStatusRequest, SyncNowRequest};
use wixprint_tests::fake_wix::{FakeWix, Fault, order_from_template};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::sim::Ticket;
use wixprint_tests::webhook::{fixture, order_mut};

const T: Duration = Duration::from_secs(120);
const KEY: &str = "IST.test-api-key";
const SITE: &str = "site-0001";

fn template() -> Value {
    let mut ev = fixture("order_created.pickup.json");
    order_mut(&mut ev).unwrap().clone()
}

fn now_rfc3339(offset_ms: i64) -> String {
    let ts = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(offset_ms);
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Places `n` orders numbered from `first` with `status`; returns their numbers.
fn place(fake: &FakeWix, first: u64, n: u64, status: &str) -> Vec<String> {
    let t = template();
    (first..first + n)
        .map(|i| {
            let number = i.to_string();
            let id = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
            fake.upsert_order(order_from_template(&t, &id, &number, status, &now_rfc3339(-(i as i64 % 1000))));
            number
        })
        .collect()
}

/// Tickets per order number (order numbers appear on every ticket), without banner copies.
fn per_order(tickets: &[Ticket]) -> HashMap<String, usize> {
    per_order_where(tickets, |t| !t.text.contains("KOPIE"))
}

fn per_order_where(tickets: &[Ticket], keep: impl Fn(&Ticket) -> bool) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for t in tickets.iter().filter(|t| keep(t)) {
        let number = t.text.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() >= 5).unwrap_or("?").to_owned();
        *m.entry(number).or_insert(0) += 1;
    }
    m
}

async fn stack_with(fake: &FakeWix, key: &str, interval_secs: u32) -> Stack {
    Stack::start(
        StackOptions::default()
            .wix_api(&fake.base_url(), key, SITE)
            .ingest_env("ORDER_SYNC_INTERVAL_SECS", interval_secs.to_string()),
    )
    .await
    .expect("stack starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_prints_250_approved_orders_once_and_never_unapproved_ones() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    let approved = place(&fake, 30_000, 250, "APPROVED");
    let others: Vec<String> = [("INITIALIZED", 40_000), ("PENDING", 41_000), ("CANCELED", 42_000)]
        .into_iter()
        .flat_map(|(status, first)| place(&fake, first, 5, status))
        .collect();
    let stack = stack_with(&fake, KEY, 2).await;
    let tickets = stack.sim.wait_for_tickets(750, T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    stack.wait_quiet(T).await.unwrap();
    let counts = per_order(&stack.sim.tickets());
    assert_eq!(stack.sim.tickets().len(), 750, "{:?}", counts.iter().filter(|(_, c)| **c != 3).collect::<Vec<_>>());
    for n in &approved {
        assert_eq!(counts.get(n), Some(&3), "order {n}");
    }
    for n in &others {
        assert!(!counts.contains_key(n), "order {n} must not print");
    }
    assert!(tickets.iter().all(|t| t.complete));
    // Paged at 100: at least three search pages, later pages by cursor only.
    let searches: Vec<_> = fake.requests().into_iter().filter(|r| r.path.ends_with("/orders/search")).collect();
    assert!(searches.len() >= 3);
    assert!(searches.iter().all(|r| r.header("authorization") == Some(KEY) && r.header("wix-site-id") == Some(SITE)));
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(GetStatusRequest {}).await.unwrap().into_inner().sync.unwrap();
    // Runs repeat every 2 s: it may be between runs or in one, never in trouble.
    assert!(matches!(st.state.as_str(), "idle" | "running") && st.last_success.is_some(), "{st:?}");
    assert!(st.orders_applied >= 250 && st.pages >= 3, "{st:?}");
}

/// The wix-api breaker as `IngestAdmin/ListBreakers` shows it.
async fn wix_breaker(stack: &Stack) -> anyhow::Result<Breaker> {
    let mut ingest = stack.ingest_admin().await?;
    let all = ingest.list_breakers(ListBreakersRequest {}).await?.into_inner().breakers;
    all.into_iter().find(|b| b.name == "wix-api").ok_or_else(|| anyhow::anyhow!("no wix-api breaker"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rides_out_twenty_rate_limits_without_losing_a_page() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    let numbers = place(&fake, 50_000, 150, "APPROVED");
    fake.inject(Fault::RateLimited { retry_after_secs: 0 }, 20);
    // 3 tries per run and a breaker that opens after 3 (for 500 ms, see the harness): the
    // next runs (every second) continue until Wix lets the search through.
    let stack = stack_with(&fake, KEY, 1).await;
    stack.sim.wait_for_tickets(450, T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    stack.wait_quiet(T).await.unwrap();
    let counts = per_order(&stack.sim.tickets());
    assert!(numbers.iter().all(|n| counts.get(n) == Some(&3)));
    assert_eq!(stack.sim.tickets().len(), 450);
    assert_eq!(fake.requests().iter().filter(|r| r.status == 429).count(), 20);
    // 429 is transient: the breaker opened; good runs close it again.
    wait_until(T, "the wix-api breaker closed again", || async {
        let b = wix_breaker(&stack).await?;
        Ok(b.opened >= 1 && b.state == "closed")
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_api_key_shows_an_error_instead_of_hammering() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    place(&fake, 60_000, 3, "APPROVED");
    let stack = stack_with(&fake, "wrong-key", 1).await;
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
    assert_eq!(st.state, "error", "{st:?}");
    assert!(st.detail.contains("401"), "{st:?}");
    // The interval is 1 s, but after a refusal it waits ten intervals: no hammering.
    let calls = fake.search_calls();
    assert!(calls <= 3, "{calls} searches");
    wait_until(Duration::from_secs(5), "status visible in GetStatus", || {
        let mut ingest = ingest.clone();
        async move {
            Ok(ingest.get_status(GetStatusRequest {}).await?.into_inner().sync.is_some_and(|s| s.state == "error"))
        }
    })
    .await
    .unwrap();
    assert!(stack.sim.tickets().is_empty());
    // Permanent: the key, not Wix being sick. The breaker counts nothing and records nothing.
    let b = wix_breaker(&stack).await.unwrap();
    assert_eq!((b.state.as_str(), b.consecutive_failures, b.opened), ("closed", 0, 0), "{b:?}");
    let events = ingest.list_healing_events(ListHealingEventsRequest::default()).await.unwrap().into_inner().events;
    assert!(events.is_empty(), "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_is_off_without_a_key_and_says_so() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(GetStatusRequest {}).await.unwrap().into_inner().sync.unwrap();
    assert_eq!(st.state, "off");
    assert!(st.detail.contains("WIX_API_KEY_FILE"), "{st:?}");
    let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
    assert_eq!(st.state, "off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_and_sync_together_across_restarts_print_one_set_per_order() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    let numbers = place(&fake, 70_000, 40, "APPROVED");
    let mut stack = stack_with(&fake, KEY, 1).await;
    // The same orders arrive by webhook, concurrently with the sync.
    let poster = stack.poster();
    let events: Vec<String> = fake
        .orders()
        .into_iter()
        .map(|order| {
            let mut ev = fixture("order_created.pickup.json");
            ev["id"] = json!(format!("evt-{}", order["id"].as_str().unwrap()));
            ev["entityId"] = order["id"].clone();
            ev["createdEvent"]["entity"] = order;
            stack.keys.sign_event(&ev)
        })
        .collect();
    let sender = tokio::spawn(async move {
        for e in events {
            let (status, body) = poster.post(e).await.unwrap();
            assert_eq!(status, 200, "{body}");
        }
    });
    stack.sim.wait_for_tickets(30, T).await.unwrap();
    stack.print.kill().await;
    stack.ingest.kill().await;
    sender.await.ok();
    stack.print.start().await.unwrap();
    stack.ingest.start().await.unwrap();
    // Everything again, after the restarts: still one set each.
    let mut ingest = stack.ingest_admin().await.unwrap();
    ingest.sync_now(SyncNowRequest {}).await.unwrap();
    // A ticket caught by the kill may only ever print with the KOPIE banner (the kill came
    // before its bytes left), so count every ticket here and plain ones below.
    wait_until(T, "every order on paper", || {
        let t = stack.sim.tickets();
        let numbers = numbers.clone();
        async move {
            let c = per_order_where(&t, |_| true);
            Ok(numbers.iter().all(|n| c.get(n).copied().unwrap_or(0) >= 3))
        }
    })
    .await
    .unwrap_or_else(|e| {
        let all = stack.sim.tickets();
        let c = per_order(&all);
        let short: Vec<_> = numbers.iter().filter(|n| c.get(*n).copied().unwrap_or(0) < 3).collect();
        let texts: Vec<_> = all
            .iter()
            .filter(|t| short.iter().any(|n| t.text.contains(n.as_str())))
            .map(|t| (t.complete, &t.text))
            .collect();
        panic!("{e}\nshort: {short:?}\n{texts:#?}\n{} tickets", all.len())
    });
    stack.wait_quiet(T).await.unwrap();
    let plain = per_order(&stack.sim.tickets());
    for n in &numbers {
        assert!(plain.get(n).copied().unwrap_or(0) <= 3, "order {n} printed twice without banner: {plain:?}");
    }
    let jobs = stack.jobs().await.unwrap();
    assert_eq!(jobs.len(), 3 * numbers.len(), "one receipt set per order");
    assert!(jobs.iter().all(|j| j.state == wixprint_shared::proto::print::JobState::Printed as i32));
    assert!(jobs.iter().filter(|j| j.reprint).count() <= 1, "only the ticket in flight at the kill may be reprinted");
}
