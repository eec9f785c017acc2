//! E-mail alerts (issue 12): what a service raises when something needs the owner, and the
//! contract between the code that notices (the services' monitors) and the code that delivers
//! (a durable alert outbox per service database, throttling, digests, SMTP through `lettre`
//! behind the SMTP circuit breaker).
//!
//! The services only ever call [`Alerts::raise`] and [`Alerts::resolve`]; both return at once
//! (the alert is written to the service's database by the delivery side, never on the print
//! path's time). [`Sustained`] turns "this condition holds" observations into the raise /
//! resolve edges of "held longer than N".
//!
//! Must never: block or fail the caller; send mail on the caller's task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::events as pb;

pub mod config;
pub mod delivery;
pub mod mail;
pub mod store;
pub mod texts;

pub use config::AlertConfig;
pub use delivery::AlertService;
pub use store::ALERT_MIGRATION;

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// The alert catalogue (README "E-mail alerts"). Throttling is per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A printer not ready longer than `ALERT_PRINTER_NOT_READY_SECS` (reason: paper out,
    /// cover open, offline, unreachable). Subject: the printer's name.
    PrinterNotReady,
    /// Paper near its end. Subject: the printer.
    PaperLow,
    /// The internet offline longer than `ALERT_INTERNET_OFFLINE_SECS` (wix-ingest).
    InternetOffline,
    /// The other service unreachable on the bus longer than `ALERT_PEER_SECS`.
    PeerUnreachable,
    /// Dead letters appeared (print jobs or outbox rows). Subject: the printer or "outbox".
    DeadLetters,
    /// A circuit breaker opened. Subject: the breaker's name.
    BreakerOpen,
    /// A health check went critical. Subject: the check's name.
    HealthCritical,
    /// A controlled restart happened (raised at start from the restart ledger).
    SelfRestart,
    /// The self-restart limit was reached: the service stays up degraded.
    RestartLimit,
    /// The order sync is refused by Wix (401/403).
    SyncRefused,
    /// No order during opening hours for `ALERT_NO_ORDERS_SECS` (optional).
    NoOrders,
    /// A recovery finished after a long outage (INFO, with counts).
    RecoveryFinished,
    /// `SendTestAlert`.
    Test,
}

impl AlertKind {
    pub const ALL: [AlertKind; 13] = [
        AlertKind::PrinterNotReady,
        AlertKind::PaperLow,
        AlertKind::InternetOffline,
        AlertKind::PeerUnreachable,
        AlertKind::DeadLetters,
        AlertKind::BreakerOpen,
        AlertKind::HealthCritical,
        AlertKind::SelfRestart,
        AlertKind::RestartLimit,
        AlertKind::SyncRefused,
        AlertKind::NoOrders,
        AlertKind::RecoveryFinished,
        AlertKind::Test,
    ];

    /// Stored in the database and shown by `ListAlerts`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::PrinterNotReady => "printer_not_ready",
            AlertKind::PaperLow => "paper_low",
            AlertKind::InternetOffline => "internet_offline",
            AlertKind::PeerUnreachable => "peer_unreachable",
            AlertKind::DeadLetters => "dead_letters",
            AlertKind::BreakerOpen => "breaker_open",
            AlertKind::HealthCritical => "health_critical",
            AlertKind::SelfRestart => "self_restart",
            AlertKind::RestartLimit => "restart_limit",
            AlertKind::SyncRefused => "sync_refused",
            AlertKind::NoOrders => "no_orders",
            AlertKind::RecoveryFinished => "recovery_finished",
            AlertKind::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The catalogue's default severity.
    pub fn severity(self) -> Severity {
        match self {
            AlertKind::PrinterNotReady
            | AlertKind::InternetOffline
            | AlertKind::PeerUnreachable
            | AlertKind::HealthCritical
            | AlertKind::RestartLimit
            | AlertKind::SyncRefused => Severity::Critical,
            AlertKind::PaperLow
            | AlertKind::DeadLetters
            | AlertKind::BreakerOpen
            | AlertKind::SelfRestart
            | AlertKind::NoOrders => Severity::Warning,
            AlertKind::RecoveryFinished | AlertKind::Test => Severity::Info,
        }
    }
}

/// One alert as raised.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    /// What it is about: a printer's name, a breaker's, a check's; empty when the kind says all.
    pub subject: String,
    pub severity: Severity,
    /// When the condition began (wall clock, ms): "since when" in the mail.
    pub since_ms: i64,
    /// Named facts for the mail, in order, e.g. ("reason", "paper_out"), ("printed", "42").
    /// The delivery side renders them in the mail's language; values are shown as given.
    pub facts: Vec<(String, String)>,
}

impl Alert {
    /// An alert of `kind` about `subject` that began at `since_ms`, with the catalogue severity.
    pub fn new(kind: AlertKind, subject: impl Into<String>, since_ms: i64) -> Alert {
        Alert { kind, subject: subject.into(), severity: kind.severity(), since_ms, facts: Vec::new() }
    }

