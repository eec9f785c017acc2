//! The Wix API's failure classes, retries and circuit breaker (issue 11), black-box with the
//! real binaries against the fake Wix API: a 503 storm uses 3 tries per run with growing
//! delays and opens the `wix-api` breaker (ListBreakers, a `breaker` row in
//! ListHealingEvents); while it is open no request reaches Wix; after the window the next call
//! is the probe, and two good calls close it. `ResetBreaker` closes it at once. A Wix that
//! cannot be reached at all is waiting: no try used, no breaker change. Bad retry or breaker
//! settings exit 78 naming the variable.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wixprint_shared::proto::events::{Breaker, ListBreakersRequest, ListHealingEventsRequest, ResetBreakerRequest};
use wixprint_shared::proto::ingest::{GetConnectivityRequest, SyncNowRequest};
use wixprint_shared::proto::print::GetStatusRequest as PrintStatusRequest;
use wixprint_tests::fake_wix::{FakeWix, Fault, RecordedRequest, order_from_template};
use wixprint_tests::harness::{Stack, StackOptions, bin_path, wait_until};
use wixprint_tests::webhook::{KeyPair, fixture, order_mut};

const T: Duration = Duration::from_secs(60);
const KEY: &str = "IST.test-api-key";
const SITE: &str = "site-0001";
const WINDOW: Duration = Duration::from_millis(2_000);

fn place(fake: &FakeWix, i: u64) {
    let mut ev = fixture("order_created.pickup.json");
    let template: Value = order_mut(&mut ev).unwrap().clone();
    let id = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    fake.upsert_order(order_from_template(&template, &id, &i.to_string(), "APPROVED", &now));
}

/// Sync only on demand (the interval is an hour), retries 200 ms then 400 ms (no jitter, so
/// the growth is measurable), breaker 3 failures → open `window` → probe → closed after 2.
async fn stack(fake: &FakeWix, window: Duration) -> Stack {
    Stack::start(
        StackOptions::default()
            .wix_api(&fake.base_url(), KEY, SITE)
            .ingest_env("ORDER_SYNC_INTERVAL_SECS", "3600")
            .ingest_env("INGEST_WIX_RETRY_FIRST_MS", "200")
            .ingest_env("INGEST_WIX_RETRY_FACTOR", "2")
            .ingest_env("INGEST_WIX_RETRY_MAX_MS", "5000")
            .ingest_env("INGEST_WIX_RETRY_JITTER_PCT", "0")
            .ingest_env("INGEST_WIX_BREAKER_OPEN_MS", window.as_millis().to_string()),
    )
    .await
    .expect("stack starts")
}

async fn wix_breaker(stack: &Stack) -> anyhow::Result<Breaker> {
    let mut ingest = stack.ingest_admin().await?;
    let all = ingest.list_breakers(ListBreakersRequest {}).await?.into_inner().breakers;
    all.iter().find(|b| b.name == "wix-api").cloned().ok_or_else(|| anyhow::anyhow!("no wix-api breaker in {all:?}"))
}

