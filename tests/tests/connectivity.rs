//! Offline and recovery, black-box with the real binaries: wix-ingest watches "the internet"
//! (a local listener the harness can cut) and wix-print over the connectivity bus, records
//! what changes, and reacts: a sync run as soon as the internet returns, an outbox flush as
//! soon as wix-print is back. The harness runs the bus with a 200 ms heartbeat and 1 s
//! staleness, and probes the internet every 100 ms (debounce 2).

use std::time::{Duration, Instant};

use serde_json::Value;
use wixprint_shared::proto::events::ConnectivityEvent;
use wixprint_shared::proto::ingest::{
    CheckConnectivityRequest, GetConnectivityRequest, GetConnectivityResponse, GetStatusRequest,
    ListConnectivityEventsRequest,
};
use wixprint_tests::fake_wix::{FakeWix, order_from_template};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::webhook::{fixture, order_mut};

const T: Duration = Duration::from_secs(30);
const PICKUP: &str = "order_created.pickup.json";
/// The harness's BUS_STALE_MS.
const STALE: Duration = Duration::from_millis(1000);
const KEY: &str = "IST.test-api-key";
const SITE: &str = "site-0001";

async fn stack(opts: StackOptions) -> Stack {
    Stack::start(opts).await.expect("stack starts")
}

async fn connectivity(ingest: &mut wixprint_tests::harness::IngestAdmin) -> anyhow::Result<GetConnectivityResponse> {
    Ok(ingest.get_connectivity(GetConnectivityRequest {}).await?.into_inner())
}

fn internet_state(c: &GetConnectivityResponse) -> &str {
    c.components.iter().find(|c| c.kind == "internet").map_or("", |c| c.state.as_str())
}

fn peer_state(c: &GetConnectivityResponse) -> &str {
    c.peer.as_ref().map_or("", |p| p.state.as_str())
}

