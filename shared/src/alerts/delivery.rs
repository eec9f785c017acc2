//! The delivery side behind [`Sink`]: raise/resolve → a row in the service's own
//! `alert_outbox` (through one ordered writer task, so the caller never waits) → the delivery
//! loop: digest window, throttling, the `smtp` circuit breaker, one bounded SMTP send on this
//! task (never on the print path), retries with backoff.
//!
//! At-least-once, with a tiny window: a row is marked `sent` in the write that follows the
//! SMTP server's accept (the loop decides and records in one place). A crash between the
//! accept and that commit (one SQLite write, milliseconds) sends the mail again after the
//! restart, with the same `Message-ID` (mail clients that deduplicate show it once). Nothing
//! is ever marked sent before the server accepted it, so a crash never loses an alert.
//!
//! Must never: block or fail the caller, send on the caller's task, send while the breaker is
//! open, or wait on SMTP longer than `ALERT_SEND_TIMEOUT_MS`.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::config::AlertConfig;
use super::mail::{self, Item, Origin};
use super::store::{self, Event};
use super::{Alert, AlertKind, Alerts, Sink};
use crate::breaker::{Admission, Breaker};
use crate::db::Db;
use crate::proto::events as pb;
use crate::time::now_ms;

/// The breaker every send goes through (`ListBreakers`).
pub const BREAKER: &str = "smtp";

/// Pending rows one loop turn looks at.
const BATCH: u32 = 200;

/// Installs the process's rustls crypto provider (aws-lc-rs) once: lettre, reqwest and the
/// bus all use rustls, and with two providers linked rustls wants one chosen explicitly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A service's alerts: the handle its monitors raise through, and what its admin service
/// answers `SendTestAlert`, `ListAlerts` and `GetStatus.alerts` from.
#[derive(Clone)]
pub struct AlertService {
    pub alerts: Alerts,
    config: Option<Arc<AlertConfig>>,
    db: Db,
    wake: Arc<Notify>,
}

enum Queued {
    Raise(Alert),
    Resolve(AlertKind, String, Vec<(String, String)>),
}

struct Outbox {
    tx: mpsc::UnboundedSender<Queued>,
}

impl Sink for Outbox {
    fn raise(&self, alert: Alert) {
        let _ = self.tx.send(Queued::Raise(alert));
    }
    fn resolve(&self, kind: AlertKind, subject: &str, facts: Vec<(String, String)>) {
        let _ = self.tx.send(Queued::Resolve(kind, subject.to_owned(), facts));
    }
    fn enabled(&self) -> bool {
        true
    }
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

impl AlertService {
    /// Starts the outbox writer and the delivery loop (when mail is configured) and registers
    /// the `smtp` breaker in `healing`. Must run inside the tokio runtime.
    pub fn start(
        config: Option<AlertConfig>,
        healing: &crate::healing::Healing,
        service: &'static str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<AlertService> {
        let db = healing.db.clone();
        let wake = Arc::new(Notify::new());
        let Some(config) = config else {
            return Ok(AlertService { alerts: Alerts::off(), config: None, db, wake });
        };
        install_crypto_provider();
        let config = Arc::new(config);
        let transport = transport(&config)?;
        let breaker = healing.breakers.add(BREAKER, config.breaker);
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        // One writer task keeps raise/resolve in the order they were called.
        {
            let db = db.clone();
            let wake = wake.clone();
            tokio::spawn(async move {
                while let Some(q) = rx.recv().await {
                    let (alert, event) = match q {
                        Queued::Raise(a) => (a, Event::Raise),
                        Queued::Resolve(kind, subject, facts) => {
                            let mut a = Alert::new(kind, subject, now_ms());
                            a.facts = facts;
                            a.severity = super::Severity::Info;
                            (a, Event::Resolve)
                        }
                    };
                    let what = format!("{} {} {:?}", event.as_str(), alert.kind.as_str(), alert.subject);
                    match db.write(move |c| Ok(store::insert(c, &alert, event, now_ms())?)).await {
                        Ok(id) => {
                            tracing::info!(id, alert = %what, "alert queued");
                            wake.notify_one();
                        }
                        Err(e) => tracing::error!(error = format!("{e:#}"), alert = %what, "could not queue an alert"),
                    }
                }
            });
        }
        let origin = Origin { service, host: host_name() };
        tracing::info!(alerts = %config.describe(), "e-mail alerts on");
        let delivery =
            Delivery { db: db.clone(), config: config.clone(), transport, breaker, wake: wake.clone(), origin };
        tokio::spawn(delivery.run(shutdown));
        Ok(AlertService { alerts: Alerts::with_sink(Arc::new(Outbox { tx })), config: Some(config), db, wake })
    }