    pub fn fact(mut self, name: &str, value: impl ToString) -> Alert {
        self.facts.push((name.to_owned(), value.to_string()));
        self
    }
}

/// What the services call. Cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    sink: Arc<dyn Sink>,
}

/// The delivery side (the alert outbox), or a recorder in tests, or nothing.
pub trait Sink: Send + Sync + 'static {
    fn raise(&self, alert: Alert);
    fn resolve(&self, kind: AlertKind, subject: &str, facts: Vec<(String, String)>);
    /// Whether mail is configured (`GetStatus` says "alerts off" otherwise).
    fn enabled(&self) -> bool;
}

struct Off;

impl Sink for Off {
    fn raise(&self, _: Alert) {}
    fn resolve(&self, _: AlertKind, _: &str, _: Vec<(String, String)>) {}
    fn enabled(&self) -> bool {
        false
    }
}

impl Alerts {
    /// Alerts that go nowhere (mail not configured, tools).
    pub fn off() -> Alerts {
        Alerts { sink: Arc::new(Off) }
    }

    pub fn with_sink(sink: Arc<dyn Sink>) -> Alerts {
        Alerts { sink }
    }

    /// A condition began or an event happened. Returns at once; never fails.
    pub fn raise(&self, alert: Alert) {
        self.sink.raise(alert);
    }

    /// A condition raised before is over: a short "resolved" mail.
    pub fn resolve(&self, kind: AlertKind, subject: &str, facts: Vec<(String, String)>) {
        self.sink.resolve(kind, subject, facts);
    }

    pub fn enabled(&self) -> bool {
        self.sink.enabled()
    }
}

/// What [`Sustained::observe`] says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The condition has now held for the threshold: raise (once).
    Raise,
    /// A raised condition cleared: resolve (once).
    Resolve,
}

/// "Held longer than `threshold`": raise once when a condition has held that long, resolve
/// once when it clears after a raise (a condition that clears earlier says nothing).
#[derive(Debug, Clone)]
pub struct Sustained {
    threshold: Duration,
    since: Option<Instant>,
    raised: bool,
}

impl Sustained {
    pub fn new(threshold: Duration) -> Sustained {
        Sustained { threshold, since: None, raised: false }
    }

    /// Feeds one observation taken at `now`.
    pub fn observe(&mut self, active: bool, now: Instant) -> Option<Edge> {
        if active {
            let since = *self.since.get_or_insert(now);
            if !self.raised && now.saturating_duration_since(since) >= self.threshold {
                self.raised = true;
                return Some(Edge::Raise);
            }
            None
        } else {
            self.since = None;
            if std::mem::take(&mut self.raised) { Some(Edge::Resolve) } else { None }
        }
    }

    /// When the current condition began (monotonic), if it holds.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }
}

/// Turns observations into alerts: one [`Sustained`] per (kind, subject). The services feed it
/// what they see every tick; it raises and resolves through [`Alerts`].
pub struct Watcher {
    alerts: Alerts,
    held: HashMap<(AlertKind, String), Sustained>,
}

impl Watcher {
    pub fn new(alerts: Alerts) -> Watcher {
        Watcher { alerts, held: HashMap::new() }
    }

    pub fn alerts(&self) -> &Alerts {
        &self.alerts
    }

    /// One observation of `kind` about `subject`: `active` held for `after` raises (with the
    /// facts `facts` gives and the time the condition began), clearing after that resolves.
    pub fn observe(
        &mut self,
        kind: AlertKind,
        subject: &str,
        active: bool,
        after: Duration,
        now: Instant,
        facts: impl FnOnce() -> Vec<(String, String)>,
    ) -> Option<Edge> {
        let key = (kind, subject.to_owned());
        if !active && !self.held.contains_key(&key) {
            return None;
        }
        let s = self.held.entry(key).or_insert_with(|| Sustained::new(after));
        let began = s.since();
        let edge = s.observe(active, now);
        match edge {
            Some(Edge::Raise) => {
                let held = began.map_or(Duration::ZERO, |b| now.saturating_duration_since(b));
                let since_ms = crate::time::now_ms() - held.as_millis() as i64;
                let mut alert = Alert::new(kind, subject, since_ms);
                alert.facts = facts();
                tracing::warn!(alert = kind.as_str(), %subject, held_s = held.as_secs(), "alert raised");
                self.alerts.raise(alert);
            }
            Some(Edge::Resolve) => {
                let lasted = began.map_or(Duration::ZERO, |b| now.saturating_duration_since(b));
                tracing::info!(alert = kind.as_str(), %subject, lasted_s = lasted.as_secs(), "alert resolved");
                let mut f = facts();
                f.push(("duration".into(), format_duration(lasted)));
                self.alerts.resolve(kind, subject, f);
                self.held.remove(&(kind, subject.to_owned()));
            }
            None => {}
        }
        edge
    }

    /// When the condition (kind, subject) began, while it holds.
    pub fn held_since(&self, kind: AlertKind, subject: &str) -> Option<Instant> {
        self.held.get(&(kind, subject.to_owned())).and_then(|s| s.since())
    }

