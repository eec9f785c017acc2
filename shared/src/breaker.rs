//! The one circuit breaker type (closed → open → half-open → closed), used for the printer
//! transport, the Wix API and SMTP.
//!
//! - **Closed**: calls go through; `failure_threshold` consecutive failures open it.
//! - **Open**: no call for `open_for` ([`Breaker::admit`] answers `Wait`): nothing hammers the
//!   peer. The failure that opened it is kept as the reason.
//! - **Half-open**: after the window, one probe (the caller decides what a probe is: a status
//!   read for a printer, the next call for the Wix API, a test mail for SMTP). A good probe lets
//!   calls through again, one good call at a time; `success_threshold` good calls close it. Any
//!   failure while half-open opens it again for a new window.
//!
//! Only *transient* failures count. "Waiting" outcomes (a printer that is not ready, a peer that
//! is down before anything was sent) are neither failures nor successes: callers report
//! nothing for them. Every state change is sent once on the registry's change channel; the
//! service records it (`self_healing_events`), logs it and publishes it on the bus.
//!
//! Must never: sleep, do I/O, or block: a decision is a mutex and a few comparisons.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use crate::proto::events as pb;
use crate::time::{now_ms, timestamp_from_ms};

/// A breaker's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before the probe.
    pub open_for: Duration,
    /// Good calls after the probe that close a half-open breaker (≥ 1).
    pub success_threshold: u32,
}

impl BreakerConfig {
    /// The printer transport: 5 consecutive transient failures → open 30 s → 1 status-read
    /// probe → closed after 3 good tickets.
    pub const PRINTER: BreakerConfig =
        BreakerConfig { failure_threshold: 5, open_for: Duration::from_secs(30), success_threshold: 3 };
    /// The Wix API: 3 → 60 s → 1 probe → 2.
    pub const WIX_API: BreakerConfig =
        BreakerConfig { failure_threshold: 3, open_for: Duration::from_secs(60), success_threshold: 2 };
    /// SMTP: 2 → 120 s → 1 test mail → 1.
    pub const SMTP: BreakerConfig =
        BreakerConfig { failure_threshold: 2, open_for: Duration::from_secs(120), success_threshold: 1 };

    /// Reads `<prefix>_failures`, `<prefix>_open_secs` (or `_open_ms`), `<prefix>_successes`
    /// from a config source, with `self` as the defaults. Zero values are refused.
    pub fn from_source(self, src: &crate::config::Source, prefix: &str) -> Result<Self, crate::config::ConfigError> {
        let failures = format!("{prefix}_failures");
        let open_ms = format!("{prefix}_open_ms");
        let successes = format!("{prefix}_successes");
        let failure_threshold: u32 = src.parse(&failures, self.failure_threshold)?;
        let open_for = src.millis(&open_ms, self.open_for.as_millis() as u64)?;
        let success_threshold: u32 = src.parse(&successes, self.success_threshold)?;
        if failure_threshold == 0 {
            return Err(src.invalid(&failures, "must be at least 1"));
        }
        if open_for.is_zero() || open_for > Duration::from_secs(24 * 3600) {
            return Err(src.invalid(&open_ms, "must be between 1 ms and 24 h"));
        }
        if success_threshold == 0 {
            return Err(src.invalid(&successes, "must be at least 1"));
        }
        Ok(BreakerConfig { failure_threshold, open_for, success_threshold })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (closed, or half-open after a good probe).
    Go,
    /// Half-open, no probe yet: make the probe (not a real call where the caller has a cheaper
    /// one) and report it with [`Breaker::probe_ok`] or [`Breaker::failure`].
    Probe,
    /// Open: call nothing for this long.
    Wait(Duration),
}

/// One state change, as recorded and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub breaker: String,
    pub from: State,
    pub to: State,
    /// opened / half_open / closed / reset
    pub action: &'static str,
    pub detail: String,
    pub at_ms: i64,
}

