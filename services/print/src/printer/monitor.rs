//! The printer monitor: one printer's debounced state, fed by every observation (idle polls,
//! job status reads, replies during a confirmation), with confirmed changes broadcast.

use std::sync::{Arc, Mutex};

use wixprint_shared::connectivity::Debouncer;
use wixprint_shared::time::now_ms;

use super::status::State;
use super::url::PrinterUrl;

/// The printer's last known state, shared with the admin API.
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub url: String,
    /// The confirmed (debounced) state: what status, events and failover go by.
    pub state: State,
    pub detail: String,
    pub since_ms: i64,
    pub last_checked_ms: i64,
    pub checks: u64,
    /// The last raw observation (may not be confirmed yet).
    pub raw: State,
    /// Since when the printer has been not ready without a break (monotonic, so a wall-clock
    /// step never fires or stalls a failover); `None` while ready or never observed.
    pub not_ready_since: Option<tokio::time::Instant>,
}

impl Observed {
    /// How long the printer has been not ready (zero while ready or unknown).
    pub fn not_ready_for(&self) -> std::time::Duration {
        self.not_ready_since.map(|at| at.elapsed()).unwrap_or_default()
    }
}

/// A confirmed change of a printer's state.
#[derive(Debug, Clone)]
pub struct Change {
    pub printer: String,
    pub from: State,
    pub to: State,
    pub detail: String,
    pub at_ms: i64,
}

struct MonitorInner {
    observed: Observed,
    /// The one debouncer both services use (see ingest's internet monitor).
    debouncer: Debouncer,
}

/// One printer's state, fed by the dispatcher's and the poller's observations. A printer
/// coming back (online, or online with paper near its end) is believed at once: printing
/// resumes and recovery starts without delay. A printer going away (offline, paper out, ...)
/// is confirmed only after `confirm` observations in a row, so one lost status reply does not
/// raise an alarm.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Mutex<MonitorInner>>,
    changes: tokio::sync::broadcast::Sender<Change>,
}

impl Monitor {
    pub fn new(name: &str, url: &PrinterUrl) -> Self {
        Self::with_changes(name, url, 1, tokio::sync::broadcast::Sender::new(64))
    }

    /// A monitor confirming not-ready states after `confirm` observations, announcing
    /// confirmed changes on `changes`.
    pub fn with_changes(
        name: &str,
        url: &PrinterUrl,
        confirm: u32,
        changes: tokio::sync::broadcast::Sender<Change>,
    ) -> Self {
        let observed = Observed {
            name: name.to_owned(),
            url: url.to_string(),
            state: State::Unknown,
            detail: String::new(),
            since_ms: now_ms(),
            last_checked_ms: 0,
            checks: 0,
            raw: State::Unknown,
            not_ready_since: None,
        };
        let debouncer = Debouncer::starting_at(confirm, State::Unknown.as_str());
        Self { inner: Arc::new(Mutex::new(MonitorInner { observed, debouncer })), changes }
    }

    pub fn get(&self) -> Observed {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).observed.clone()
    }

    /// Records one observation; a confirmed change is logged and announced.
    pub fn set(&self, state: State, detail: impl Into<String>) {
        let detail = detail.into();
        let change = {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let inner = &mut *guard;
            let o = &mut inner.observed;
            o.checks += 1;
            o.last_checked_ms = now_ms();
            o.raw = state;
            let confirmed = inner.debouncer.observe_with(state.as_str(), state.is_ready());
            if confirmed.is_none() {
                if o.state == state {
                    o.detail = detail;
                }
                return;
            }
            let change =
                Change { printer: o.name.clone(), from: o.state, to: state, detail: detail.clone(), at_ms: now_ms() };
            if state.is_ready() {
                tracing::info!(printer = %o.name, from = o.state.as_str(), to = state.as_str(), "printer ready");
                o.not_ready_since = None;
            } else {
                tracing::warn!(printer = %o.name, from = o.state.as_str(), to = state.as_str(), %detail, "printer not ready; queue waits");
                // Not ready since the first not-ready state: paper out then offline is one wait.
                o.not_ready_since.get_or_insert_with(tokio::time::Instant::now);
            }
            crate::metrics::get().transitions.add(
                1,
                &[
                    opentelemetry::KeyValue::new("printer", o.name.clone()),
                    opentelemetry::KeyValue::new("from", o.state.as_str()),
                    opentelemetry::KeyValue::new("to", state.as_str()),
                ],
            );
            o.state = state;
            o.since_ms = change.at_ms;
            o.detail = detail;
            change
        };
        // No receiver is fine: nobody is interested yet.
        let _ = self.changes.send(change);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(confirm: u32) -> (Monitor, tokio::sync::broadcast::Receiver<Change>) {
        let tx = tokio::sync::broadcast::Sender::new(64);
        let rx = tx.subscribe();
        (Monitor::with_changes("front", &"tcp://127.0.0.1:9100".parse().unwrap(), confirm, tx), rx)
    }

    fn changes(rx: &mut tokio::sync::broadcast::Receiver<Change>) -> Vec<(State, State)> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|c| (c.from, c.to)).collect()
    }

    #[test]
    fn going_away_is_confirmed_after_n_reads_coming_back_at_once() {
        let (m, mut rx) = monitor(2);
        m.set(State::Online, "");
        m.set(State::PaperOut, "");
        assert_eq!(m.get().state, State::Online, "one read is not enough");
        assert_eq!(m.get().raw, State::PaperOut);
        m.set(State::PaperOut, "bytes");
        assert_eq!(m.get().state, State::PaperOut);
        m.set(State::PaperLow, "");
        assert_eq!(m.get().state, State::PaperLow, "paper near end is ready: believed at once");
        m.set(State::Online, "");
        assert_eq!(
            changes(&mut rx),
            [
                (State::Unknown, State::Online),
                (State::Online, State::PaperOut),
                (State::PaperOut, State::PaperLow),
                (State::PaperLow, State::Online)
            ]
        );
        assert_eq!(m.get().checks, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn not_ready_since_is_monotonic_and_spans_successive_stopped_states() {
        let (m, _rx) = monitor(1);
        m.set(State::Online, "");
        assert_eq!(m.get().not_ready_for(), std::time::Duration::ZERO);
        m.set(State::PaperOut, "");
        tokio::time::advance(std::time::Duration::from_secs(30)).await;
        m.set(State::Offline, "");
        tokio::time::advance(std::time::Duration::from_secs(30)).await;
        assert_eq!(m.get().not_ready_for(), std::time::Duration::from_secs(60));
        m.set(State::PaperLow, "");
        assert_eq!(m.get().not_ready_since, None);
    }
}
