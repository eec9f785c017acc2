//! The recovery manager: when a printer comes back (or wix-print starts) with jobs waiting for
//! it, a session drains that backlog and reports on it.
//!
//! A session: **validating** (the backlog is fixed: every job then waiting for the printer; a
//! fresh status read) → **processing** (the dispatcher prints in priority order; the manager
//! counts done / failed, rate and ETA, and applies `PRINT_RECOVERY_RATE` through the printer's
//! gate) → **completed** (summary logged). A printer lost mid-recovery **pauses** the session
//! until it returns; an operator can pause, resume and cancel (the rest of the backlog is kept
//! as `held`, new orders keep printing). Sessions are rows of `recovery_sessions`.
//!
//! Must never: print, or decide what prints next (the dispatcher does, and keeps printing even
//! if this task is gone); lose a job (cancel keeps them).

use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use wixprint_shared::proto::print::RecoverySession;
use wixprint_shared::time::{now_ms, opt_timestamp, timestamp_from_ms};

use crate::job::RecoveryState;
use crate::printer::{Change, State, Timeouts};
use crate::printers::Printers;
use crate::store::{RecoveryRow, Store};

/// The reason of a pause an operator asked for: only an operator ends it.
pub const OPERATOR: &str = "operator";

/// How often open sessions are recounted.
const TICK: Duration = Duration::from_millis(200);

pub struct RecoveryManager {
    pub store: Store,
    pub printers: Printers,
    pub timeouts: Timeouts,
    /// Tickets per second while processing; `None` = as fast as the printer goes.
    pub rate: Option<f64>,
}

