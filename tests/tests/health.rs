//! The health monitor, the watchdog and the controlled restart, with the real binaries:
//! thresholds lowered by configuration give a warning, then a critical check with its healing
//! action recorded while `grpc.health.v1` says NOT_SERVING (and SERVING again when it clears,
//! driven by a fake thermal zone); a stalled dispatcher stops the `WATCHDOG=1` pings on a
//! `NOTIFY_SOCKET` the test owns while a healthy one keeps pinging; a critical check that never
//! clears restarts the service (exit 75) once, not again within the cooldown, again after it,
//! and past the hourly limit leaves it up, degraded.

use std::path::Path;
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use wixprint_shared::proto::events::{GetHealthRequest, GetHealthResponse, HealingEvent, ListHealingEventsRequest};
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::webhook::fixture;

const T: Duration = Duration::from_secs(20);
const EXIT_RESTART: i32 = 75;

/// A fake `/sys/class/thermal` with one zone at `milli` m°C.
fn thermal(dir: &Path, milli: u32) {
    let zone = dir.join("thermal").join("thermal_zone0");
    std::fs::create_dir_all(&zone).unwrap();
    let tmp = zone.join("temp.tmp");
    std::fs::write(&tmp, format!("{milli}\n")).unwrap();
    std::fs::rename(tmp, zone.join("temp")).unwrap();
}

/// Fast health rounds, the disk check off (the test machine's disk is not under test) and the
/// fake thermal zone, for the service with env prefix `prefix`.
fn fast_health(mut opts: StackOptions, prefix: &str, thermal_dir: &Path, for_print: bool) -> StackOptions {
    let env = [
        ("HEALTH_RESOURCE_INTERVAL_MS", "150".to_owned()),
        ("HEALTH_CHECK_INTERVAL_MS", "150".to_owned()),
        ("HEALTH_DISK_WARN_PCT", "0".to_owned()),
        ("HEALTH_DISK_CRIT_PCT", "0".to_owned()),
        ("HEALTH_DISK_EMERGENCY_PCT", "0".to_owned()),
        ("HEALTH_THERMAL_PATH", thermal_dir.join("thermal").display().to_string()),
    ];
    for (k, v) in env {
        let key = format!("{prefix}_{k}");
        opts = if for_print { opts.print_env(&key, v) } else { opts.ingest_env(&key, v) };
    }
    opts
}

async fn print_health(stack: &Stack) -> anyhow::Result<GetHealthResponse> {
    Ok(stack.print_admin().await?.get_health(GetHealthRequest {}).await?.into_inner())
}

async fn ingest_health(stack: &Stack) -> anyhow::Result<GetHealthResponse> {
    Ok(stack.ingest_admin().await?.get_health(GetHealthRequest {}).await?.into_inner())
}

async fn print_events(stack: &Stack, kind: &str) -> Vec<HealingEvent> {
    let req = ListHealingEventsRequest { limit: 0, kind: kind.into() };
    stack.print_admin().await.unwrap().list_healing_events(req).await.unwrap().into_inner().events
}

fn state_of(h: &GetHealthResponse, check: &str) -> String {
    h.checks.iter().find(|c| c.name == check).map(|c| c.state.clone()).unwrap_or_default()
}

/// `grpc.health.v1.Health/Check` of `service` ("" = the server) on `addr`.
async fn serving(addr: &str, service: &str) -> anyhow::Result<i32> {
    let mut health = HealthClient::new(Stack::channel(addr).await?);
    Ok(health.check(HealthCheckRequest { service: service.into() }).await?.into_inner().status)
}