#[derive(Debug)]
struct Inner {
    state: State,
    failures: u32,
    successes: u32,
    probed: bool,
    since: Instant,
    since_ms: i64,
    open_until: Option<Instant>,
    reason: String,
    opened: u64,
}

/// One breaker. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    changes: Option<mpsc::Sender<Change>>,
    changed: Arc<Notify>,
}

impl Breaker {
    /// A breaker that reports its changes nowhere (unit tests, tools).
    pub fn standalone(name: impl Into<String>, config: BreakerConfig) -> Breaker {
        Breaker::with_channel(name.into(), config, None, Arc::new(Notify::new()))
    }

    fn with_channel(
        name: String,
        config: BreakerConfig,
        changes: Option<mpsc::Sender<Change>>,
        changed: Arc<Notify>,
    ) -> Breaker {
        Breaker {
            name,
            config,
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: 0,
                successes: 0,
                probed: false,
                since: Instant::now(),
                since_ms: now_ms(),
                open_until: None,
                reason: String::new(),
                opened: 0,
            }),
            changes,
            changed,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May the caller call the peer now? An open breaker whose window has passed becomes
    /// half-open here and asks for the probe.
    pub fn admit(&self) -> Admission {
        self.admit_at(Instant::now())
    }

    pub fn admit_at(&self, now: Instant) -> Admission {
        let mut change = None;
        let answer = {
            let mut g = self.lock();
            match g.state {
                State::Closed => Admission::Go,
                State::HalfOpen if g.probed => Admission::Go,
                State::HalfOpen => Admission::Probe,
                State::Open => {
                    let until = g.open_until.unwrap_or(now);
                    if now >= until {
                        change =
                            Some(self.enter(&mut g, State::HalfOpen, "half_open", now, "window over; probing".into()));
                        Admission::Probe
                    } else {
                        Admission::Wait(until - now)
                    }
                }
            }
        };
        self.emit(change);
        answer
    }

    /// The probe succeeded: calls may go through again (still half-open until enough of them
    /// succeed).
    pub fn probe_ok(&self) {
        let mut g = self.lock();
        if g.state == State::HalfOpen {
            g.probed = true;
        }
    }

    /// A call succeeded.
    pub fn success(&self) {
        let now = Instant::now();
        let mut change = None;
        {
            let mut g = self.lock();
            match g.state {
                State::Closed => g.failures = 0,
                State::HalfOpen => {
                    g.probed = true;
                    g.successes += 1;
                    if g.successes >= self.config.success_threshold {
                        let detail = format!("{} good calls after the probe", g.successes);
                        change = Some(self.enter(&mut g, State::Closed, "closed", now, detail));
                    }
                }
                // A call admitted before it opened came back fine: not a reason to close early.
                State::Open => {}
            }
        }
        self.emit(change);
    }

    /// A call failed transiently (the only kind of failure that counts).
    pub fn failure(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let now = Instant::now();
        let mut change = None;
        {
            let mut g = self.lock();
            match g.state {
                State::Closed => {
                    g.failures += 1;
                    g.reason = reason.clone();
                    if g.failures >= self.config.failure_threshold {
                        let detail = format!("{} consecutive failures; last: {reason}", g.failures);
                        change = Some(self.open(&mut g, now, detail, reason));
                    }
                }
                State::HalfOpen => {
                    let detail = format!("failed while half-open: {reason}");
                    change = Some(self.open(&mut g, now, detail, reason));
                }
                State::Open => g.reason = reason,
            }
        }
        self.emit(change);
    }