impl RecoveryManager {
    pub async fn run(self, mut changes: broadcast::Receiver<Change>, shutdown: CancellationToken) {
        match self.store.close_stale_recoveries().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(sessions = n, "closed recovery sessions interrupted by a restart"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "could not close stale recovery sessions"),
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.progress().await,
                change = changes.recv() => match change {
                    Ok(c) => {
                        if let Err(e) = self.on_change(&c).await {
                            tracing::error!(printer = %c.printer, error = format!("{e:#}"), "recovery bookkeeping failed");
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    async fn on_change(&self, c: &Change) -> anyhow::Result<()> {
        // Paper near its end is a warning, not a readiness change: online ↔ paper_low neither
        // starts nor pauses anything.
        if c.to.is_ready() == c.from.is_ready() && c.from != State::Unknown {
            return Ok(());
        }
        let open = self.store.open_recovery(&c.printer).await?;
        if c.to.is_ready() {
            match open {
                Some(s) if s.state == RecoveryState::Paused && s.paused_reason != OPERATOR => {
                    self.store.set_recovery_state(s.id, RecoveryState::Processing, "", false).await?;
                    self.pace(&c.printer, true);
                    tracing::info!(session = s.id, printer = %c.printer, "printer back; recovery continues");
                }
                Some(_) => {}
                None => {
                    let trigger = if c.from == State::Unknown { "startup" } else { "printer_online" };
                    self.start(&c.printer, trigger, c.at_ms).await?;
                }
            }
        } else if let Some(s) = open
            && (s.state == RecoveryState::Processing || s.state == RecoveryState::Validating)
        {
            // Printer loss pauses the session; it does not fail it.
            self.store
                .set_recovery_state(s.id, RecoveryState::Paused, &format!("printer {}", c.to.as_str()), false)
                .await?;
            tracing::warn!(session = s.id, printer = %c.printer, state = c.to.as_str(), "printer lost during recovery; session paused");
        }
        Ok(())
    }

    /// Validation, then processing.
    async fn start(&self, printer: &str, trigger: &str, online_ms: i64) -> anyhow::Result<()> {
        let Some(id) = self.store.start_recovery(printer, trigger, online_ms).await? else {
            return Ok(());
        };
        let Some(handle) = self.printers.get(printer) else { return Ok(()) };
        let row = self.store.recovery(id).await?.unwrap_or_default();
        tracing::info!(session = id, printer, trigger, backlog = row.total, "recovery started");
        crate::metrics::get().recovery_sessions.add(
            1,
            &[
                opentelemetry::KeyValue::new("printer", printer.to_owned()),
                opentelemetry::KeyValue::new("result", "started"),
            ],
        );
        // On the printer's one connection; busy means its dispatcher is printing: go by the monitor.
        let (state, detail) = match handle.link.probe_if_idle().await {
            Some(read) => read,
            None => {
                let o = handle.monitor.get();
                (o.state, o.detail)
            }
        };
        if state.is_ready() {
            self.store.set_recovery_state(id, RecoveryState::Processing, "", false).await?;
            self.pace(printer, true);
        } else {
            self.store
                .set_recovery_state(id, RecoveryState::Paused, &format!("printer {} ({detail})", state.as_str()), false)
                .await?;
        }
        handle.wake.notify_one();
        Ok(())
    }

    /// Recounts open sessions; completes the ones with nothing left to print.
    async fn progress(&self) {
        for handle in self.printers.iter() {
            let result = async {
                let Some(s) = self.store.open_recovery(&handle.name).await? else { return anyhow::Ok(()) };
                let s = self.store.refresh_recovery(s.id).await?.unwrap_or(s);
                let (waiting, held) = self.store.recovery_open_jobs(s.id).await?;
                if waiting == 0 && held == 0 && s.state != RecoveryState::Paused {
                    self.store.set_recovery_state(s.id, RecoveryState::Completed, "", true).await?;
                    self.pace(&handle.name, false);
                    let s = self.store.recovery(s.id).await?.unwrap_or(s);
                    let p = to_proto(&s, now_ms());
                    let summary = format!(
                        "{} of {} tickets printed, {} failed, in {:.1} s ({:.0}/s); first ticket {} ms after the printer returned",
                        p.done,
                        p.total,
                        p.failed,
                        p.duration_ms as f64 / 1000.0,
                        p.rate_per_s,
                        p.start_latency_ms
                    );
                    tracing::info!(session = s.id, printer = %s.printer, %summary, "recovery completed");
                    let printer = opentelemetry::KeyValue::new("printer", s.printer.clone());
                    let m = crate::metrics::get();
                    m.recovery_sessions.add(1, &[printer.clone(), opentelemetry::KeyValue::new("result", "completed")]);
                    if p.rate_per_s > 0.0 {
                        m.drain_rate.record(p.rate_per_s, &[printer]);
                    }
                    self.store.set_recovery_summary(s.id, summary).await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::error!(printer = %handle.name, error = format!("{e:#}"), "recovery progress failed");
            }
        }
    }

    fn pace(&self, printer: &str, on: bool) {
        if let Some(h) = self.printers.get(printer) {
            h.gate.set_min_interval(if on { self.rate.map(|r| Duration::from_secs_f64(1.0 / r)) } else { None });
        }
    }
}

/// A session as the admin API shows it, with progress computed at `now_ms`.
pub fn to_proto(s: &RecoveryRow, now_ms: i64) -> RecoverySession {
    let p = Progress::of(s, now_ms);
    RecoverySession {
        id: s.id,
        printer: s.printer.clone(),
        trigger: s.trigger.clone(),
        state: s.state.as_str().to_owned(),
        started_at: Some(timestamp_from_ms(s.started_ms)),
        processing_at: opt_timestamp(s.processing_ms),
        ended_at: opt_timestamp(s.ended_ms),
        total: s.total,
        done: s.done,
        failed: s.failed,
        remaining: p.remaining,
        percent: p.percent,
        eta_ms: p.eta_ms,
        rate_per_s: p.rate_per_s,
        start_latency_ms: p.start_latency_ms,
        duration_ms: p.duration_ms,
        paused_reason: s.paused_reason.clone(),
        summary: s.summary.clone(),
    }
}

/// The arithmetic of a session's progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub remaining: u64,
    pub percent: f64,
    pub rate_per_s: f64,
    pub eta_ms: u64,
    pub start_latency_ms: u64,
    pub duration_ms: u64,
}

impl Progress {
    pub fn of(s: &RecoveryRow, now_ms: i64) -> Progress {
        let finished = s.done + s.failed;
        let remaining = s.total.saturating_sub(finished);
        let percent = if s.total == 0 { 100.0 } else { (finished as f64 * 100.0 / s.total as f64).min(100.0) };
        let end = s.ended_ms.unwrap_or(now_ms);
        // The rate counts from the first printed ticket: waiting for the printer is not slowness.
        let rate_per_s = match s.first_printed_ms {
            Some(first) if end > first && s.done > 1 => (s.done - 1) as f64 * 1000.0 / (end - first) as f64,
            _ => 0.0,
        };
        let eta_ms = if remaining == 0 {
            0
        } else if rate_per_s > 0.0 {
            (remaining as f64 / rate_per_s * 1000.0) as u64
        } else {
            0
        };
        Progress {
            remaining,
            percent,
            rate_per_s,
            eta_ms,
            start_latency_ms: s.first_printed_ms.map_or(0, |f| (f - s.online_ms).max(0) as u64),
            duration_ms: (end - s.started_ms).max(0) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(total: u64, done: u64, failed: u64) -> RecoveryRow {
        RecoveryRow {
            id: 1,
            printer: "front".into(),
            trigger: "printer_online".into(),
            state: RecoveryState::Processing,
            started_ms: 1_000,
            online_ms: 900,
            first_printed_ms: Some(1_200),
            total,
            done,
            failed,
            ..Default::default()
        }
    }

    #[test]
    fn progress_counts_percent_rate_and_eta() {
        // 101 printed between 1.2 s and 2.2 s: 100 intervals in 1 s.
        let p = Progress::of(&row(400, 101, 0), 2_200);
        assert_eq!(p.remaining, 299);
        assert!((p.percent - 25.25).abs() < 1e-9);
        assert!((p.rate_per_s - 100.0).abs() < 1e-9);
        assert_eq!(p.eta_ms, 2_990);
        assert_eq!(p.start_latency_ms, 300);
        assert_eq!(p.duration_ms, 1_200);
    }

    #[test]
    fn nothing_printed_yet_has_no_rate_and_no_eta() {
        let mut r = row(10, 0, 0);
        r.first_printed_ms = None;
        let p = Progress::of(&r, 5_000);
        assert_eq!((p.rate_per_s, p.eta_ms, p.start_latency_ms, p.percent), (0.0, 0, 0, 0.0));
    }

    #[test]
    fn failed_tickets_count_as_finished_and_an_ended_session_stops_the_clock() {
        let mut r = row(10, 8, 2);
        r.ended_ms = Some(3_000);
        let p = Progress::of(&r, 99_000);
        assert_eq!((p.remaining, p.percent, p.eta_ms, p.duration_ms), (0, 100.0, 0, 2_000));
        assert_eq!(Progress::of(&row(0, 0, 0), 2_000).percent, 100.0);
    }
}