async fn wait_serving(addr: &str, services: &[&str], want: ServingStatus, what: &str) {
    wait_until(T, what, || async move {
        for s in services {
            if serving(addr, s).await? != want as i32 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .unwrap();
}

const PRINT_SERVICES: &[&str] = &["", "wixprint.print.v1.PrintAdmin", "wixprint.print.v1.PrintService"];
const INGEST_SERVICES: &[&str] = &["", "wixprint.ingest.v1.IngestAdmin"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowered_thresholds_warn_then_go_critical_with_healing_and_health_says_not_serving() {
    let state = tempfile::tempdir().unwrap();
    thermal(state.path(), 40_000);
    let opts = fast_health(StackOptions::default(), "PRINT", state.path(), true)
        .print_env("PRINT_HEALTH_MEMORY_WARN_PCT", "1")
        .print_env("PRINT_HEALTH_MEMORY_CRIT_PCT", "99")
        .print_env("PRINT_HEALTH_MEMORY_EMERGENCY_PCT", "100");
    let opts = fast_health(opts, "INGEST", state.path(), false);
    let mut stack = Stack::start(opts).await.unwrap();

    // Memory above 1 %: a warning, and still SERVING (a warning is not critical).
    wait_until(T, "memory warning in wix-print's GetHealth", || async {
        let h = print_health(&stack).await?;
        Ok(state_of(&h, "memory") == "warning" && state_of(&h, "temperature") == "ok")
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let h = print_health(&stack).await.unwrap();
    assert_eq!(h.overall, "warning", "{h:#?}");
    let memory = h.checks.iter().find(|c| c.name == "memory").unwrap();
    assert!(memory.value > 1.0 && memory.value <= 100.0 && memory.unit == "%", "{memory:#?}");
    assert_eq!((memory.warning, memory.critical, memory.emergency), (1.0, 99.0, 100.0));
    for check in
        ["rss", "cpu", "disk", "db_size", "wal_size", "temperature", "oldest_waiting_ticket", "printer_stuck:front"]
    {
        assert!(h.checks.iter().any(|c| c.name == check), "no {check} check: {h:#?}");
    }
    assert!(!h.degraded && h.stalled.is_empty(), "{h:#?}");
    wait_serving(&stack.print_grpc, PRINT_SERVICES, ServingStatus::Serving, "wix-print SERVING").await;
    assert!(
        print_events(&stack, "check").await.iter().any(|e| e.subject == "memory" && e.after == "warning"),
        "the change to warning is recorded"
    );

    // The SoC at 90 °C: critical (over 80, where a Pi throttles) in both services, NOT_SERVING.
    thermal(state.path(), 90_000);
    wait_serving(&stack.print_grpc, PRINT_SERVICES, ServingStatus::NotServing, "wix-print NOT_SERVING").await;
    wait_serving(&stack.ingest_grpc, INGEST_SERVICES, ServingStatus::NotServing, "wix-ingest NOT_SERVING").await;
    let h = ingest_health(&stack).await.unwrap();
    assert!(["critical", "emergency"].contains(&state_of(&h, "temperature").as_str()), "{h:#?}");
    assert!(["critical", "emergency"].contains(&h.overall.as_str()), "{h:#?}");
    assert!(h.checks.iter().any(|c| c.name == "outbox_backlog"), "{h:#?}");
    // Cooled down: SERVING again in both.
    thermal(state.path(), 40_000);
    wait_serving(&stack.print_grpc, PRINT_SERVICES, ServingStatus::Serving, "wix-print SERVING again").await;
    wait_serving(&stack.ingest_grpc, INGEST_SERVICES, ServingStatus::Serving, "wix-ingest SERVING again").await;
    assert_eq!(state_of(&ingest_health(&stack).await.unwrap(), "temperature"), "ok");

    // Memory critical at 2 %: the caches are released (recorded with before/after), NOT_SERVING.
    stack.print.terminate().await.unwrap();
    stack.print.set_env("PRINT_HEALTH_MEMORY_CRIT_PCT", "2");
    stack.print.start().await.unwrap();
    wait_until(T, "memory critical with its healing action", || async {
        let h = print_health(&stack).await?;
        let c = h.checks.iter().find(|c| c.name == "memory");
        Ok(c.is_some_and(|c| c.state == "critical" && c.last_action.starts_with("release_caches")))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    wait_serving(&stack.print_grpc, PRINT_SERVICES, ServingStatus::NotServing, "NOT_SERVING while critical").await;
    let actions = print_events(&stack, "action").await;
    let release = actions.iter().find(|e| e.subject == "memory" && e.action == "release_caches");
    let release = release.unwrap_or_else(|| panic!("no release_caches action: {actions:#?}"));
    assert!(release.before.starts_with("rss ") && release.after.starts_with("rss "), "{release:#?}");
    assert!(release.detail.contains("glyph font"), "{release:#?}");
    assert!(print_events(&stack, "check").await.iter().any(|e| e.subject == "memory" && e.after == "critical"));
    assert_eq!(print_health(&stack).await.unwrap().overall, "critical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_dispatcher_stops_the_watchdog_pings() {
    let opts = StackOptions::default()
        .print_env("WATCHDOG_USEC", "1000000")
        .print_env("PRINT_HEALTH_STALL_MS", "2000")
        .print_env("WIXPRINT_FAILPOINTS", "dispatcher-stall");
    let stack = Stack::start(opts).await.unwrap();
    // Healthy while idle: pings every half interval.
    wait_until(T, "three watchdog pings", || async { Ok(stack.print.watchdog_pings().len() >= 3) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let h = print_health(&stack).await.unwrap();
    assert!(h.watchdog_enabled && h.last_watchdog_at.is_some() && h.stalled.is_empty(), "{h:#?}");

    // A ticket: the dispatcher takes it and hangs.
    stack.send_event(&fixture("order_created.pickup.json")).await.unwrap();
    wait_until(T, "the dispatcher reported stalled", || async {
        Ok(print_health(&stack).await?.stalled.contains("dispatcher front"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let seen = Instant::now();
    // Absence can only be observed over time: three ping intervals.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let late: Vec<_> = stack.print.watchdog_pings().into_iter().filter(|at| *at > seen).collect();
    assert!(late.is_empty(), "{} WATCHDOG=1 after the stall was reported\n{}", late.len(), stack.logs());
    let h = print_health(&stack).await.unwrap();
    assert!(h.stalled.contains("dispatcher front"), "{h:#?}");
    let events = print_events(&stack, "check").await;
    assert!(events.iter().any(|e| e.subject == "watchdog" && e.action == "stalled"), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_wix_print_keeps_pinging_while_it_prints() {
    let opts = StackOptions::default().print_env("WATCHDOG_USEC", "1000000").print_env("PRINT_HEALTH_STALL_MS", "2000");
    let stack = Stack::start(opts).await.unwrap();
    stack.send_event(&fixture("order_created.pickup.json")).await.unwrap();
    stack.sim.wait_for_tickets(3, T).await.unwrap();
    let printed = Instant::now();
    wait_until(T, "pings go on after printing", || async {
        Ok(stack.print.watchdog_pings().iter().filter(|at| **at > printed).count() >= 4)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let h = print_health(&stack).await.unwrap();
    assert!(h.stalled.is_empty() && h.watchdog_enabled, "{h:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_never_clears_restarts_once_per_cooldown_then_stays_up_degraded() {
    let state = tempfile::tempdir().unwrap();
    let cooldown = Duration::from_secs(12);
    let opts = fast_health(StackOptions::default(), "PRINT", state.path(), true)
        .print_env("PRINT_HEALTH_MEMORY_WARN_PCT", "1")
        .print_env("PRINT_HEALTH_MEMORY_CRIT_PCT", "2")
        .print_env("PRINT_HEALTH_MEMORY_EMERGENCY_PCT", "100")
        .print_env("PRINT_HEALTH_RESTART_AFTER_SECS", "1")
        .print_env("PRINT_HEALTH_RESTART_COOLDOWN_SECS", cooldown.as_secs().to_string())
        .print_env("PRINT_HEALTH_RESTART_MAX_PER_HOUR", "2");
    let mut stack = Stack::start(opts).await.unwrap();

    // 1. Critical for a second: a controlled restart, exit 75.
    let status = stack.print.wait_exit(T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert_eq!(status.code(), Some(EXIT_RESTART), "{}", stack.print.log());

    // 2. Started again (same database): still critical, but within the cooldown it stays up.
    stack.print.start().await.unwrap();
    let h = print_health(&stack).await.unwrap();
    assert_eq!(h.restarts_last_hour, 1, "{h:#?}");
    let last = h.last_restart_at.unwrap();
    let last = std::time::UNIX_EPOCH + Duration::new(last.seconds as u64, last.nanos as u32);
    let cooldown_left = (last + cooldown).duration_since(std::time::SystemTime::now()).unwrap_or_default();
    assert!(cooldown_left > Duration::from_secs(1), "the restart took too long to observe the cooldown");
    let early = stack.print.wait_exit(cooldown_left - Duration::from_millis(500)).await;
    assert!(early.is_err(), "restarted within the cooldown: {early:?}\n{}", stack.print.log());
    let events = print_events(&stack, "restart").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!((events[0].subject.as_str(), events[0].action.as_str()), ("memory", "restart"));
    assert_eq!(events[0].after, "exit 75");
    // After the cooldown: the second restart.
    let status = stack.print.wait_exit(T).await.unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    assert_eq!(status.code(), Some(EXIT_RESTART));
    assert!(std::time::SystemTime::now() >= last + cooldown);

    // 3. The hourly limit (2) is reached: it stays up, degraded, and says why.
    stack.print.start().await.unwrap();
    wait_until(T, "degraded", || async { Ok(print_health(&stack).await?.degraded) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", stack.logs()));
    let h = print_health(&stack).await.unwrap();
    assert_eq!(h.restarts_last_hour, 2, "{h:#?}");
    assert!(h.degraded_reason.contains("limit 2"), "{h:#?}");
    let events = print_events(&stack, "restart").await;
    assert_eq!(events.iter().filter(|e| e.action == "restart").count(), 2, "{events:#?}");
    assert_eq!(events.iter().filter(|e| e.action == "refused").count(), 1, "{events:#?}");
    // Still up a while later (the restart window has passed many times over).
    assert!(stack.print.wait_exit(Duration::from_secs(2)).await.is_err(), "{}", stack.print.log());
    assert!(stack.print.log().contains("DEGRADED"), "said loudly");
}
