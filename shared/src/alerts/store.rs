//! The alert outbox table (`alert_outbox`, one per service database) and its queries, on a
//! plain `&rusqlite::Connection` so they compose inside `Db::write` / `Db::call`.
//!
//! A row is one raise, resolve or test alert. States: `pending` (not yet decided),
//! `sent` (carried by a mail the SMTP server accepted; `mail_id` = the row whose mail),
//! `suppressed` (throttled: counted in the next mail of its kind), `failed` (gave up after
//! `ALERT_MAX_ATTEMPTS`).
//!
//! Must never: decide anything (the delivery loop does) or send mail.

use rusqlite::{Connection, OptionalExtension};

use super::{Alert, AlertKind, Severity};
use crate::db::Cached;
use crate::proto::events as pb;
use crate::time::timestamp_from_ms;

/// One migration (append it to the service's migration list).
pub const ALERT_MIGRATION: &str = "
CREATE TABLE alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    severity TEXT NOT NULL,
    event TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    raised_ms INTEGER NOT NULL,
    facts TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    decided_ms INTEGER,
    mail_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alert_outbox_state ON alert_outbox (state, id);
CREATE INDEX alert_outbox_kind ON alert_outbox (kind, state, id);
CREATE INDEX alert_outbox_raised ON alert_outbox (raised_ms);
";

pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const SUPPRESSED: &str = "suppressed";
pub const FAILED: &str = "failed";
pub const STATES: [&str; 4] = [PENDING, SENT, SUPPRESSED, FAILED];

/// What a row says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Raise,
    Resolve,
    /// `SendTestAlert`: throttled like a raise of its kind.
    Test,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Raise => "raise",
            Event::Resolve => "resolve",
            Event::Test => "test",
        }
    }
    fn parse(s: &str) -> Event {
        match s {
            "resolve" => Event::Resolve,
            "test" => Event::Test,
            _ => Event::Raise,
        }
    }
}

/// A row as the delivery loop sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub kind: AlertKind,
    pub subject: String,
    pub severity: Severity,
    pub event: Event,
    pub since_ms: i64,
    pub raised_ms: i64,
    pub facts: Vec<(String, String)>,
    pub attempts: u32,
    pub next_attempt_ms: i64,
}

fn severity(s: &str) -> Severity {
    match s {
        "CRITICAL" => Severity::Critical,
        "WARNING" => Severity::Warning,
        _ => Severity::Info,
    }
}

fn facts_json(facts: &[(String, String)]) -> String {
    serde_json::to_string(facts).unwrap_or_else(|_| "[]".into())
}

fn facts_from(text: &str) -> Vec<(String, String)> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Queues one alert; returns its id.
pub fn insert(conn: &Connection, alert: &Alert, event: Event, now_ms: i64) -> rusqlite::Result<i64> {
    conn.row(
        "INSERT INTO alert_outbox (kind, subject, severity, event, since_ms, raised_ms, facts, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?6) RETURNING id",
        rusqlite::params![
            alert.kind.as_str(),
            alert.subject,
            alert.severity.as_str(),
            event.as_str(),
            alert.since_ms,
            now_ms,
            facts_json(&alert.facts)
        ],
        |r| r.get(0),
    )
}