    /// Closes the breaker now (an operator's `ResetBreaker`). Returns whether it changed.
    pub fn reset(&self, by: &str) -> bool {
        let now = Instant::now();
        let change = {
            let mut g = self.lock();
            if g.state == State::Closed && g.failures == 0 {
                None
            } else {
                g.reason.clear();
                Some(self.enter(&mut g, State::Closed, "reset", now, format!("reset by {by}")))
            }
        };
        let changed = change.is_some();
        self.emit(change);
        changed
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    fn open(&self, g: &mut Inner, now: Instant, detail: String, reason: String) -> Change {
        g.opened += 1;
        g.open_until = Some(now + self.config.open_for);
        let change = self.enter(g, State::Open, "opened", now, detail);
        g.reason = reason;
        change
    }

    fn enter(&self, g: &mut Inner, to: State, action: &'static str, now: Instant, detail: String) -> Change {
        let from = g.state;
        g.state = to;
        g.since = now;
        g.since_ms = now_ms();
        g.failures = 0;
        g.successes = 0;
        g.probed = false;
        if to != State::Open {
            g.open_until = None;
        }
        Change { breaker: self.name.clone(), from, to, action, detail, at_ms: g.since_ms }
    }

    fn emit(&self, change: Option<Change>) {
        let Some(change) = change else { return };
        // One listener (the service's bus publisher); a change while it is busy is kept.
        self.changed.notify_one();
        if let Some(tx) = &self.changes
            && tx.try_send(change).is_err()
        {
            tracing::warn!(breaker = %self.name, "breaker change not recorded: the recorder is behind");
        }
    }

    /// The breaker as the admin API shows it.
    pub fn snapshot(&self) -> pb::Breaker {
        let g = self.lock();
        let retry_at = g.open_until.map(|until| {
            let left = until.saturating_duration_since(Instant::now());
            timestamp_from_ms(now_ms() + left.as_millis() as i64)
        });
        pb::Breaker {
            name: self.name.clone(),
            state: g.state.as_str().into(),
            consecutive_failures: g.failures,
            failure_threshold: self.config.failure_threshold,
            successes: g.successes,
            success_threshold: self.config.success_threshold,
            open_for_ms: self.config.open_for.as_millis() as u64,
            since: Some(timestamp_from_ms(g.since_ms)),
            retry_at,
            reason: g.reason.clone(),
            opened: g.opened,
        }
    }

    /// The breaker as a bus component (`kind = "breaker"`).
    pub fn component(&self) -> pb::Component {
        let g = self.lock();
        pb::Component {
            kind: KIND_BREAKER.into(),
            name: self.name.clone(),
            state: g.state.as_str().into(),
            since: Some(timestamp_from_ms(g.since_ms)),
            detail: if g.state == State::Closed { String::new() } else { g.reason.clone() },
        }
    }
}

/// Bus component kind of a breaker.
pub const KIND_BREAKER: &str = "breaker";

/// A service's breakers, and the channel their changes travel on.
#[derive(Debug)]
pub struct Breakers {
    list: Mutex<Vec<Arc<Breaker>>>,
    tx: mpsc::Sender<Change>,
    rx: Mutex<Option<mpsc::Receiver<Change>>>,
    changed: Arc<Notify>,
}

impl Default for Breakers {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(256);
        Breakers { list: Mutex::new(Vec::new()), tx, rx: Mutex::new(Some(rx)), changed: Arc::new(Notify::new()) }
    }
}

impl Breakers {
    pub fn new() -> Arc<Breakers> {
        Arc::new(Breakers::default())
    }

    /// Creates and registers a breaker.
    pub fn add(&self, name: impl Into<String>, config: BreakerConfig) -> Arc<Breaker> {
        let b = Arc::new(Breaker::with_channel(name.into(), config, Some(self.tx.clone()), self.changed.clone()));
        self.list.lock().unwrap_or_else(|p| p.into_inner()).push(b.clone());
        b
    }

    pub fn all(&self) -> Vec<Arc<Breaker>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Breaker>> {
        self.all().into_iter().find(|b| b.name() == name)
    }

    pub fn snapshots(&self) -> Vec<pb::Breaker> {
        self.all().iter().map(|b| b.snapshot()).collect()
    }

