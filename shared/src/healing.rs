//! What both services remember about healing themselves: `self_healing_events` (a breaker
//! changed state, a health check changed state, a healing action ran with its before/after, a
//! self-restart was asked for or refused) and the restart ledger (`self_restarts`).
//!
//! Owns the schema ([`HEALING_MIGRATION`]) and its queries, on a plain `&rusqlite::Connection`
//! so they compose with the caller's statements inside `Db::write` / `Db::call`.
//!
//! Must never: decide anything. Breakers (`breaker`), checks and restarts (`health`) decide;
//! this only writes down and reads back.

use std::sync::Arc;

use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breakers;
use crate::db::{Cached, Db};
use crate::proto::events as pb;
use crate::time::timestamp_from_ms;

/// Kinds of [`HealingEvent`].
pub const KIND_BREAKER: &str = "breaker";
pub const KIND_CHECK: &str = "check";
pub const KIND_ACTION: &str = "action";
pub const KIND_RESTART: &str = "restart";

/// One migration (append it to the service's migration list).
pub const HEALING_MIGRATION: &str = "
CREATE TABLE self_healing_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    action TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX self_healing_events_kind ON self_healing_events (kind, id);
CREATE INDEX self_healing_events_at ON self_healing_events (at_ms);
CREATE TABLE self_restarts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX self_restarts_at ON self_restarts (at_ms);
";

/// One event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealingEvent {
    pub at_ms: i64,
    pub kind: &'static str,
    pub subject: String,
    pub action: String,
    pub before: String,
    pub after: String,
    pub detail: String,
}

impl HealingEvent {
    /// A breaker's state change.
    pub fn breaker(c: &crate::breaker::Change) -> HealingEvent {
        HealingEvent {
            at_ms: c.at_ms,
            kind: KIND_BREAKER,
            subject: c.breaker.clone(),
            action: c.action.into(),
            before: c.from.as_str().into(),
            after: c.to.as_str().into(),
            detail: c.detail.clone(),
        }
    }
}

pub fn record(conn: &Connection, e: &HealingEvent) -> rusqlite::Result<i64> {
    conn.row(
        "INSERT INTO self_healing_events (at_ms, kind, subject, action, before, after, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        rusqlite::params![e.at_ms, e.kind, e.subject, e.action, e.before, e.after, e.detail],
        |r| r.get(0),
    )
}

