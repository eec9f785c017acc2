//! systemd's watchdog, fed only while the service makes progress. Components that must keep
//! moving (the event loop, the database writer, wix-print's dispatchers) each hold a
//! [`Heartbeat`] they beat; [`Watchdog::spawn`] sends `WATCHDOG=1` every half watchdog interval
//! while every heartbeat is younger than the stall bound, and stops (saying which component
//! stalled, in the log, the healing events and `GetHealth.stalled`) when one is older. systemd
//! then kills and restarts the frozen process (`WatchdogSec=`), instead of luck doing it.
//!
//! Must never: beat from a wrapper around work that may hang (a heartbeat beaten while waiting
//! must be beaten by the waiting loop itself); waiting on a printer is progress, a hang is not.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::healing::{Healing, HealingEvent, KIND_CHECK};

/// One component's proof of progress. Cheap to clone and to beat.
#[derive(Clone)]
pub struct Heartbeat {
    origin: Instant,
    last: Arc<AtomicU64>,
}

impl Heartbeat {
    /// A heartbeat that belongs to no watchdog (tests, tools).
    pub fn detached() -> Heartbeat {
        Heartbeat { origin: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    pub fn beat(&self) {
        self.last.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// The names of the components whose last beat (ms since the origin) is older than `bound_ms`
/// at `now_ms`. Pure: unit-tested.
pub fn stale_components<'a>(
    beats: impl IntoIterator<Item = (&'a str, u64)>,
    now_ms: u64,
    bound_ms: u64,
) -> Vec<String> {
    beats.into_iter().filter(|(_, last)| now_ms.saturating_sub(*last) > bound_ms).map(|(n, _)| n.to_owned()).collect()
}

/// The watchdog of one process.
pub struct Watchdog {
    origin: Instant,
    /// systemd's `WATCHDOG_USEC`, when armed for this process.
    interval: Option<Duration>,
    /// A heartbeat older than this is a stall.
    bound: Duration,
    beats: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    /// Wall-clock ms of the last `WATCHDOG=1` (0 = never).
    last_ping_ms: AtomicI64,
    stalled: Mutex<String>,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC` / `WATCHDOG_PID` (armed only for this process).
    pub fn new(bound: Duration) -> Arc<Watchdog> {
        Self::with_interval(sd_notify::watchdog_enabled(), bound)
    }

    pub fn with_interval(interval: Option<Duration>, bound: Duration) -> Arc<Watchdog> {
        Arc::new(Watchdog {
            origin: Instant::now(),
            interval: interval.filter(|d| !d.is_zero()),
            bound,
            beats: Mutex::new(Vec::new()),
            last_ping_ms: AtomicI64::new(0),
            stalled: Mutex::new(String::new()),
        })
    }

    /// A new heartbeat for component `name`, beaten once now.
    pub fn heartbeat(&self, name: impl Into<String>) -> Heartbeat {
        let hb = Heartbeat { origin: self.origin, last: Arc::new(AtomicU64::new(0)) };
        hb.beat();
        self.beats.lock().unwrap_or_else(|e| e.into_inner()).push((name.into(), hb.last.clone()));
        hb
    }

    pub fn enabled(&self) -> bool {
        self.interval.is_some()
    }

    pub fn last_ping_ms(&self) -> Option<i64> {
        Some(self.last_ping_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// The stalled components, comma-separated (empty while everything moves).
    pub fn stalled(&self) -> String {
        self.stalled.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stale_now(&self) -> Vec<String> {
        let now = self.origin.elapsed().as_millis() as u64;
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        stale_components(
            beats.iter().map(|(n, l)| (n.as_str(), l.load(Ordering::Relaxed))),
            now,
            self.bound.as_millis() as u64,
        )
    }

    /// Runs the watchdog until shutdown: the event loop's own heartbeat, a trivial database
    /// call (the writer answers) and the check of every heartbeat, each half interval (every
    /// second when systemd's watchdog is not armed: `GetHealth.stalled` still says it).
    pub fn spawn(self: &Arc<Self>, db: Db, healing: Healing, shutdown: CancellationToken) {
        let tick = self.interval.map_or(Duration::from_secs(1), |i| (i / 2).max(Duration::from_millis(10)));
        // The database writer: a trivial call answered proves it takes work.
        let writer = self.heartbeat("database writer");
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                if db.call(|_| Ok(())).await.is_ok() {
                    writer.beat();
                }
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
        let event_loop = self.heartbeat("event loop");
        let this = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut logged_stall = String::new();
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                // This task running on time is the event loop making progress.
                event_loop.beat();
                let stale = this.stale_now();
                let stalled = stale.join(", ");
                *this.stalled.lock().unwrap_or_else(|e| e.into_inner()) = stalled.clone();
                if stale.is_empty() {
                    if this.interval.is_some() {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                        this.last_ping_ms.store(crate::time::now_ms(), Ordering::Relaxed);
                    }
                    if !logged_stall.is_empty() {
                        tracing::warn!(was = %logged_stall, "progress again: watchdog pings resume");
                        logged_stall.clear();
                    }
                } else if stalled != logged_stall {
                    tracing::error!(
                        stalled = %stalled,
                        bound_ms = this.bound.as_millis() as u64,
                        "no progress: watchdog pings stop (systemd restarts the service when its watchdog runs out)"
                    );
                    logged_stall = stalled.clone();
                    // Recorded without waiting: the writer may be what stalled.
                    let healing = healing.clone();
                    tokio::spawn(async move {
                        healing
                            .record(HealingEvent {
                                at_ms: crate::time::now_ms(),
                                kind: KIND_CHECK,
                                subject: "watchdog".into(),
                                action: "stalled".into(),
                                before: "progress".into(),
                                after: "stalled".into(),
                                detail: format!("no progress from: {stalled}"),
                            })
                            .await
                    });
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_older_than_the_bound_is_stale() {
        let beats = [("event loop", 9_900), ("dispatcher:front", 6_000), ("database writer", 7_000)];
        assert_eq!(stale_components(beats, 10_000, 3_000), vec!["dispatcher:front".to_owned()]);
        assert!(stale_components(beats, 9_000, 3_000).is_empty());
        // A beat "in the future" (read races) is fresh, never an underflow.
        assert!(stale_components([("x", 11_000)], 10_000, 1).is_empty());
    }

    #[tokio::test]
    async fn heartbeats_registered_are_checked() {
        let w = Watchdog::with_interval(None, Duration::from_millis(30));
        let a = w.heartbeat("a");
        let _b = w.heartbeat("b");
        assert!(!w.enabled());
        tokio::time::sleep(Duration::from_millis(60)).await;
        a.beat();
        assert_eq!(w.stale_now(), vec!["b".to_owned()]);
    }
}