    /// `GetStatus.alerts`.
    pub fn status(&self) -> String {
        super::config::describe(self.config.as_deref())
    }

    /// `SendTestAlert`: queues a test alert (of `kind`, default `test`) and answers its id.
    pub async fn send_test(&self, req: pb::SendTestAlertRequest) -> Result<pb::SendTestAlertResponse, tonic::Status> {
        if self.config.is_none() {
            return Err(tonic::Status::failed_precondition(
                "e-mail alerts are off: set ALERT_SMTP_URL (and ALERT_FROM, ALERT_TO)",
            ));
        }
        let kind = if req.kind.is_empty() {
            AlertKind::Test
        } else {
            AlertKind::parse(&req.kind).ok_or_else(|| {
                let all = AlertKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
                tonic::Status::invalid_argument(format!("kind: {:?} is not one of {all}", req.kind))
            })?
        };
        if req.subject.chars().count() > 200 || req.subject.chars().any(char::is_control) {
            return Err(tonic::Status::invalid_argument("subject: at most 200 characters, no control characters"));
        }
        let now = now_ms();
        let alert = Alert::new(kind, req.subject, now);
        let id = self
            .db
            .write(move |c| Ok(store::insert(c, &alert, Event::Test, now)?))
            .await
            .map_err(|e| tonic::Status::internal(format!("queueing the test alert: {e:#}")))?;
        tracing::info!(id, kind = kind.as_str(), "test alert queued");
        self.wake.notify_one();
        Ok(pb::SendTestAlertResponse { id })
    }

    /// `ListAlerts`.
    pub async fn list(&self, req: pb::ListAlertsRequest) -> Result<pb::ListAlertsResponse, tonic::Status> {
        store::check_list_request(&req)?;
        let alerts = self
            .db
            .call(move |c| Ok(store::list(c, &req.state, req.limit)?))
            .await
            .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
        Ok(pb::ListAlertsResponse { alerts })
    }
}

/// The SMTP transport from the URL, the password file and the extra CA.
fn transport(cfg: &AlertConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp_url)?.timeout(Some(cfg.send_timeout));
    if let (Some(user), Some(pw)) = (&cfg.user, &cfg.password) {
        b = b.credentials(Credentials::new(user.clone(), pw.expose().to_owned()));
    }
    if !cfg.ca.is_empty() {
        let host = cfg
            .smtp_display
            .split("://")
            .nth(1)
            .and_then(|h| h.split(['?', '/']).next())
            .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).trim_matches(['[', ']']))
            .unwrap_or_default()
            .to_owned();
        let mut params = TlsParameters::builder(host);
        for der in &cfg.ca {
            params = params.add_root_certificate(Certificate::from_der(der.clone())?);
        }
        let params = params.build()?;
        let tls = if cfg.smtp_url.starts_with("smtps://") {
            Tls::Wrapper(params)
        } else if cfg.smtp_url.contains("tls=opportunistic") {
            Tls::Opportunistic(params)
        } else if cfg.smtp_url.contains("tls=required") {
            Tls::Required(params)
        } else {
            Tls::None
        };
        b = b.tls(tls);
    }
    Ok(b.build())
}

/// An error and its causes on one line (lettre's `Display` alone says "Connection error").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        src = c.source();
    }
    s
}

struct Delivery {
    db: Db,
    config: Arc<AlertConfig>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    breaker: Arc<Breaker>,
    wake: Arc<Notify>,
    origin: Origin,
}