/// Pending rows, oldest first (at most `limit`).
pub fn pending(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, subject, severity, event, since_ms, raised_ms, facts, attempts, next_attempt_ms
         FROM alert_outbox WHERE state = 'pending' ORDER BY id LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        let kind: String = r.get(1)?;
        Ok((
            kind,
            Row {
                id: r.get(0)?,
                kind: AlertKind::Test,
                subject: r.get(2)?,
                severity: severity(&r.get::<_, String>(3)?),
                event: Event::parse(&r.get::<_, String>(4)?),
                since_ms: r.get(5)?,
                raised_ms: r.get(6)?,
                facts: facts_from(&r.get::<_, String>(7)?),
                attempts: r.get(8)?,
                next_attempt_ms: r.get(9)?,
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, mut row) = row?;
        // A kind this build does not know (a newer build wrote it) is delivered as what it says.
        row.kind = AlertKind::parse(&kind).unwrap_or(AlertKind::Test);
        out.push(row);
    }
    Ok(out)
}

/// When the last mail carrying a raise or test of `kind` was accepted, and that row's id.
pub fn last_sent_raise(conn: &Connection, kind: AlertKind) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.row(
        "SELECT id, decided_ms FROM alert_outbox
         WHERE kind = ?1 AND state = 'sent' AND event != 'resolve' ORDER BY id DESC LIMIT 1",
        [kind.as_str()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// The state of the newest raise of (`kind`, `subject`) before row `before_id`.
pub fn raise_state_before(
    conn: &Connection,
    kind: AlertKind,
    subject: &str,
    before_id: i64,
) -> rusqlite::Result<Option<String>> {
    conn.row(
        "SELECT state FROM alert_outbox WHERE kind = ?1 AND subject = ?2 AND event != 'resolve' AND id < ?3
         ORDER BY id DESC LIMIT 1",
        rusqlite::params![kind.as_str(), subject, before_id],
        |r| r.get(0),
    )
    .optional()
}

/// Suppressed raises of `kind` after row `after_id` and before row `before_id`: their count
/// and the first one's time.
pub fn suppressed_between(
    conn: &Connection,
    kind: AlertKind,
    after_id: i64,
    before_id: i64,
) -> rusqlite::Result<(u32, Option<i64>)> {
    conn.row(
        "SELECT COUNT(*), MIN(raised_ms) FROM alert_outbox
         WHERE kind = ?1 AND state = 'suppressed' AND event != 'resolve' AND id > ?2 AND id < ?3",
        rusqlite::params![kind.as_str(), after_id, before_id],
        |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?)),
    )
}

pub fn mark_suppressed(conn: &Connection, id: i64, now_ms: i64, why: &str) -> rusqlite::Result<()> {
    conn.exec(
        "UPDATE alert_outbox SET state = 'suppressed', decided_ms = ?2, last_error = ?3 WHERE id = ?1 AND state = 'pending'",
        rusqlite::params![id, now_ms, why],
    )?;
    Ok(())
}

/// The rows `ids` went out in the mail of row `mail_id`, accepted at `now_ms`.
pub fn mark_sent(conn: &Connection, ids: &[i64], mail_id: i64, now_ms: i64) -> rusqlite::Result<()> {
    for id in ids {
        conn.exec(
            "UPDATE alert_outbox SET state = 'sent', attempts = attempts + 1, last_error = '',
               decided_ms = ?2, mail_id = ?3 WHERE id = ?1 AND state = 'pending'",
            rusqlite::params![id, now_ms, mail_id],
        )?;
    }
    Ok(())
}

/// A send of rows `ids` failed: one more attempt, the error, and when to try again (or
/// `failed` once `give_up`).
pub fn mark_attempt_failed(
    conn: &Connection,
    ids: &[i64],
    error: &str,
    next_attempt_ms: i64,
    max_attempts: u32,
    now_ms: i64,
) -> rusqlite::Result<()> {
    for id in ids {
        conn.exec(
            "UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3,
               state = CASE WHEN ?4 > 0 AND attempts + 1 >= ?4 THEN 'failed' ELSE 'pending' END,
               decided_ms = CASE WHEN ?4 > 0 AND attempts + 1 >= ?4 THEN ?5 ELSE decided_ms END
             WHERE id = ?1 AND state = 'pending'",
            rusqlite::params![id, error, next_attempt_ms, max_attempts, now_ms],
        )?;
    }
    Ok(())
}

/// Rows not sent for a reason that is no attempt (the breaker is open): the reason, unless
/// an earlier send left its error.
pub fn note(conn: &Connection, ids: &[i64], why: &str) -> rusqlite::Result<()> {
    for id in ids {
        conn.exec(
            // The last real error stays (ListAlerts shows why a send failed); an alert never
            // tried says why it waits.
            "UPDATE alert_outbox SET last_error = ?2 WHERE id = ?1 AND state = 'pending' AND last_error = ''",
            rusqlite::params![id, why],
        )?;
    }
    Ok(())
}

/// Rows [`list`] returns when asked for `limit = 0`, and the most it returns.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Checks a `ListAlerts` request; the error names the field.
pub fn check_list_request(req: &pb::ListAlertsRequest) -> Result<(), tonic::Status> {
    if req.limit > MAX_LIST_LIMIT {
        return Err(tonic::Status::invalid_argument(format!("limit: at most {MAX_LIST_LIMIT}, got {}", req.limit)));
    }
    if !req.state.is_empty() && !STATES.contains(&req.state.as_str()) {
        return Err(tonic::Status::invalid_argument(format!(
            "state: {:?} is not one of pending, sent, suppressed, failed",
            req.state
        )));
    }
    Ok(())
}

/// Newest first; `state` empty = all.
pub fn list(conn: &Connection, state: &str, limit: u32) -> rusqlite::Result<Vec<pb::AlertRecord>> {
    let limit = if limit == 0 { DEFAULT_LIST_LIMIT } else { limit.min(MAX_LIST_LIMIT) };
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, subject, severity, event, state, attempts, last_error, raised_ms, since_ms, decided_ms,
                mail_id, facts
         FROM alert_outbox WHERE (?1 = '' OR state = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![state, limit], |r| {
        Ok(pb::AlertRecord {
            id: r.get(0)?,
            kind: r.get(1)?,
            subject: r.get(2)?,
            severity: r.get(3)?,
            event: r.get(4)?,
            state: r.get(5)?,
            attempts: r.get(6)?,
            last_error: r.get(7)?,
            raised_at: Some(timestamp_from_ms(r.get(8)?)),
            since: Some(timestamp_from_ms(r.get(9)?)),
            decided_at: r.get::<_, Option<i64>>(10)?.map(timestamp_from_ms),
            mail_id: r.get(11)?,
            facts: facts_from(&r.get::<_, String>(12)?).into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        })
    })?;
    rows.collect()
}

/// Deletes up to `limit` decided rows raised before `before_ms` (never a pending one).
pub fn prune(conn: &Connection, before_ms: i64, limit: u32) -> rusqlite::Result<usize> {
    conn.exec(
        "DELETE FROM alert_outbox WHERE id IN
           (SELECT id FROM alert_outbox WHERE raised_ms < ?1 AND state != 'pending' ORDER BY raised_ms LIMIT ?2)",
        rusqlite::params![before_ms, limit],
    )
}

/// Prunes in batches (each its own write).
pub async fn prune_all(db: &crate::db::Db, cutoff_ms: i64) -> anyhow::Result<usize> {
    let batch = crate::retention::BATCH as u32;
    let mut total = 0;
    loop {
        let n = db.write(move |c| Ok(prune(c, cutoff_ms, batch)?)).await?;
        total += n;
        if n < batch as usize {
            return Ok(total);
        }
    }
}
