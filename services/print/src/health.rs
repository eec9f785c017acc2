//! wix-print's part of the health monitor (`wixprint_shared::health`): the oldest waiting
//! ticket, a printer connection that looks stuck, and the healing they allow (reconnecting the
//! printer; dropping the glyph font on memory pressure; pruning on disk pressure).
//!
//! "Stuck": the printer's monitor says it is ready, the queue is not paused, yet no status
//! read nor confirmation has been answered on its link for `PRINT_HEALTH_PRINTER_STUCK_*_SECS`
//! (the dispatcher reads the status every `PRINT_STATUS_POLL_MS` while idle, so a healthy link
//! answers every second). A printer that is offline or out of paper is waiting, never stuck.
//!
//! Must never: count waiting as failing: the oldest waiting ticket only warns by default and
//! never restarts the service.

use std::time::Duration;

use wixprint_shared::health::{Action, Hooks, Level, Reading, Thresholds};

use crate::printers::Printers;
use crate::store::Store;

pub const QUEUE_AGE: &str = "oldest_waiting_ticket";
pub const STUCK_PREFIX: &str = "printer_stuck:";

pub struct PrintHooks {
    pub store: Store,
    pub printers: Printers,
    pub retention: Duration,
    pub queue_age: Thresholds,
    pub printer_stuck: Thresholds,
}

impl Hooks for PrintHooks {
    async fn readings(&self) -> Vec<Reading> {
        let mut out = Vec::new();
        let (value, detail) = match self.store.queue_depth().await {
            Ok((counts, oldest)) => {
                let waiting: u64 = counts
                    .iter()
                    .filter(|(_, state, _, _)| crate::job::JobState::WAITING.contains(state))
                    .map(|(_, _, _, n)| n)
                    .sum();
                let age = oldest.map_or(0.0, |ms| (wixprint_shared::time::now_ms() - ms).max(0) as f64 / 1000.0);
                (Some(age), format!("{waiting} ticket(s) waiting"))
            }
            Err(e) => (None, format!("queue query failed: {e:#}")),
        };
        out.push(Reading {
            name: QUEUE_AGE.into(),
            unit: "s",
            value,
            thresholds: self.queue_age,
            detail,
            restart: false,
        });
        for p in self.printers.iter() {
            let observed = p.monitor.get();
            let (value, detail) = if p.gate.is_paused() {
                (0.0, "queue paused".to_owned())
            } else if !observed.state.is_ready() {
                (0.0, format!("{}: waiting, not stuck", observed.state.as_str()))
            } else if p.link.breaker().state() != wixprint_shared::breaker::State::Closed {
                // Left alone on purpose: the breaker decides when the printer is asked again.
                (0.0, format!("circuit breaker {}: not asked, not stuck", p.link.breaker().state().as_str()))
            } else {
                match p.link.since_last_reply() {
                    Some(d) => (d.as_secs_f64(), format!("last answer {} s ago", d.as_secs())),
                    None => (0.0, "no answer yet".to_owned()),
                }
            };
            out.push(Reading {
                name: format!("{STUCK_PREFIX}{}", p.name),
                unit: "s",
                value: Some(value),
                thresholds: self.printer_stuck,
                detail,
                restart: true,
            });
        }
        out
    }

    async fn heal(&self, check: &str, level: Level) -> Option<Action> {
        let name = check.strip_prefix(STUCK_PREFIX)?;
        let p = self.printers.get(name)?;
        let before =
            p.link.since_last_reply().map_or("no answer yet".into(), |d| format!("no answer for {} s", d.as_secs()));
        let closed = p.link.reconnect();
        p.wake.notify_one();
        Some(Action {
            action: "reconnect".into(),
            before,
            after: if closed {
                "connection closed; reopened on next use".into()
            } else {
                "in use; closed at its next use".into()
            },
            detail: format!("printer {name} looked stuck ({})", level.as_str()),
        })
    }

    async fn release_caches(&self) -> String {
        match crate::glyphs::release() {
            0 => "glyph font not loaded".into(),
            n => format!("glyph font released ({n} bytes; reloads on next use)"),
        }
    }

    async fn prune(&self) -> anyhow::Result<String> {
        wixprint_shared::retention::prune_now(&self.store, self.retention).await
    }
}