async fn wait_breaker(stack: &Stack, state: &'static str) -> Breaker {
    wait_until(T, &format!("wix-api breaker {state}"), || async { Ok(wix_breaker(stack).await?.state == state) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    wix_breaker(stack).await.unwrap()
}

/// `(action, before, after)` of the wix-api breaker's recorded changes, oldest first.
async fn breaker_events(stack: &Stack) -> Vec<(String, String, String)> {
    let mut ingest = stack.ingest_admin().await.unwrap();
    let req = ListHealingEventsRequest { kind: "breaker".into(), ..Default::default() };
    let mut events = ingest.list_healing_events(req).await.unwrap().into_inner().events;
    events.reverse();
    events.into_iter().filter(|e| e.subject == "wix-api").map(|e| (e.action, e.before, e.after)).collect()
}

fn searches(fake: &FakeWix) -> Vec<RecordedRequest> {
    fake.requests().into_iter().filter(|r| r.path.ends_with("/orders/search")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_storm_opens_the_breaker_nothing_reaches_wix_while_open_and_a_probe_plus_two_close_it() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    place(&fake, 80_001);
    fake.inject(Fault::Unavailable, 3);
    let stack = stack(&fake, WINDOW).await;

    // The start-up run: three tries, all 503, and the breaker opens on the third.
    let open = wait_breaker(&stack, "open").await;
    assert_eq!((open.opened, open.failure_threshold), (1, 3), "{open:?}");
    assert!(open.reason.contains("503"), "{open:?}");
    assert!(open.retry_at.is_some(), "{open:?}");
    let storm = searches(&fake);
    assert_eq!(storm.iter().map(|r| r.status).collect::<Vec<_>>(), [503, 503, 503], "{storm:?}");
    let (first, second) = (storm[1].at - storm[0].at, storm[2].at - storm[1].at);
    // 200 ms then 400 ms (jitter 0); a loaded machine only makes them longer.
    assert!(first >= Duration::from_millis(190), "first retry after {first:?}");
    assert!(second >= Duration::from_millis(390) && second > first, "delays {first:?} then {second:?}");
    let events = breaker_events(&stack).await;
    assert_eq!(events, [("opened".into(), "closed".into(), "open".into())]);
    // Published on the bus with the internet state: wix-print sees it.
    let print = stack.print_admin().await.unwrap();
    wait_until(T, "wix-print sees the open wix-api breaker", || {
        let mut print = print.clone();
        async move {
            let peer = print.get_status(PrintStatusRequest {}).await?.into_inner().peer.unwrap_or_default();
            let has = |kind: &str, name: &str, state: &str| {
                peer.components.iter().any(|c| c.kind == kind && c.name == name && c.state == state)
            };
            Ok(has("breaker", "wix-api", "open") && peer.components.iter().any(|c| c.kind == "internet"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));

    // While open: SyncNow answers at once with the reason and makes no request.
    let mut ingest = stack.ingest_admin().await.unwrap();
    for _ in 0..3 {
        let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
        if wix_breaker(&stack).await.unwrap().state != "open" {
            break; // the window ended meanwhile (a slow machine); checked below
        }
        assert_eq!(st.state, "breaker_open", "{st:?}");
        assert!(st.detail.contains("breaker open until") && st.detail.contains("503"), "{st:?}");
    }
    let opened_at = storm[2].at;
    // After the window the sync probes by itself (it slept until then): one request, good.
    let half = wait_breaker(&stack, "half_open").await;
    assert_eq!(half.successes, 0, "the probe itself is not one of the good calls: {half:?}");
    fake.wait_for_requests(4, T).await.unwrap();
    let after = searches(&fake);
    assert_eq!(after.len(), 4, "one probe after the window: {:?}", after.iter().map(|r| r.status).collect::<Vec<_>>());
    let waited = after[3].at - opened_at;
    assert!(waited >= WINDOW - Duration::from_millis(50), "probe {waited:?} after opening");
    assert_eq!(after[3].status, 200);
    // The order the probe found is stored and printed.
    stack.sim.wait_for_tickets(3, T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));

    // Two good calls close it.
    for _ in 0..2 {
        let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
        assert_eq!(st.state, "idle", "{st:?}");
    }
    let closed = wait_breaker(&stack, "closed").await;
    assert_eq!(closed.opened, 1, "{closed:?}");
    assert_eq!(searches(&fake).len(), 6, "3 failures + probe + 2 good calls");
    let events = breaker_events(&stack).await;
    let actions: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(actions, ["opened", "half_open", "closed"], "{events:?}");
    assert_eq!(stack.sim.tickets().len(), 3, "one receipt set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_response_is_transient_and_reset_breaker_closes_it_at_once() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    place(&fake, 80_101);
    fake.inject(Fault::ResetMidResponse, 3);
    // A window far longer than the test: only ResetBreaker can close it.
    let stack = stack(&fake, Duration::from_secs(600)).await;
    let open = wait_breaker(&stack, "open").await;
    assert_eq!(searches(&fake).len(), 3);
    assert!(open.reason.contains("Wix"), "{open:?}");

    let mut ingest = stack.ingest_admin().await.unwrap();
    let err = ingest.reset_breaker(ResetBreakerRequest { name: "wix-apj".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().starts_with("name:") && err.message().contains("wix-api"), "{err:?}");
    let err = ingest.reset_breaker(ResetBreakerRequest { name: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("name:"), "{err:?}");
    assert_eq!(wix_breaker(&stack).await.unwrap().state, "open", "a refused reset changes nothing");

    let reset = ingest.reset_breaker(ResetBreakerRequest { name: "wix-api".into() }).await.unwrap().into_inner();
    assert_eq!(reset.state, "closed", "{reset:?}");
    let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
    assert_eq!(st.state, "idle", "{st:?}");
    assert_eq!(searches(&fake).len(), 4);
    stack.sim.wait_for_tickets(3, T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let actions: Vec<String> = breaker_events(&stack).await.into_iter().map(|e| e.0).collect();
    assert_eq!(actions, ["opened", "reset"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_wix_is_waiting_no_try_used_no_breaker_change() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    let stack = stack(&fake, WINDOW).await;
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
    assert_eq!(st.state, "idle", "{st:?}");
    // Wix (its address) refuses connections: nothing is ever sent.
    fake.shutdown();
    wait_until(T, "the fake Wix refusing connections", || async {
        Ok(tokio::net::TcpStream::connect(fake.base_url().trim_start_matches("http://")).await.is_err())
    })
    .await
    .unwrap();
    for _ in 0..5 {
        let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
        assert_eq!(st.state, "waiting", "{st:?}");
        assert!(st.detail.contains("could not reach Wix"), "{st:?}");
    }
    let b = wix_breaker(&stack).await.unwrap();
    assert_eq!((b.state.as_str(), b.consecutive_failures, b.opened), ("closed", 0, 0), "{b:?}");
    assert!(breaker_events(&stack).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_internet_is_offline_a_lost_connection_is_waiting() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    let mut stack = stack(&fake, WINDOW).await;
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
    assert_eq!(st.state, "idle", "{st:?}");
    // The internet monitor says offline: connections cut mid-answer are no evidence against Wix.
    stack.cut_internet().await;
    wait_until(T, "internet offline", || {
        let mut ingest = ingest.clone();
        async move {
            let c = ingest.get_connectivity(GetConnectivityRequest {}).await?.into_inner();
            Ok(c.components.iter().any(|c| c.kind == "internet" && c.state == "offline"))
        }
    })
    .await
    .unwrap();
    let before = searches(&fake).len();
    fake.inject(Fault::ResetMidResponse, 1);
    let st = ingest.sync_now(SyncNowRequest {}).await.unwrap().into_inner().status.unwrap();
    assert_eq!(st.state, "waiting", "{st:?}");
    assert!(st.detail.contains("the internet is offline"), "{st:?}");
    assert_eq!(searches(&fake).len(), before + 1, "one try, then the run waits");
    let b = wix_breaker(&stack).await.unwrap();
    assert_eq!((b.state.as_str(), b.consecutive_failures, b.opened), ("closed", 0, 0), "{b:?}");
}

/// Runs `wix-ingest --check-config` with the minimum it needs plus `extra`.
fn check_config(extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("wix.pem");
    std::fs::write(&pem, &KeyPair::shared().public_pem).unwrap();
    let out = Command::new(bin_path("wix-ingest"))
        .arg("--check-config")
        .env_clear()
        .env("WIX_WEBHOOK_PUBLIC_KEY_FILE", &pem)
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn bad_retry_or_breaker_settings_exit_78_naming_the_variable() {
    let (code, out) = check_config(&[]);
    assert_eq!(code, Some(0), "{out}");
    for (var, value) in [
        ("INGEST_WIX_BREAKER_FAILURES", "0"),
        ("INGEST_WIX_BREAKER_OPEN_MS", "soon"),
        ("INGEST_WIX_BREAKER_SUCCESSES", "0"),
        ("INGEST_WIX_RETRY_FIRST_MS", "0"),
        ("INGEST_WIX_RETRY_FACTOR", "0.5"),
        ("INGEST_WIX_RETRY_MAX_MS", "7200000"),
        ("INGEST_WIX_RETRY_JITTER_PCT", "150"),
        ("INGEST_WIX_RETRY_TRIES", "0"),
    ] {
        let (code, out) = check_config(&[(var, value)]);
        assert_eq!(code, Some(78), "{var}={value}: {out}");
        assert!(out.contains(var), "{var}={value}: {out}");
    }
}