/// Rows [`list`] returns when asked for `limit = 0`, and the most it returns.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Newest first; `kind` empty = all kinds.
pub fn list(conn: &Connection, kind: &str, limit: u32) -> rusqlite::Result<Vec<pb::HealingEvent>> {
    let limit = if limit == 0 { DEFAULT_LIST_LIMIT } else { limit.min(MAX_LIST_LIMIT) };
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, kind, subject, action, before, after, detail FROM self_healing_events
         WHERE (?1 = '' OR kind = ?1) ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![kind, limit], |r| {
        Ok(pb::HealingEvent {
            id: r.get(0)?,
            at: Some(timestamp_from_ms(r.get(1)?)),
            kind: r.get(2)?,
            subject: r.get(3)?,
            action: r.get(4)?,
            before: r.get(5)?,
            after: r.get(6)?,
            detail: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// Checks a `ListHealingEvents` request; the error names the field.
pub fn check_list_request(req: &pb::ListHealingEventsRequest) -> Result<(), tonic::Status> {
    if req.limit > MAX_LIST_LIMIT {
        return Err(tonic::Status::invalid_argument(format!("limit: at most {MAX_LIST_LIMIT}, got {}", req.limit)));
    }
    if !req.kind.is_empty() && ![KIND_BREAKER, KIND_CHECK, KIND_ACTION, KIND_RESTART].contains(&req.kind.as_str()) {
        return Err(tonic::Status::invalid_argument(format!(
            "kind: {:?} is not one of breaker, check, action, restart",
            req.kind
        )));
    }
    Ok(())
}

/// Writes a self-restart into the ledger.
pub fn record_restart(conn: &Connection, at_ms: i64, reason: &str) -> rusqlite::Result<()> {
    conn.exec("INSERT INTO self_restarts (at_ms, reason) VALUES (?1, ?2)", rusqlite::params![at_ms, reason])?;
    Ok(())
}

/// Self-restarts at or after `since_ms`: their count and the newest one's time.
pub fn restarts_since(conn: &Connection, since_ms: i64) -> rusqlite::Result<(u32, Option<i64>)> {
    conn.row("SELECT COUNT(*), MAX(at_ms) FROM self_restarts WHERE at_ms >= ?1", [since_ms], |r| {
        Ok((r.get::<_, i64>(0)? as u32, r.get(1)?))
    })
}

/// The newest self-restart ever recorded.
pub fn last_restart(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.row("SELECT MAX(at_ms) FROM self_restarts", [], |r| r.get(0))
}

/// Deletes up to `limit` events and ledger rows older than `before_ms`; returns how many.
pub fn prune(conn: &Connection, before_ms: i64, limit: u32) -> rusqlite::Result<usize> {
    let events = conn.exec(
        "DELETE FROM self_healing_events WHERE id IN
           (SELECT id FROM self_healing_events WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
        rusqlite::params![before_ms, limit],
    )?;
    let restarts = conn.exec(
        "DELETE FROM self_restarts WHERE id IN (SELECT id FROM self_restarts WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
        rusqlite::params![before_ms, limit],
    )?;
    Ok(events + restarts)
}

/// Prunes events and ledger rows older than `cutoff_ms` in batches (each its own write).
pub async fn prune_all(db: &Db, cutoff_ms: i64) -> anyhow::Result<usize> {
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

/// A service's self-healing state: its breakers and the database their history goes to.
/// The admin services answer `ListBreakers`, `ResetBreaker` and `ListHealingEvents` from it.
#[derive(Clone)]
pub struct Healing {
    pub db: Db,
    pub breakers: Arc<Breakers>,
    /// Where a controlled restart is announced (issue 12); off unless the service sets it.
    pub alerts: crate::alerts::Alerts,
}

impl Healing {
    pub fn new(db: Db) -> Healing {
        Healing { db, breakers: Breakers::new(), alerts: crate::alerts::Alerts::off() }
    }

    /// The same, announcing controlled restarts through `alerts`.
    pub fn with_alerts(mut self, alerts: crate::alerts::Alerts) -> Healing {
        self.alerts = alerts;
        self
    }

    /// Writes one event (a failed write is logged, never fatal to the caller's work).
    pub async fn record(&self, e: HealingEvent) {
        if let Err(err) = self.db.write(move |c| Ok(record(c, &e)?)).await {
            tracing::error!(error = format!("{err:#}"), "could not record a self-healing event");
        }
    }

    /// Drains the breakers' changes until shutdown: each is logged once and recorded.
    pub fn spawn_recorder(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let rx = self.breakers.take_changes();
        let this = self.clone();
        tokio::spawn(async move {
            let Some(mut rx) = rx else { return };
            loop {
                let change = tokio::select! {
                    c = rx.recv() => match c { Some(c) => c, None => return },
                    _ = shutdown.cancelled() => return,
                };
                crate::breaker::log_change(&change);
                this.record(HealingEvent::breaker(&change)).await;
            }
        })
    }

    /// `ListHealingEvents`.
    pub async fn list(
        &self,
        req: pb::ListHealingEventsRequest,
    ) -> Result<pb::ListHealingEventsResponse, tonic::Status> {
        check_list_request(&req)?;
        let events = self
            .db
            .call(move |c| Ok(list(c, &req.kind, req.limit)?))
            .await
            .map_err(|e| tonic::Status::internal(format!("{e:#}")))?;
        Ok(pb::ListHealingEventsResponse { events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(HEALING_MIGRATION).unwrap();
        c
    }

    #[test]
    fn records_lists_newest_first_and_prunes() {
        let c = db();
        for (i, kind) in [KIND_BREAKER, KIND_ACTION, KIND_BREAKER].into_iter().enumerate() {
            record(
                &c,
                &HealingEvent {
                    at_ms: 1000 * (i as i64 + 1),
                    kind,
                    subject: "printer:kitchen".into(),
                    action: "opened".into(),
                    before: "closed".into(),
                    after: "open".into(),
                    detail: format!("#{i}"),
                },
            )
            .unwrap();
        }
        let all = list(&c, "", 0).unwrap();
        assert_eq!(all.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(), ["#2", "#1", "#0"]);
        assert_eq!(list(&c, KIND_ACTION, 0).unwrap().len(), 1);
        record_restart(&c, 1500, "memory critical").unwrap();
        assert_eq!(restarts_since(&c, 1000).unwrap(), (1, Some(1500)));
        assert_eq!(restarts_since(&c, 2000).unwrap(), (0, None));
        assert_eq!(prune(&c, 2500, 500).unwrap(), 3);
        assert_eq!(list(&c, "", 0).unwrap().len(), 1);
        assert!(check_list_request(&pb::ListHealingEventsRequest { limit: 5000, kind: String::new() }).is_err());
        assert!(check_list_request(&pb::ListHealingEventsRequest { limit: 1, kind: "bogus".into() }).is_err());
    }
}