/// What one turn of the loop decided for the rows it looked at.
struct Plan {
    /// Rows to carry in one mail, with what each reports.
    items: Vec<Item>,
    /// How long until the next turn has something to do (None = nothing pending).
    next: Option<Duration>,
    /// Rows this turn suppressed (throttled, or the resolve of a suppressed raise).
    suppressed: u64,
}

impl Delivery {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            let wait = match self.turn().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "alert delivery: database error; retrying in 5 s");
                    Some(Duration::from_secs(5))
                }
            };
            let sleep = wait.unwrap_or(Duration::from_secs(3600));
            if sleep.is_zero() {
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Decides (digest, throttle), sends at most one mail; returns how long to wait.
    async fn turn(&self) -> anyhow::Result<Option<Duration>> {
        let cfg = self.config.clone();
        let plan = self.db.write(move |c| Ok(plan(c, &cfg, now_ms())?)).await?;
        if plan.suppressed > 0 {
            counted(plan.suppressed, "suppressed");
        }
        if plan.items.is_empty() {
            return Ok(plan.next);
        }
        let ids: Vec<i64> = plan.items.iter().map(|i| i.row.id).collect();
        match self.breaker.admit() {
            Admission::Wait(d) => {
                let why = format!("not sent: the smtp breaker is open ({} s more)", d.as_secs().max(1));
                self.db.write(move |c| Ok(store::note(c, &ids, &why)?)).await?;
                return Ok(Some(d + Duration::from_millis(10)));
            }
            Admission::Go | Admission::Probe => {}
        }
        let mail_id = ids[0];
        let result = match mail::message(&self.config, &self.origin, &plan.items, mail_id) {
            Err(e) => Err(e),
            Ok(msg) => match tokio::time::timeout(self.config.send_timeout, self.transport.send(msg)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(chain(&e)),
                Err(_) => Err(format!(
                    "SMTP send timed out after {} ms (ALERT_SEND_TIMEOUT_MS)",
                    self.config.send_timeout.as_millis()
                )),
            },
        };
        match result {
            Ok(()) => {
                // Right after the accept: the at-least-once window is this one write.
                let now = now_ms();
                let sent = ids.clone();
                self.db.write(move |c| Ok(store::mark_sent(c, &sent, mail_id, now)?)).await?;
                self.breaker.success();
                counted(ids.len() as u64, "sent");
                tracing::info!(mail_id, alerts = ?ids, to = %self.config.describe(), "alert mail sent");
                Ok(Some(Duration::ZERO))
            }
            Err(error) => {
                self.breaker.failure(error.clone());
                let attempts = plan.items.iter().map(|i| i.row.attempts).max().unwrap_or(0) + 1;
                let delay = self.config.retry.delay(attempts - 1);
                let now = now_ms();
                let next = now + delay.as_millis() as i64;
                let max = self.config.max_attempts;
                send_failures().add(1, &[]);
                let given_up = plan.items.iter().filter(|i| max > 0 && i.row.attempts + 1 >= max).count();
                if given_up > 0 {
                    counted(given_up as u64, "failed");
                }
                tracing::warn!(mail_id, alerts = ?ids, attempts, error = %error, retry_in_ms = delay.as_millis() as u64,
                    "alert mail not sent");
                let e = error.clone();
                self.db.write(move |c| Ok(store::mark_attempt_failed(c, &ids, &e, next, max, now)?)).await?;
                Ok(Some(Duration::ZERO))
            }
        }
    }
}

