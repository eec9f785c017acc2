//! What wix-print tells the owner by e-mail (issue 12): once a second it looks at what it
//! already knows (printer monitors, breakers, the bus peer, health, dead letters, recovery
//! sessions) and feeds a [`Watcher`], which raises and resolves alerts through the durable
//! alert outbox. Nothing here waits on the printer or on SMTP.
//!
//! Must never: send mail itself, or slow a dispatcher (it only reads shared state and runs
//! two indexed queries a tick).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use wixprint_shared::alerts::{Alert, AlertKind, Edge, Watcher};

use crate::printer::State;
use crate::printers::Printers;
use crate::store::{RecoveryState, Store};

/// The thresholds of wix-print's alerts (README "Alert catalogue").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertThresholds {
    /// A printer not ready this long (`ALERT_PRINTER_NOT_READY_SECS`, default 300).
    pub printer_not_ready: Duration,
    /// Paper near its end this long (`ALERT_PAPER_LOW_SECS`, default 60).
    pub paper_low: Duration,
    /// wix-ingest unheard on the bus this long (`ALERT_PEER_SECS`, default 300).
    pub peer: Duration,
    /// A recovery after an outage at least this long mails its summary
    /// (`ALERT_RECOVERY_MIN_OUTAGE_SECS`, default 600).
    pub recovery_min_outage: Duration,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            printer_not_ready: Duration::from_secs(300),
            paper_low: Duration::from_secs(60),
            peer: Duration::from_secs(300),
            recovery_min_outage: Duration::from_secs(600),
        }
    }
}

pub struct AlertWatch {
    pub store: Store,
    pub printers: Printers,
    pub healing: wixprint_shared::healing::Healing,
    pub bus: wixprint_shared::bus::Bus,
    pub health: wixprint_shared::health::Health,
    pub thresholds: AlertThresholds,
    pub watcher: Watcher,
}

/// How often the watch looks at what is in memory (printers, breakers, the bus peer).
const TICK: Duration = Duration::from_millis(500);
/// Every this many ticks (5 s) it also reads what needs the database: health (the restart
/// ledger), dead letters, recovery sessions.
const DB_EVERY: u32 = 10;

impl AlertWatch {
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Per printer: when its last long outage ended (the printer returned), and how long it
        // lasted, until a recovery session that started after it completes.
        let mut outages: HashMap<String, (i64, Duration)> = HashMap::new();
        let mut ticks: u32 = 0;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            self.printers_tick(now, &mut outages);
            self.watcher.breakers(&self.healing.breakers, now);
            self.watcher.peer("wix-ingest", &self.bus.peer(), self.thresholds.peer, now);
            // What needs the database (its one writer thread also commits tickets) is read
            // every DB_EVERY ticks; what lives in memory every tick.
            ticks += 1;
            if ticks % DB_EVERY != 1 {
                continue;
            }
            if let Ok(h) = self.health.get().await {
                self.watcher.health(&h, now);
            }
            if let Err(e) = self.dead_letters_tick(now).await {
                tracing::debug!(error = format!("{e:#}"), "alert watch: dead letters not read");
            }
            if let Err(e) = self.recoveries_tick(&mut outages).await {
                tracing::debug!(error = format!("{e:#}"), "alert watch: recovery sessions not read");
            }
        }
    }

    fn printers_tick(&mut self, now: Instant, outages: &mut HashMap<String, (i64, Duration)>) {
        for h in self.printers.iter() {
            let o = h.monitor.get();
            // Unknown = not read yet (start-up): no news. Unreachable reads as offline.
            let not_ready = !o.state.is_ready() && o.state != State::Unknown;
            let reason = o.state.as_str().to_owned();
            let detail = o.detail.clone();
            let was_since = self.watcher.held_since(AlertKind::PrinterNotReady, &h.name);
            let edge = self.watcher.observe(
                AlertKind::PrinterNotReady,
                &h.name,
                not_ready,
                self.thresholds.printer_not_ready,
                now,
                || vec![("printer".into(), h.name.clone()), ("reason".into(), reason), ("detail".into(), detail)],
            );
            if edge == Some(Edge::Resolve)
                && let Some(since) = was_since
            {
                let lasted = now.saturating_duration_since(since);
                if lasted >= self.thresholds.recovery_min_outage {
                    outages.insert(h.name.clone(), (wixprint_shared::time::now_ms(), lasted));
                }
            }
            let low = o.state == State::PaperLow;
            self.watcher.observe(AlertKind::PaperLow, &h.name, low, self.thresholds.paper_low, now, || {
                vec![("printer".into(), h.name.clone())]
            });
        }
    }

    async fn dead_letters_tick(&mut self, now: Instant) -> anyhow::Result<()> {
        for h in self.printers.iter() {
            let (newest, total) = self.store.dead_letters(Some(h.name.clone()), 1).await?;
            let last_error = newest.first().and_then(|j| j.last_error.clone()).unwrap_or_default();
            let order = newest.first().map(|j| j.order_number.clone()).unwrap_or_default();
            self.watcher.observe(AlertKind::DeadLetters, &h.name, total > 0, Duration::ZERO, now, || {
                vec![
                    ("printer".into(), h.name.clone()),
                    ("count".into(), total.to_string()),
                    ("order".into(), order),
                    ("last_error".into(), last_error),
                ]
            });
        }
        Ok(())
    }

    /// A recovery session that completed after a long outage of its printer: INFO with counts.
    async fn recoveries_tick(&mut self, outages: &mut HashMap<String, (i64, Duration)>) -> anyhow::Result<()> {
        if outages.is_empty() {
            return Ok(());
        }
        for s in self.store.list_recoveries(None, 10).await? {
            let Some((returned_ms, lasted)) = outages.get(&s.printer).copied() else { continue };
            // A session of this return: started around it (the monitor confirms a return a
            // little after the session may have opened) and finished.
            if s.started_ms + 60_000 < returned_ms || s.state != RecoveryState::Completed {
                continue;
            }
            let ended = s.ended_ms.unwrap_or(s.started_ms);
            outages.remove(&s.printer);
            self.watcher.event(
                Alert::new(AlertKind::RecoveryFinished, &s.printer, s.started_ms)
                    .fact("printer", &s.printer)
                    .fact("outage", wixprint_shared::alerts::format_duration(lasted))
                    .fact("printed", s.done)
                    .fact("failed", s.failed)
                    .fact(
                        "duration",
                        wixprint_shared::alerts::format_duration(Duration::from_millis(
                            (ended - s.started_ms).max(0) as u64
                        )),
                    ),
            );
        }
        Ok(())
    }
}