    pub fn components(&self) -> Vec<pb::Component> {
        self.all().iter().map(|b| b.component()).collect()
    }

    /// Notified when any breaker changes state: for one listener, the service's bus publisher
    /// (a change while it is busy is kept as a permit).
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// The change stream; the first caller gets it (the service's recorder).
    pub fn take_changes(&self) -> Option<mpsc::Receiver<Change>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// `ResetBreaker`: `tonic` statuses name what was wrong.
    pub fn reset(&self, name: &str, by: &str) -> Result<pb::Breaker, tonic::Status> {
        if name.is_empty() {
            return Err(tonic::Status::invalid_argument("name: required (see ListBreakers)"));
        }
        let b = self.get(name).ok_or_else(|| {
            let names: Vec<String> = self.all().iter().map(|b| b.name().to_owned()).collect();
            tonic::Status::not_found(format!("name: no breaker {name:?} (known: {})", names.join(", ")))
        })?;
        b.reset(by);
        Ok(b.snapshot())
    }
}

/// Logs a change once, at a level that fits it.
pub fn log_change(c: &Change) {
    match c.to {
        State::Open => {
            tracing::warn!(breaker = %c.breaker, from = c.from.as_str(), detail = %c.detail, "circuit breaker opened")
        }
        State::HalfOpen => tracing::info!(breaker = %c.breaker, detail = %c.detail, "circuit breaker half-open"),
        State::Closed => {
            tracing::info!(breaker = %c.breaker, action = c.action, detail = %c.detail, "circuit breaker closed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig { failure_threshold: 3, open_for: Duration::from_secs(10), success_threshold: 2 }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = Breaker::standalone("t", cfg());
        b.failure("a");
        b.failure("b");
        b.success();
        b.failure("c");
        b.failure("d");
        assert_eq!(b.state(), State::Closed, "a success in between restarts the count");
        b.failure("e");
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.snapshot().reason, "e");
        assert!(matches!(b.admit(), Admission::Wait(d) if d > Duration::from_secs(9)));
    }

    #[test]
    fn half_open_probe_then_successes_close() {
        let b = Breaker::standalone("t", cfg());
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failure("reset by peer");
        }
        assert!(matches!(b.admit_at(t0), Admission::Wait(_)));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.admit_at(later), Admission::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.admit_at(later), Admission::Probe, "no call before the probe is good");
        b.probe_ok();
        assert_eq!(b.admit_at(later), Admission::Go);
        b.success();
        assert_eq!(b.state(), State::HalfOpen);
        b.success();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.snapshot().opened, 1);
    }

    #[test]
    fn a_failure_while_half_open_reopens_for_a_new_window() {
        let b = Breaker::standalone("t", cfg());
        for _ in 0..3 {
            b.failure("x");
        }
        let later = Instant::now() + Duration::from_secs(11);
        assert_eq!(b.admit_at(later), Admission::Probe);
        b.failure("probe failed");
        assert_eq!(b.state(), State::Open);
        assert!(matches!(b.admit(), Admission::Wait(_)));
        assert_eq!(b.snapshot().opened, 2);
    }

    #[tokio::test]
    async fn changes_are_sent_once_and_reset_closes() {
        let reg = Breakers::new();
        let b = reg.add("printer:kitchen", cfg());
        let mut rx = reg.take_changes().unwrap();
        assert!(reg.take_changes().is_none());
        for _ in 0..5 {
            b.failure("x");
        }
        let c = rx.recv().await.unwrap();
        assert_eq!((c.from, c.to, c.action), (State::Closed, State::Open, "opened"));
        assert!(rx.try_recv().is_err(), "failures while open change nothing");
        let snap = reg.reset("printer:kitchen", "test").unwrap();
        assert_eq!(snap.state, "closed");
        assert_eq!(rx.recv().await.unwrap().action, "reset");
        assert_eq!(reg.reset("nope", "test").unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(reg.components()[0].kind, KIND_BREAKER);
    }
}