/// Looks at the pending rows at `now`: suppresses what throttling says (in this write) and
/// returns the rows of the next mail, or how long until one is due.
fn plan(c: &rusqlite::Connection, cfg: &AlertConfig, now: i64) -> rusqlite::Result<Plan> {
    let rows = store::pending(c, BATCH)?;
    let horizon = cfg.retry.max().as_millis() as i64;
    // A stored time further ahead than the longest backoff is a clock step: due now.
    let due_at = |r: &store::Row| if r.next_attempt_ms > now + horizon { now } else { r.next_attempt_ms };
    let digest = cfg.digest.as_millis() as i64;
    let Some(first) = rows.iter().filter(|r| due_at(r) <= now).min_by_key(|r| r.id) else {
        let next = rows.iter().map(|r| (due_at(r) - now).max(1)).min();
        return Ok(Plan { items: Vec::new(), next: next.map(|ms| Duration::from_millis(ms as u64)), suppressed: 0 });
    };
    // A fresh alert waits out the digest window for related ones (a retry does not).
    if first.attempts == 0 && now < first.raised_ms + digest && first.raised_ms <= now {
        return Ok(Plan {
            items: Vec::new(),
            next: Some(Duration::from_millis((first.raised_ms + digest - now) as u64)),
            suppressed: 0,
        });
    }
    let window_end = first.raised_ms + digest;
    let batch: Vec<&store::Row> =
        rows.iter().filter(|r| due_at(r) <= now && (r.id == first.id || r.raised_ms <= window_end)).collect();
    let throttle = cfg.throttle.as_millis() as i64;
    let mut items = Vec::new();
    let mut kinds_in_mail: Vec<AlertKind> = Vec::new();
    let mut suppressed = 0;
    for r in batch {
        if r.event == Event::Resolve {
            match store::raise_state_before(c, r.kind, &r.subject, r.id)?.as_deref() {
                Some(store::SUPPRESSED) => {
                    store::mark_suppressed(c, r.id, now, "its raise was suppressed")?;
                    suppressed += 1;
                    continue;
                }
                Some(store::PENDING) if !items.iter().any(|i: &Item| i.row.kind == r.kind) => {
                    // Its raise waits (a later due time): resolve after it, never before.
                    continue;
                }
                _ => {}
            }
            items.push(Item { row: r.clone(), more: None });
            continue;
        }
        let last = store::last_sent_raise(c, r.kind)?;
        let throttled = kinds_in_mail.contains(&r.kind)
            || (throttle > 0 && last.is_some_and(|(_, at)| now - at < throttle && at <= now));
        if throttled {
            store::mark_suppressed(c, r.id, now, "throttled: one mail per kind per ALERT_THROTTLE_SECS")?;
            suppressed += 1;
            continue;
        }
        let after = last.map_or(0, |(id, _)| id);
        let (n, first_ms) = store::suppressed_between(c, r.kind, after, r.id)?;
        kinds_in_mail.push(r.kind);
        items.push(Item { row: r.clone(), more: first_ms.map(|f| (n, f)) });
    }
    Ok(Plan { items, next: Some(Duration::ZERO), suppressed })
}

/// `wixprint.alerts` {result}: alerts mailed (`sent`), throttled (`suppressed`) or given up
/// after the last attempt (`failed`).
fn alerts_counter() -> &'static opentelemetry::metrics::Counter<u64> {
    static C: std::sync::LazyLock<opentelemetry::metrics::Counter<u64>> = std::sync::LazyLock::new(|| {
        crate::telemetry::meter()
            .u64_counter("wixprint.alerts")
            .with_description("Alerts by result: sent (in a mail the server accepted), suppressed (throttled), failed (given up after ALERT_MAX_ATTEMPTS)")
            .with_unit("{alert}")
            .build()
    });
    &C
}

fn counted(n: u64, result: &'static str) {
    alerts_counter().add(n, &[opentelemetry::KeyValue::new("result", result)]);
}

/// `wixprint.alerts.send.failures`: mail sends that failed (each is retried with backoff).
fn send_failures() -> &'static opentelemetry::metrics::Counter<u64> {
    static C: std::sync::LazyLock<opentelemetry::metrics::Counter<u64>> = std::sync::LazyLock::new(|| {
        crate::telemetry::meter()
            .u64_counter("wixprint.alerts.send.failures")
            .with_description(
                "Alert mail sends that failed (SMTP refused, timed out, TLS); each is retried with backoff",
            )
            .with_unit("{mail}")
            .build()
    });
    &C
}

/// Reports every alert counter from the start (0), so "none yet" is a value, not a gap.
pub(crate) fn register_metrics() {
    for result in ["sent", "suppressed", "failed"] {
        counted(0, result);
    }
    send_failures().add(0, &[]);
}