/// Polls GetConnectivity until `pred` holds; returns how long that took and the answer.
async fn wait_connectivity(
    stack: &Stack,
    within: Duration,
    what: &str,
    pred: impl Fn(&GetConnectivityResponse) -> bool,
) -> (Duration, GetConnectivityResponse) {
    let ingest = stack.ingest_admin().await.unwrap();
    let started = Instant::now();
    let pred = &pred;
    wait_until(within, what, || {
        let mut ingest = ingest.clone();
        async move { Ok(pred(&connectivity(&mut ingest).await?)) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let took = started.elapsed();
    (took, connectivity(&mut ingest.clone()).await.unwrap())
}

async fn internet_events(ingest: &mut wixprint_tests::harness::IngestAdmin) -> Vec<ConnectivityEvent> {
    let req = ListConnectivityEventsRequest { kind: "internet".into(), name: "internet".into(), limit: 10 };
    ingest.list_connectivity_events(req).await.unwrap().into_inner().events
}

async fn sync_runs(ingest: &mut wixprint_tests::harness::IngestAdmin) -> anyhow::Result<(u64, String)> {
    let sync = ingest.get_status(GetStatusRequest {}).await?.into_inner().sync.unwrap_or_default();
    Ok((sync.runs, sync.state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_shows_the_internet_online_and_wix_print_as_a_live_peer() {
    let stack = stack(StackOptions::default()).await;
    let (took, c) = wait_connectivity(&stack, Duration::from_secs(5), "internet online and wix-print live", |c| {
        internet_state(c) == "online" && peer_state(c) == "live"
    })
    .await;
    eprintln!("internet online and wix-print live {took:?} after ingest was ready");
    let internet = &c.components[0];
    assert_eq!((internet.kind.as_str(), internet.name.as_str()), ("internet", "internet"));
    assert!(internet.since.is_some());
    assert_eq!(internet.detail, "1 of 1 probes connected");
    let peer = c.peer.unwrap();
    assert_eq!(peer.source, "wix-print");
    assert!(!peer.instance.is_empty() && peer.last_seen.is_some() && peer.messages > 0, "{peer:?}");

    let mut ingest = stack.ingest_admin().await.unwrap();
    let status = ingest.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.connectivity.len(), 1);
    assert_eq!(status.connectivity[0].state, "online");
    assert_eq!(status.peer.map(|p| p.state).as_deref(), Some("live"));

    let checked = ingest.check_connectivity(CheckConnectivityRequest {}).await.unwrap().into_inner();
    assert_eq!(internet_state(&checked), "online");
    assert_eq!(peer_state(&checked), "live");

    let events = internet_events(&mut ingest).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].from_state.as_str(), events[0].to_state.as_str()), ("unknown", "online"));
    assert!(events[0].ended_at.is_none());

    let err = ingest
        .list_connectivity_events(ListConnectivityEventsRequest { limit: 1001, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("limit"), "{err:?}");
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn template() -> Value {
    let mut ev = fixture(PICKUP);
    order_mut(&mut ev).unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_internet_is_recorded_and_its_return_runs_the_sync_at_once() {
    let fake = FakeWix::start(KEY, SITE).await.unwrap();
    let mut stack = stack(
        StackOptions::default().wix_api(&fake.base_url(), KEY, SITE).ingest_env("ORDER_SYNC_INTERVAL_SECS", "3600"),
    )
    .await;
    let mut ingest = stack.ingest_admin().await.unwrap();
    wait_connectivity(&stack, Duration::from_secs(5), "internet online", |c| internet_state(c) == "online").await;
    // The start-up sync run has finished; the next one is an hour away.
    wait_until(T, "the start-up sync run", || {
        let mut ingest = ingest.clone();
        async move { Ok(matches!(sync_runs(&mut ingest).await?, (1, s) if s == "idle")) }
    })
    .await
    .unwrap();

    let cut = Instant::now();
    stack.cut_internet().await;
    let (took, c) =
        wait_connectivity(&stack, Duration::from_secs(5), "internet offline", |c| internet_state(c) == "offline").await;
    eprintln!("internet offline {took:?} after the cut (interval 100 ms, debounce 2)");
    assert!(cut.elapsed() < Duration::from_secs(2), "offline took {:?}", cut.elapsed());
    let port = stack.internet.addr().port().to_string();
    assert!(c.components[0].detail.contains(&port), "{:?}", c.components[0]);
    let events = internet_events(&mut ingest).await;
    let offline = &events[0];
    assert_eq!((offline.from_state.as_str(), offline.to_state.as_str()), ("online", "offline"), "{events:?}");
    assert!(offline.ended_at.is_none(), "the current state's row is open");
    assert!(offline.detail.starts_with("0 of 1 probes connected; failed:"), "{}", offline.detail);
    assert!(offline.detail.contains(&port) && offline.detail.to_lowercase().contains("refused"), "{}", offline.detail);
    // wix-print hears about it on the bus (its view of ingest is not ingest's to assert here).
    assert_eq!(sync_runs(&mut ingest).await.unwrap().0, 1, "no sync run while offline");

    // An order placed while "offline" is found by the sync run the return starts.
    let number = "80001";
    fake.upsert_order(order_from_template(
        &template(),
        "00080001-0000-4000-8000-000000080001",
        number,
        "APPROVED",
        &now_rfc3339(),
    ));

    let restored = Instant::now();
    stack.restore_internet().await.unwrap();
    let (took, _) =
        wait_connectivity(&stack, Duration::from_secs(5), "internet online again", |c| internet_state(c) == "online")
            .await;
    eprintln!("internet online {took:?} after the restore");
    wait_until(Duration::from_secs(5), "a sync run started by the return", || {
        let mut ingest = ingest.clone();
        async move { Ok(sync_runs(&mut ingest).await?.0 >= 2) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let tickets = stack.sim.wait_for_tickets(3, Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("sync run and 3 tickets {:?} after the restore (sync interval 1 h)", restored.elapsed());
    assert!(tickets.iter().all(|t| t.text.contains(number)), "the order placed while offline printed");

    let events = internet_events(&mut ingest).await;
    let (back, down) = (&events[0], &events[1]);
    assert_eq!((back.from_state.as_str(), back.to_state.as_str()), ("offline", "online"), "{events:?}");
    assert_eq!(back.detail, "1 of 1 probes connected");
    assert_eq!((down.from_state.as_str(), down.to_state.as_str()), ("online", "offline"));
    assert!(down.ended_at.is_some(), "the offline row is closed");
    assert_eq!(down.ended_at, back.started_at);
    // Confirming "online" again takes two 100 ms rounds at least.
    assert!(down.duration_ms >= 100 && down.duration_ms < 10_000, "offline for {} ms", down.duration_ms);
    assert_eq!(events.len(), 3, "unknown→online, online→offline, offline→online: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_wix_print_is_seen_and_its_return_flushes_the_outbox_at_once() {
    // A long outbox backoff: only the bus reaction can explain a quick delivery.
    let mut stack = stack(
        StackOptions::default()
            .ingest_env("INGEST_OUTBOX_BACKOFF_MIN_MS", "20000")
            .ingest_env("INGEST_OUTBOX_BACKOFF_MAX_MS", "60000"),
    )
    .await;
    let (_, c) = wait_connectivity(&stack, Duration::from_secs(5), "wix-print live", |c| peer_state(c) == "live").await;
    let first_instance = c.peer.unwrap().instance;

    let killed = Instant::now();
    stack.print.kill().await;
    let (took, c) = wait_connectivity(&stack, STALE * 4, "wix-print unknown", |c| peer_state(c) == "unknown").await;
    eprintln!("wix-print unknown {took:?} after the kill (BUS_STALE_MS {STALE:?})");
    assert!(killed.elapsed() < STALE + Duration::from_millis(1500), "unknown after {:?}", killed.elapsed());
    let peer = c.peer.unwrap();
    assert_eq!(peer.source, "wix-print", "the last known peer stays named");

    // An order arriving meanwhile is acknowledged and waits in the outbox, backing off.
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();
    wait_until(T, "a failed delivery attempt", || {
        let mut ingest = ingest.clone();
        async move { Ok(!ingest.get_status(GetStatusRequest {}).await?.into_inner().outbox_last_error.is_empty()) }
    })
    .await
    .unwrap();
    assert_eq!(ingest.get_status(GetStatusRequest {}).await.unwrap().into_inner().outbox_pending, 1);
    assert!(stack.sim.tickets().is_empty());

    stack.print.start().await.unwrap();
    let restarted = Instant::now();
    let tickets = stack
        .sim
        .wait_for_tickets(3, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    eprintln!("3 tickets {:?} after wix-print was ready again (outbox backoff ≥ 20 s)", restarted.elapsed());
    assert_eq!(tickets.len(), 3);
    let (_, c) =
        wait_connectivity(&stack, Duration::from_secs(5), "wix-print live again", |c| peer_state(c) == "live").await;
    let peer = c.peer.unwrap();
    assert_ne!(peer.instance, first_instance, "a new wix-print instance");
    assert!(peer.restarts_seen >= 1, "{peer:?}");
    stack.wait_quiet(T).await.unwrap();
    let st = ingest.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.outbox_pending, st.outbox_delivered), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wix_print_ingest_starts_reports_the_peer_unknown_and_takes_webhooks() {
    let stack = stack(StackOptions::default().print_stopped()).await;
    let (_, c) =
        wait_connectivity(&stack, Duration::from_secs(5), "internet online", |c| internet_state(c) == "online").await;
    assert_eq!(peer_state(&c), "unknown");
    let peer = c.peer.unwrap();
    assert!(peer.source.is_empty() && peer.instance.is_empty() && peer.messages == 0, "never heard: {peer:?}");

    stack.send_event(&fixture(PICKUP)).await.unwrap();
    let mut ingest = stack.ingest_admin().await.unwrap();
    let st = ingest.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((st.orders, st.outbox_pending), (1, 1));
    assert_eq!(st.peer.map(|p| p.state).as_deref(), Some("unknown"));
    assert_eq!(st.connectivity[0].state, "online");
}

/// wix-print's view of wix-ingest over the bus: a late subscriber (wix-print started after
/// wix-ingest) sees it live with its internet state; a killed wix-ingest turns `unknown` after
/// the staleness time; restarted, it is live again with a new instance. Printing never waits
/// for any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wix_print_sees_ingest_late_killed_and_restarted() {
    use wixprint_shared::proto::print::GetStatusRequest as PrintStatusRequest;
    let mut stack = stack(StackOptions::default().print_stopped()).await;
    stack.print.start().await.unwrap();
    let print = stack.print_admin().await.unwrap();
    let peer = || {
        let mut print = print.clone();
        async move {
            let s = print.get_status(PrintStatusRequest {}).await?.into_inner();
            anyhow::Ok(s.peer.unwrap_or_default())
        }
    };
    let live_with_internet = |p: &wixprint_shared::proto::events::PeerStatus| {
        p.state == "live"
            && p.source == "wix-ingest"
            && p.components.iter().any(|c| c.kind == "internet" && c.state == "online")
    };
    wait_until(T, "wix-print sees wix-ingest live", || async { Ok(live_with_internet(&peer().await?)) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let first = peer().await.unwrap().instance;

    stack.ingest.kill().await;
    let killed = Instant::now();
    wait_until(T, "wix-ingest unknown", || async { Ok(peer().await?.state == "unknown") }).await.unwrap();
    assert!(killed.elapsed() >= STALE / 2, "unknown only after the staleness time, not at once");

    stack.ingest.start().await.unwrap();
    wait_until(T, "wix-ingest live again", || async { Ok(live_with_internet(&peer().await?)) }).await.unwrap();
    let again = peer().await.unwrap();
    assert_ne!(again.instance, first, "a restart is a new instance");
    assert!(again.restarts_seen >= 1, "{again:?}");

    // And an order still goes all the way through.
    stack.send_event(&fixture(PICKUP)).await.unwrap();
    stack.sim.wait_for_tickets(3, T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_bus_is_two_unix_sockets_in_the_shared_runtime_directory() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    // As systemd's RuntimeDirectory= gives both units; no bus address configured (an empty
    // value is unset, so the harness's TCP addresses are dropped).
    let runtime = tempfile::tempdir().unwrap();
    let dir = runtime.path().display().to_string();
    let mut opts = StackOptions::default();
    for var in ["INGEST_PUB_ADDR", "PRINT_PUB_ADDR"] {
        opts = opts.ingest_env(var, "").print_env(var, "");
    }
    let opts = opts.ingest_env("RUNTIME_DIRECTORY", dir.clone()).print_env("RUNTIME_DIRECTORY", dir);
    let stack = stack(opts).await;
    wait_connectivity(&stack, Duration::from_secs(5), "wix-print live over ipc", |c| peer_state(c) == "live").await;
    for name in ["ingest-bus.sock", "print-bus.sock"] {
        let meta = std::fs::metadata(runtime.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(meta.file_type().is_socket(), "{name}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o660, "{name}: owner and group only");
    }
    let mut print = stack.print_admin().await.unwrap();
    wait_until(Duration::from_secs(5), "wix-ingest live on wix-print's bus", || {
        let mut print = print.clone();
        async move {
            let c =
                print.get_connectivity(wixprint_shared::proto::print::GetConnectivityRequest {}).await?.into_inner();
            Ok(c.peer.is_some_and(|p| p.state == "live"))
        }
    })
    .await
    .unwrap();
    print.get_status(wixprint_shared::proto::print::GetStatusRequest {}).await.unwrap();
}