    /// An event, not a condition: raised at once, never resolved.
    pub fn event(&mut self, alert: Alert) {
        tracing::info!(alert = alert.kind.as_str(), subject = %alert.subject, "alert raised");
        self.alerts.raise(alert);
    }

    /// Every breaker of the service: open (or half-open) raises `breaker_open` at once;
    /// closed again resolves it.
    pub fn breakers(&mut self, breakers: &crate::breaker::Breakers, now: Instant) {
        for b in breakers.snapshots() {
            // Mail about the mail server's own breaker could only leave once it closed again.
            if b.name == "smtp" {
                continue;
            }
            let open = b.state != crate::breaker::State::Closed.as_str();
            self.observe(AlertKind::BreakerOpen, &b.name, open, Duration::ZERO, now, || {
                vec![("state".into(), b.state.clone()), ("reason".into(), b.reason.clone())]
            });
        }
    }

    /// The other service as the bus sees it: `unknown` for `after` raises `peer_unreachable`.
    pub fn peer(&mut self, name: &str, peer: &pb::PeerStatus, after: Duration, now: Instant) {
        let away = peer.state != "live";
        self.observe(AlertKind::PeerUnreachable, name, away, after, now, || vec![("peer".into(), name.to_owned())]);
    }

    /// Health: each check at critical or worse raises `health_critical`; degraded (the
    /// restart limit reached) raises `restart_limit`.
    pub fn health(&mut self, h: &pb::GetHealthResponse, now: Instant) {
        for c in &h.checks {
            let critical = matches!(c.state.as_str(), "critical" | "emergency");
            self.observe(AlertKind::HealthCritical, &c.name, critical, Duration::ZERO, now, || {
                vec![
                    ("state".into(), c.state.clone()),
                    ("value".into(), c.detail.clone()),
                    ("action".into(), c.last_action.clone()),
                ]
            });
        }
        self.observe(AlertKind::RestartLimit, "", h.degraded, Duration::ZERO, now, || {
            vec![("reason".into(), h.degraded_reason.clone())]
        });
    }
}

/// "1 h 5 min", "12 min", "40 s".
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sustained_raises_once_after_the_threshold_and_resolves_once() {
        let t0 = Instant::now();
        let mut s = Sustained::new(Duration::from_secs(300));
        assert_eq!(s.observe(true, t0), None);
        assert_eq!(s.observe(true, t0 + Duration::from_secs(299)), None);
        assert_eq!(s.observe(true, t0 + Duration::from_secs(300)), Some(Edge::Raise));
        assert_eq!(s.observe(true, t0 + Duration::from_secs(900)), None, "once");
        assert_eq!(s.observe(false, t0 + Duration::from_secs(901)), Some(Edge::Resolve));
        assert_eq!(s.observe(false, t0 + Duration::from_secs(902)), None);
        // A short blip says nothing.
        assert_eq!(s.observe(true, t0 + Duration::from_secs(1000)), None);
        assert_eq!(s.observe(false, t0 + Duration::from_secs(1010)), None);
    }

    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl Sink for Recorder {
        fn raise(&self, a: Alert) {
            self.0.lock().unwrap().push(format!("raise {} {} {:?}", a.kind.as_str(), a.subject, a.facts));
        }
        fn resolve(&self, kind: AlertKind, subject: &str, _: Vec<(String, String)>) {
            self.0.lock().unwrap().push(format!("resolve {} {subject}", kind.as_str()));
        }
        fn enabled(&self) -> bool {
            true
        }
    }

    #[test]
    fn the_watcher_raises_and_resolves_each_subject_once() {
        let rec = Arc::new(Recorder::default());
        let mut w = Watcher::new(Alerts::with_sink(rec.clone()));
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        let reason = || vec![("reason".to_owned(), "paper_out".to_owned())];
        w.observe(AlertKind::PrinterNotReady, "kitchen", true, after, t0, reason);
        w.observe(AlertKind::PrinterNotReady, "front", false, after, t0, reason);
        w.observe(AlertKind::PrinterNotReady, "kitchen", true, after, t0 + Duration::from_secs(61), reason);
        w.observe(AlertKind::PrinterNotReady, "kitchen", true, after, t0 + Duration::from_secs(62), reason);
        w.observe(AlertKind::PrinterNotReady, "kitchen", false, after, t0 + Duration::from_secs(70), Vec::new);
        w.observe(AlertKind::PrinterNotReady, "kitchen", false, after, t0 + Duration::from_secs(71), Vec::new);
        assert_eq!(
            *rec.0.lock().unwrap(),
            [
                "raise printer_not_ready kitchen [(\"reason\", \"paper_out\")]".to_owned(),
                "resolve printer_not_ready kitchen".to_owned()
            ]
        );
        assert_eq!(format_duration(Duration::from_secs(3900)), "1 h 5 min");
    }

    #[test]
    fn kinds_round_trip() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
    }
}
