//! The ingest database: webhook events (delivery dedupe), orders (latest version of each) and
//! the outbox of order versions still to hand to wix-print.
//!
//! It also holds the connectivity history (`connectivity_events`, schema and queries from
//! `wixprint_shared::connectivity`): what the internet monitor confirmed, and when.
//!
//! Invariant: an order version and its outbox row are written in the same transaction, and
//! the webhook is answered only after that transaction committed. Nothing here talks to the
//! network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::time::Instant;

use wixprint_shared::connectivity;
use wixprint_shared::db::{Cached, Db};
use wixprint_shared::proto::events::ConnectivityEvent;
use wixprint_shared::proto::order::{Order, OrderSource};
use wixprint_shared::proto::print::SubmitOrderRequest;
use wixprint_shared::time::now_ms;

use crate::wix::{EventKind, WebhookEvent};

pub static MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE webhook_events (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    sequence     INTEGER,
    received_ms  INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    payload      TEXT NOT NULL
);
CREATE INDEX webhook_events_entity ON webhook_events(entity_id);
CREATE TABLE orders (
    order_id     TEXT PRIMARY KEY,
    number       TEXT NOT NULL,
    status       INTEGER NOT NULL,
    source       INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    sequence     INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    order_pb     BLOB NOT NULL
);
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        TEXT NOT NULL REFERENCES orders(order_id),
    version         INTEGER NOT NULL,
    request_pb      BLOB NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    delivered_ms    INTEGER,
    UNIQUE(order_id, version)
);
CREATE INDEX outbox_pending ON outbox(state, id);
"#,
    r#"
CREATE TABLE local_counters (
    day  TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
);
CREATE TABLE sync_state (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    watermark_ms     INTEGER,
    last_success_ms  INTEGER
);
"#,
    r#"
CREATE TABLE held_events (
    event_id    TEXT PRIMARY KEY REFERENCES webhook_events(event_id),
    order_id    TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    order_pb    BLOB NOT NULL,
    release_ms  INTEGER NOT NULL
);
CREATE INDEX held_events_order ON held_events(order_id, sequence);
CREATE INDEX held_events_release ON held_events(release_ms);
"#,
    connectivity::CONNECTIVITY_MIGRATION,
    r#"
CREATE INDEX webhook_events_received ON webhook_events(received_ms);
CREATE INDEX orders_received ON orders(received_ms);
CREATE INDEX outbox_order ON outbox(order_id);
"#,
    // Row counts kept by triggers: GetStatus reads a few rows instead of counting whole tables
    // on the writer thread (a million stored events would cost every status call a full scan).
    r#"
CREATE TABLE row_counts (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO row_counts SELECT 'webhook_events', count(*) FROM webhook_events;
INSERT INTO row_counts SELECT 'orders', count(*) FROM orders;
INSERT INTO row_counts SELECT 'held_events', count(*) FROM held_events;
INSERT INTO row_counts SELECT 'outbox:' || state, count(*) FROM outbox GROUP BY state;
CREATE TRIGGER webhook_events_count_ins AFTER INSERT ON webhook_events
  BEGIN UPDATE row_counts SET n = n + 1 WHERE name = 'webhook_events'; END;
CREATE TRIGGER webhook_events_count_del AFTER DELETE ON webhook_events
  BEGIN UPDATE row_counts SET n = n - 1 WHERE name = 'webhook_events'; END;
CREATE TRIGGER orders_count_ins AFTER INSERT ON orders
  BEGIN UPDATE row_counts SET n = n + 1 WHERE name = 'orders'; END;
CREATE TRIGGER orders_count_del AFTER DELETE ON orders
  BEGIN UPDATE row_counts SET n = n - 1 WHERE name = 'orders'; END;
CREATE TRIGGER held_events_count_ins AFTER INSERT ON held_events
  BEGIN UPDATE row_counts SET n = n + 1 WHERE name = 'held_events'; END;
CREATE TRIGGER held_events_count_del AFTER DELETE ON held_events
  BEGIN UPDATE row_counts SET n = n - 1 WHERE name = 'held_events'; END;
CREATE TRIGGER outbox_count_ins AFTER INSERT ON outbox BEGIN
  INSERT OR IGNORE INTO row_counts (name, n) VALUES ('outbox:' || NEW.state, 0);
  UPDATE row_counts SET n = n + 1 WHERE name = 'outbox:' || NEW.state;
END;
CREATE TRIGGER outbox_count_del AFTER DELETE ON outbox
  BEGIN UPDATE row_counts SET n = n - 1 WHERE name = 'outbox:' || OLD.state; END;
CREATE TRIGGER outbox_count_upd AFTER UPDATE OF state ON outbox WHEN OLD.state IS NOT NEW.state BEGIN
  UPDATE row_counts SET n = n - 1 WHERE name = 'outbox:' || OLD.state;
  INSERT OR IGNORE INTO row_counts (name, n) VALUES ('outbox:' || NEW.state, 0);
  UPDATE row_counts SET n = n + 1 WHERE name = 'outbox:' || NEW.state;
END;
"#,
    // Refusals by wix-print (answers, not transport failures): a row refused
    // `outbox_dead_after` times becomes `dead` (issue 10 §6).
    r#"
ALTER TABLE outbox ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE local_requests (
    request_id  TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
);
"#,
    wixprint_shared::healing::HEALING_MIGRATION,
    wixprint_shared::alerts::ALERT_MIGRATION,
    // Issue 13: the W3C traceparent of the webhook span that stored the version (NULL without
    // traces), so forwarding it continues the same trace after any wait or restart.
    "ALTER TABLE outbox ADD COLUMN traceparent TEXT;",
];

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub webhook_events: u64,
    pub orders: u64,
    pub outbox: u64,
    pub held_events: u64,
}

/// What storing a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// This event id was stored before: nothing changed.
    Duplicate,
    /// A new version of the order was stored and queued for wix-print.
    Applied { order_id: String, version: i64 },
    /// Older than what we have (sequence / updatedDate): recorded, nothing forwarded.
    Stale { order_id: String },
    /// An event this service records without acting on it (yet).
    Recorded,
    /// An order event that arrived after a gap in Wix's sequence: held (durably) for the
    /// reorder window so the earlier events can go first.
    Held { order_id: String },
}

impl Recorded {
    pub fn outcome(&self) -> &'static str {
        match self {
            Recorded::Duplicate => "duplicate",
            Recorded::Applied { .. } => "applied",
            Recorded::Stale { .. } => "stale",
            Recorded::Recorded => "recorded",
            Recorded::Held { .. } => "held",
        }
    }
}

/// An outbox row's state; converts to and from its SQL value here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Still to hand to wix-print (retried with backoff).
    Pending,
    /// wix-print acknowledged it.
    Delivered,
    /// wix-print refused it as invalid (before issue 11; such refusals are `Dead` now): kept,
    /// not retried.
    Rejected,
    /// wix-print refused it (not as invalid) `outbox_dead_after` times: a dead letter, not
    /// retried until an operator requeues it (`IngestAdmin/RequeueOutbox`).
    Dead,
}

impl OutboxState {
    pub const ALL: [OutboxState; 4] =
        [OutboxState::Pending, OutboxState::Delivered, OutboxState::Rejected, OutboxState::Dead];

    pub fn as_sql(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Delivered => "delivered",
            OutboxState::Rejected => "rejected",
            OutboxState::Dead => "dead",
        }
    }

    pub fn from_sql(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_sql() == s)
    }
}

/// The outbox and webhook counts `GetStatus` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub orders: u64,
    pub webhook_events: u64,
    pub outbox_pending: u64,
    pub outbox_delivered: u64,
    pub outbox_rejected: u64,
    /// Dead letters: rows refused `outbox_dead_after` times, and the oldest one's creation.
    pub outbox_dead: u64,
    pub outbox_oldest_dead_ms: Option<i64>,
    pub held_events: u64,
    /// Creation time of the oldest pending outbox row.
    pub outbox_oldest_pending_ms: Option<i64>,
    pub last_webhook_ms: Option<i64>,
    /// The error of the oldest pending row that failed.
    pub outbox_last_error: Option<String>,
}

/// An order as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSummary {
    pub id: String,
    pub number: String,
    /// `OrderStatus` / `OrderSource` numbers, as stored.
    pub status: i32,
    pub source: i32,
    pub version: i64,
    pub created_ms: Option<i64>,
    pub received_ms: Option<i64>,
    /// Every version handed to wix-print.
    pub delivered: bool,
}

/// One outbox row of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: i64,
    pub version: i64,
    pub state: OutboxState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_ms: Option<i64>,
    pub delivered_ms: Option<i64>,
}

/// One webhook event of an order.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEntry {
    pub event_id: String,
    pub event_type: String,
    pub sequence: i64,
    pub received_ms: Option<i64>,
    /// What storing it did ([`Recorded::outcome`]).
    pub outcome: String,
}

/// An order with its latest version, outbox rows and webhook events.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderDetail {
    pub summary: OrderSummary,
    pub order: Order,
    pub outbox: Vec<OutboxEntry>,
    pub events: Vec<EventEntry>,
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub order_id: String,
    pub version: i64,
    pub attempts: u32,
    /// Times wix-print answered with a (non-permanent) refusal.
    pub refusals: u32,
    pub request: SubmitOrderRequest,
    /// The trace the version belongs to (the webhook's span), when traces were on.
    pub traceparent: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Monotonic release deadlines of held events, by event id.
    held: Arc<Mutex<HashMap<String, Instant>>>,
}

/// A held event's release deadline on the monotonic clock: `now` plus what its stored
/// wall-clock hint says is left, clamped to `0..=window` (a hint from before a clock step can
/// neither keep it longer than the window nor make it due before now).
pub fn held_deadline(now: Instant, now_ms: i64, release_ms: i64, window: Duration) -> Instant {
    let left = u64::try_from(release_ms.saturating_sub(now_ms)).unwrap_or(0);
    now + Duration::from_millis(left).min(window)
}

/// Whether a pending row with this stored retry time is due: its time has come, or it lies
/// further ahead than the longest backoff could have put it (the wall clock stepped back).
pub fn outbox_due(next_attempt_ms: i64, now_ms: i64, max_backoff: Duration) -> bool {
    next_attempt_ms <= now_ms
        || next_attempt_ms > now_ms.saturating_add(wixprint_shared::time::duration_ms(max_backoff))
}

impl Store {
    pub fn open(path: &std::path::Path, busy_timeout: std::time::Duration) -> anyhow::Result<Self> {
        Ok(Self { db: Db::open_with(path, MIGRATIONS, busy_timeout)?, held: Arc::default() })
    }

    fn held_deadlines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a verified webhook in one transaction: the event (dedupe on its id) and, for an
    /// event that carries a newer order, the order version plus its outbox row (with
    /// `traceparent`, the webhook's trace; also for held versions this event releases).
    pub async fn record_webhook(
        &self,
        event: WebhookEvent,
        source: OrderSource,
        reorder_window_ms: i64,
        traceparent: Option<String>,
    ) -> anyhow::Result<Recorded> {
        let event_id = event.event_id.clone();
        let recorded = self
            .db
            .write(move |tx| {
                // Test hook: the writer thread panics in the middle of a webhook's transaction.
                if wixprint_shared::fatal::failpoint("webhook-write-panic") {
                    panic!("failpoint webhook-write-panic");
                }
                let now = now_ms();
                let inserted = tx.exec(
                    "INSERT INTO webhook_events (event_id, event_type, entity_id, sequence, received_ms, outcome, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'recorded', ?6) ON CONFLICT(event_id) DO NOTHING",
                    params![event.event_id, event.event_type, event.entity_id, event.sequence, now, event.payload],
                )?;
                if inserted == 0 {
                    return Ok(Recorded::Duplicate);
                }
                // Every order event carries the whole order: each newer one is a new version
                // (wix-print decides what it means on paper); older ones are recorded as stale.
                let result = match (event.kind(), event.order) {
                    (kind, Some(mut order)) if kind != EventKind::Other => {
                        order.source = source as i32;
                        let order_id = order.id.clone();
                        if must_hold(tx, kind, &order)? && reorder_window_ms > 0 {
                            tx.exec(
                                "INSERT INTO held_events (event_id, order_id, sequence, order_pb, release_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                                params![event.event_id, order_id, order.entity_event_sequence, order.encode_to_vec(), now + reorder_window_ms],
                            )?;
                            Recorded::Held { order_id }
                        } else {
                            let r = upsert_order(tx, order, now, traceparent.as_deref())?;
                            release_held(tx, &order_id, now, false, traceparent.as_deref())?;
                            r
                        }
                    }
                    _ => Recorded::Recorded,
                };
                tx.exec(
                    "UPDATE webhook_events SET outcome = ?1 WHERE event_id = ?2",
                    params![result.outcome(), event.event_id],
                )?;
                Ok(result)
            })
            .await?;
        if matches!(recorded, Recorded::Held { .. }) {
            let window = Duration::from_millis(u64::try_from(reorder_window_ms).unwrap_or(0));
            self.held_deadlines().insert(event_id, Instant::now() + window);
        }
        Ok(recorded)
    }

    /// Releases held events whose reorder window is over on the monotonic clock (all of an
    /// order's held events go, in sequence order, once its first one is due). An event held
    /// before this process started gets a deadline from its stored hint, at most `window` from
    /// now. Returns how many became new versions.
    pub async fn release_due_events(&self, window: Duration) -> anyhow::Result<usize> {
        let rows: Vec<(String, String, i64)> = self
            .db
            .call(|conn| {
                let mut st = conn.prepare_cached("SELECT event_id, order_id, release_ms FROM held_events")?;
                Ok(st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?)
            })
            .await?;
        let due: Vec<String> = {
            let (now, wall) = (Instant::now(), now_ms());
            let mut deadlines = self.held_deadlines();
            deadlines.retain(|id, _| rows.iter().any(|(e, _, _)| e == id));
            let mut due: Vec<String> = Vec::new();
            for (event_id, order_id, release_ms) in rows {
                let at = *deadlines.entry(event_id).or_insert_with(|| held_deadline(now, wall, release_ms, window));
                if at <= now && !due.contains(&order_id) {
                    due.push(order_id);
                }
            }
            due
        };
        if due.is_empty() {
            return Ok(0);
        }
        self.db
            .write(move |tx| {
                let now = now_ms();
                let mut applied = 0;
                for order_id in &due {
                    applied += release_held(tx, order_id, now, true, None)?;
                }
                Ok(applied)
            })
            .await
    }

    /// When the next held event is due on the monotonic clock, if any is held (events not yet
    /// seen by [`Store::release_due_events`] count as due now).
    pub async fn next_release(&self) -> anyhow::Result<Option<Instant>> {
        let ids: Vec<String> = self
            .db
            .call(|conn| {
                let mut st = conn.prepare_cached("SELECT event_id FROM held_events")?;
                Ok(st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
            })
            .await?;
        let deadlines = self.held_deadlines();
        Ok(ids.iter().map(|id| deadlines.get(id).copied().unwrap_or_else(Instant::now)).min())
    }

    /// Stores an order found by the order sync: the same upsert and outbox path as a webhook,
    /// so the two sources never double-print.
    pub async fn record_synced_order(&self, mut order: Order) -> anyhow::Result<Recorded> {
        order.source = OrderSource::WixSync as i32;
        self.db.write(move |tx| upsert_order(tx, order, now_ms(), None)).await
    }

    /// Stores a phone order as version 1 with the next number of `day` (`L-<day>-<n>`).
    /// With a `request_id` seen before, stores nothing and returns the order that request
    /// stored (a retried call never makes a second order).
    pub async fn record_local_order(
        &self,
        mut order: Order,
        day: String,
        request_id: Option<String>,
    ) -> anyhow::Result<(String, i64)> {
        self.db
            .write(move |tx| {
                if let Some(rid) = &request_id {
                    let earlier: Option<(String, i64, Vec<u8>)> = tx
                        .query_row(
                            "SELECT r.order_id, r.version, o.order_pb FROM local_requests r
                             JOIN orders o ON o.order_id = r.order_id WHERE r.request_id = ?1",
                            params![rid],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .optional()?;
                    if let Some((id, version, pb)) = earlier {
                        let stored = Order::decode(pb.as_slice()).context("stored local order is undecodable")?;
                        if local_content(stored) != local_content(order) {
                            return Err(RequestIdReused { request_id: rid.clone(), order_id: id }.into());
                        }
                        return Ok((id, version));
                    }
                }
                let n: i64 = tx.row(
                    "INSERT INTO local_counters (day, n) VALUES (?1, 1)
                     ON CONFLICT(day) DO UPDATE SET n = n + 1 RETURNING n",
                    params![day],
                    |r| r.get(0),
                )?;
                let id = format!("L-{day}-{n}");
                order.id = id.clone();
                order.number = id.clone();
                order.source = OrderSource::Local as i32;
                match upsert_order(tx, order, now_ms(), None)? {
                    Recorded::Applied { version, .. } => {
                        if let Some(rid) = &request_id {
                            tx.exec(
                                "INSERT INTO local_requests (request_id, order_id, version, created_ms) VALUES (?1, ?2, ?3, ?4)",
                                params![rid, id, version, now_ms()],
                            )?;
                        }
                        Ok((id, version))
                    }
                    other => anyhow::bail!("local order {id} was not stored as new: {other:?}"),
                }
            })
            .await
    }

    /// The order sync's watermark (the newest `updatedDate` it has seen), if it ever ran.
    pub async fn sync_watermark(&self) -> anyhow::Result<Option<i64>> {
        self.db
            .call(|conn| {
                Ok(conn.row("SELECT watermark_ms FROM sync_state WHERE id = 1", [], |r| r.get(0)).optional()?.flatten())
            })
            .await
    }

    /// Records a completed sync run.
    pub async fn set_sync_watermark(&self, watermark_ms: Option<i64>) -> anyhow::Result<()> {
        self.db
            .write(move |tx| {
                tx.exec(
                    "INSERT INTO sync_state (id, watermark_ms, last_success_ms) VALUES (1, ?1, ?2)
                     ON CONFLICT(id) DO UPDATE SET watermark_ms = coalesce(excluded.watermark_ms, watermark_ms),
                       last_success_ms = excluded.last_success_ms",
                    params![watermark_ms, now_ms()],
                )?;
                Ok(())
            })
            .await
    }

    /// Undelivered outbox rows whose retry time has come, oldest first. A row due more than
    /// `max_backoff` ahead is due now (see [`outbox_due`]): the wall clock stepped back.
    pub async fn due_outbox(&self, limit: usize, max_backoff: Duration) -> anyhow::Result<Vec<OutboxRow>> {
        let max_ms = wixprint_shared::time::duration_ms(max_backoff);
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, order_id, version, attempts, request_pb, refusals, traceparent FROM outbox
                     WHERE state = ?4 AND (next_attempt_ms <= ?1 OR next_attempt_ms > ?1 + ?3)
                     ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt
                    .query_map(params![now_ms(), limit as i64, max_ms, OutboxState::Pending.as_sql()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, Vec<u8>>(4)?, r.get(5)?, r.get(6)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|(id, order_id, version, attempts, pb, refusals, traceparent)| {
                        let request = SubmitOrderRequest::decode(pb.as_slice())
                            .with_context(|| format!("outbox row {id} holds an undecodable request"))?;
                        Ok(OutboxRow { id, order_id, version, attempts, refusals, request, traceparent })
                    })
                    .collect()
            })
            .await
    }

    /// The earliest retry time of a pending row, if any.
    pub async fn next_outbox_due_ms(&self) -> anyhow::Result<Option<i64>> {
        self.db
            .call(|conn| {
                Ok(conn.query_row(
                    "SELECT min(next_attempt_ms) FROM outbox WHERE state = ?1",
                    [OutboxState::Pending.as_sql()],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    pub async fn mark_delivered(&self, id: i64) -> anyhow::Result<()> {
        self.db
            .write(move |conn| {
                conn.exec(
                    "UPDATE outbox SET state = ?3, delivered_ms = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                    params![id, now_ms(), OutboxState::Delivered.as_sql()],
                )?;
                Ok(())
            })
            .await
    }

    /// Records a failed delivery; the row stays pending and is retried at `next_attempt_ms`.
    pub async fn mark_failed(&self, id: i64, error: String, next_attempt_ms: i64) -> anyhow::Result<()> {
        self.db
            .write(move |conn| {
                conn.exec(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3 WHERE id = ?1",
                    params![id, error, next_attempt_ms],
                )?;
                Ok(())
            })
            .await
    }

    /// Makes every pending row due now (wix-print is back: its backoff no longer applies).
    /// Returns how many rows were waiting for a later retry.
    pub async fn make_pending_due(&self) -> anyhow::Result<usize> {
        self.db
            .write(|conn| {
                let now = now_ms();
                Ok(conn.exec(
                    "UPDATE outbox SET next_attempt_ms = ?1 WHERE state = ?2 AND next_attempt_ms > ?1",
                    params![now, OutboxState::Pending.as_sql()],
                )?)
            })
            .await
    }

    /// Records a confirmed connectivity change of `(kind, name)`: closes its open row and opens
    /// a new one. Returns the new row's id.
    pub async fn record_connectivity_change(
        &self,
        kind: &'static str,
        name: String,
        from: String,
        to: String,
        detail: String,
        at_ms: i64,
    ) -> anyhow::Result<i64> {
        self.db.write(move |conn| Ok(connectivity::record_change(conn, kind, &name, &from, &to, &detail, at_ms)?)).await
    }

    /// The open (current) connectivity row of `(kind, name)`, if any.
    pub async fn connectivity_current(
        &self,
        kind: &'static str,
        name: String,
    ) -> anyhow::Result<Option<ConnectivityEvent>> {
        self.db.call(move |conn| Ok(connectivity::current(conn, kind, &name)?)).await
    }

    /// Connectivity rows newest first (see `connectivity::list` for the limit rules).
    pub async fn list_connectivity(
        &self,
        kind: Option<String>,
        name: Option<String>,
        limit: u32,
    ) -> anyhow::Result<Vec<ConnectivityEvent>> {
        self.db.call(move |conn| Ok(connectivity::list(conn, kind.as_deref(), name.as_deref(), limit)?)).await
    }

    /// Deletes closed connectivity rows that ended before `older_than_ms`.
    /// Retention: deletes, in small batches, what was received before `cutoff_ms` and is
    /// finished: delivered or rejected outbox rows, webhook events (and with them their
    /// payloads: names, phones, addresses), orders with nothing left in the outbox, held events
    /// long released. Pending outbox rows are never pruned. Returns what went.
    pub async fn prune(&self, cutoff_ms: i64) -> anyhow::Result<Pruned> {
        let finished = format!("'{}', '{}'", OutboxState::Delivered.as_sql(), OutboxState::Rejected.as_sql());
        let steps: [(&str, String); 4] = [
            (
                "held_events",
                "DELETE FROM held_events WHERE event_id IN
                   (SELECT event_id FROM held_events WHERE release_ms < ?1 LIMIT ?2)"
                    .into(),
            ),
            (
                "outbox",
                format!(
                    "DELETE FROM outbox WHERE id IN
                       (SELECT id FROM outbox WHERE state IN ({finished}) AND created_ms < ?1 LIMIT ?2)"
                ),
            ),
            (
                "webhook_events",
                "DELETE FROM webhook_events WHERE rowid IN
                   (SELECT w.rowid FROM webhook_events w WHERE w.received_ms < ?1
                      AND NOT EXISTS (SELECT 1 FROM held_events h WHERE h.event_id = w.event_id) LIMIT ?2)"
                    .into(),
            ),
            (
                "orders",
                "DELETE FROM orders WHERE order_id IN
                   (SELECT o.order_id FROM orders o WHERE o.received_ms < ?1
                      AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.order_id = o.order_id)
                      AND NOT EXISTS (SELECT 1 FROM held_events h WHERE h.order_id = o.order_id) LIMIT ?2)"
                    .into(),
            ),
        ];
        let mut pruned = Pruned::default();
        for (table, sql) in steps {
            loop {
                let sql = sql.clone();
                let n = self
                    .db
                    .write(move |tx| Ok(tx.exec(&sql, params![cutoff_ms, wixprint_shared::retention::BATCH as i64])?))
                    .await
                    .with_context(|| format!("pruning {table}"))? as u64;
                match table {
                    "held_events" => pruned.held_events += n,
                    "outbox" => pruned.outbox += n,
                    "webhook_events" => pruned.webhook_events += n,
                    _ => pruned.orders += n,
                }
                if n < wixprint_shared::retention::BATCH as u64 {
                    break;
                }
            }
        }
        wixprint_shared::healing::prune_all(&self.db, cutoff_ms).await.context("pruning self_healing_events")?;
        wixprint_shared::alerts::store::prune_all(&self.db, cutoff_ms).await.context("pruning alert_outbox")?;
        Ok(pruned)
    }

    /// The database handle (self-healing events and health checks share the writer).
    pub fn db(&self) -> wixprint_shared::db::Db {
        self.db.clone()
    }

    /// Gives freed pages back to the file system; the database's size in bytes.
    pub async fn reclaim(&self) -> anyhow::Result<u64> {
        self.db.reclaim(1_000).await
    }

    pub async fn prune_connectivity(&self, older_than_ms: i64) -> anyhow::Result<usize> {
        self.db.write(move |conn| Ok(connectivity::prune(conn, older_than_ms)?)).await
    }

    pub async fn counts(&self) -> anyhow::Result<Counts> {
        self.db
            .call(|conn| {
                // Kept by triggers (see MIGRATIONS): no table is counted row by row.
                let count = |name: &str| -> rusqlite::Result<u64> {
                    conn.row("SELECT coalesce(max(n), 0) FROM row_counts WHERE name = ?1", [name], |r| {
                        r.get::<_, i64>(0)
                    })
                    .map(|n| n.max(0) as u64)
                };
                let outbox = |state: OutboxState| count(&format!("outbox:{}", state.as_sql()));
                let pending = OutboxState::Pending.as_sql();
                Ok(Counts {
                    orders: count("orders")?,
                    webhook_events: count("webhook_events")?,
                    outbox_pending: outbox(OutboxState::Pending)?,
                    outbox_delivered: outbox(OutboxState::Delivered)?,
                    outbox_rejected: outbox(OutboxState::Rejected)?,
                    outbox_dead: outbox(OutboxState::Dead)?,
                    outbox_oldest_dead_ms: conn.row(
                        "SELECT min(created_ms) FROM outbox WHERE state = ?1",
                        [OutboxState::Dead.as_sql()],
                        |r| r.get(0),
                    )?,
                    held_events: count("held_events")?,
                    outbox_oldest_pending_ms: conn.row(
                        "SELECT min(created_ms) FROM outbox WHERE state = ?1",
                        [pending],
                        |r| r.get(0),
                    )?,
                    last_webhook_ms: conn.row("SELECT max(received_ms) FROM webhook_events", [], |r| r.get(0))?,
                    outbox_last_error: conn
                        .query_row(
                            "SELECT last_error FROM outbox WHERE state = ?1 AND last_error IS NOT NULL ORDER BY id LIMIT 1",
                            [pending],
                            |r| r.get(0),
                        )
                        .optional()?,
                })
            })
            .await
    }

    pub async fn list_orders(&self, limit: u32) -> anyhow::Result<Vec<OrderSummary>> {
        self.db
            .call(move |conn| {
                let mut stmt =
                    conn.prepare_cached(&format!("{SUMMARY_SQL} ORDER BY o.received_ms DESC, o.order_id LIMIT ?2"))?;
                let rows = stmt
                    .query_map(params![OutboxState::Delivered.as_sql(), limit], summary_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }

    pub async fn get_order(&self, order_id: String) -> anyhow::Result<Option<OrderDetail>> {
        self.db
            .call(move |conn| {
                let Some(summary) = conn
                    .query_row(
                        &format!("{SUMMARY_SQL} WHERE o.order_id = ?2"),
                        params![OutboxState::Delivered.as_sql(), order_id],
                        summary_from_row,
                    )
                    .optional()?
                else {
                    return Ok(None);
                };
                let pb: Vec<u8> = conn.row("SELECT order_pb FROM orders WHERE order_id = ?1", params![order_id], |r| r.get(0))?;
                let order = Order::decode(pb.as_slice()).context("stored order is undecodable")?;
                let mut stmt = conn.prepare_cached(
                    "SELECT id, version, state, attempts, last_error, created_ms, delivered_ms FROM outbox WHERE order_id = ?1 ORDER BY id",
                )?;
                let rows = stmt
                    .query_map(params![order_id], |r| {
                        Ok((
                            OutboxEntry {
                                id: r.get(0)?,
                                version: r.get(1)?,
                                state: OutboxState::Pending,
                                attempts: r.get(3)?,
                                last_error: r.get(4)?,
                                created_ms: r.get(5)?,
                                delivered_ms: r.get(6)?,
                            },
                            r.get::<_, String>(2)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let outbox = rows
                    .into_iter()
                    .map(|(mut e, state)| {
                        e.state = OutboxState::from_sql(&state)
                            .with_context(|| format!("outbox row {}: unknown state {state:?}", e.id))?;
                        Ok(e)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let mut stmt = conn.prepare_cached(
                    "SELECT event_id, event_type, sequence, received_ms, outcome FROM webhook_events WHERE entity_id = ?1 ORDER BY received_ms, event_id",
                )?;
                let events = stmt
                    .query_map(params![order_id], |r| {
                        Ok(EventEntry {
                            event_id: r.get(0)?,
                            event_type: r.get(1)?,
                            sequence: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                            received_ms: r.get(3)?,
                            outcome: r.get(4)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(OrderDetail { summary, order, outbox, events }))
            })
            .await
    }
}

/// A dead letter as `IngestAdmin/ListDeadLetters` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    pub order_id: String,
    pub version: i64,
    pub attempts: u32,
    pub refusals: u32,
    pub last_error: Option<String>,
    pub created_ms: Option<i64>,
}

/// What `requeue_outbox` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Requeue {
    /// The dead row is pending again, due now, its refusals forgotten.
    Requeued {
        order_id: String,
        version: i64,
    },
    NotFound,
    /// Only dead rows are requeued; this one is in another state (nothing changed).
    NotDead(OutboxState),
}

/// Dead letters: rows wix-print kept refusing (issue 10 §6).
impl Store {
    /// wix-print answered the row with a non-permanent refusal: counted, retried at
    /// `next_attempt_ms`, or `dead` once refused `dead_after` times. Returns the row's state.
    pub async fn mark_refused(
        &self,
        id: i64,
        error: String,
        next_attempt_ms: i64,
        dead_after: u32,
    ) -> anyhow::Result<OutboxState> {
        let state: String = self
            .db
            .write(move |conn| {
                Ok(conn.query_row(
                    "UPDATE outbox SET attempts = attempts + 1, refusals = refusals + 1, last_error = ?2,
                       next_attempt_ms = ?3, state = CASE WHEN refusals + 1 >= ?4 THEN ?5 ELSE state END
                     WHERE id = ?1 RETURNING state",
                    params![id, error, next_attempt_ms, dead_after, OutboxState::Dead.as_sql()],
                    |r| r.get(0),
                )?)
            })
            .await?;
        OutboxState::from_sql(&state).with_context(|| format!("outbox row {id}: unknown state {state:?}"))
    }

    /// Dead letters, oldest first.
    pub async fn list_dead_letters(&self, limit: u32) -> anyhow::Result<Vec<DeadLetter>> {
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, order_id, version, attempts, refusals, last_error, created_ms FROM outbox
                     WHERE state = ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt
                    .query_map(params![OutboxState::Dead.as_sql(), limit], |r| {
                        Ok(DeadLetter {
                            id: r.get(0)?,
                            order_id: r.get(1)?,
                            version: r.get(2)?,
                            attempts: r.get(3)?,
                            refusals: r.get(4)?,
                            last_error: r.get(5)?,
                            created_ms: r.get(6)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }

    /// Makes a dead row pending and due now (refusals forgotten); any other row is left alone.
    pub async fn requeue_outbox(&self, id: i64) -> anyhow::Result<Requeue> {
        self.db
            .write(move |conn| {
                let row: Option<(String, String, i64)> = conn
                    .query_row("SELECT state, order_id, version FROM outbox WHERE id = ?1", [id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                let Some((state, order_id, version)) = row else { return Ok(Requeue::NotFound) };
                let state = OutboxState::from_sql(&state)
                    .with_context(|| format!("outbox row {id}: unknown state {state:?}"))?;
                if state != OutboxState::Dead {
                    return Ok(Requeue::NotDead(state));
                }
                conn.exec(
                    "UPDATE outbox SET state = ?2, refusals = 0, next_attempt_ms = ?3 WHERE id = ?1",
                    params![id, OutboxState::Pending.as_sql(), now_ms()],
                )?;
                Ok(Requeue::Requeued { order_id, version })
            })
            .await
    }
}

/// `?1` is the delivered state: an order is delivered when no outbox row of it is anything else.
const SUMMARY_SQL: &str = "SELECT o.order_id, o.number, o.status, o.source, o.version, o.created_ms, o.received_ms,
    NOT EXISTS (SELECT 1 FROM outbox x WHERE x.order_id = o.order_id AND x.state != ?1) FROM orders o";

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrderSummary> {
    Ok(OrderSummary {
        id: r.get(0)?,
        number: r.get(1)?,
        status: r.get(2)?,
        source: r.get(3)?,
        version: r.get(4)?,
        created_ms: r.get(5)?,
        received_ms: r.get(6)?,
        delivered: r.get(7)?,
    })
}

/// Should this order event wait for earlier ones? Wix numbers an order's events with a
/// strictly increasing sequence and may deliver them out of order (retries). An update,
/// payment, cancellation or fulfilment whose sequence leaves a gap after what we have waits
/// for the reorder window, so that a created event still on its way goes first and the paper
/// comes out as if everything had arrived in order. Created and approved events never wait:
/// they carry what the kitchen needs first. Orders without sequences (sync, local) never wait.
fn must_hold(tx: &Connection, kind: EventKind, order: &Order) -> anyhow::Result<bool> {
    let seq = order.entity_event_sequence;
    if seq <= 0 || matches!(kind, EventKind::Created | EventKind::Approved) {
        return Ok(false);
    }
    let stored: Option<i64> =
        tx.row("SELECT sequence FROM orders WHERE order_id = ?1", params![order.id], |r| r.get(0)).optional()?;
    let already_held: i64 =
        tx.row("SELECT count(*) FROM held_events WHERE order_id = ?1", params![order.id], |r| r.get(0))?;
    // Nothing stored yet: only a sequence above 1 says earlier events exist.
    Ok(already_held > 0
        || match stored {
            None => seq > 1,
            Some(s) => s > 0 && seq > s + 1,
        })
}

/// Applies an order's held events in sequence order: those that now follow on without a gap,
/// or all of them when `all` (the window is over). Returns how many became new versions.
fn release_held(
    tx: &Connection,
    order_id: &str,
    now: i64,
    all: bool,
    traceparent: Option<&str>,
) -> anyhow::Result<usize> {
    let held: Vec<(String, i64, Vec<u8>)> = {
        let mut st = tx.prepare_cached(
            "SELECT event_id, sequence, order_pb FROM held_events WHERE order_id = ?1 ORDER BY sequence",
        )?;
        st.query_map(params![order_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?
    };
    let mut applied = 0;
    for (event_id, seq, pb) in held {
        let stored: i64 = tx
            .row("SELECT sequence FROM orders WHERE order_id = ?1", params![order_id], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if !all && seq > stored + 1 {
            break;
        }
        let order = Order::decode(pb.as_slice()).context("held event holds an undecodable order")?;
        let result = upsert_order(tx, order, now, traceparent)?;
        if matches!(result, Recorded::Applied { .. }) {
            applied += 1;
        }
        tx.exec("DELETE FROM held_events WHERE event_id = ?1", params![event_id])?;
        tx.exec("UPDATE webhook_events SET outcome = ?1 WHERE event_id = ?2", params![result.outcome(), event_id])?;
    }
    Ok(applied)
}

/// A `client_request_id` used before for a different phone order.
#[derive(Debug, thiserror::Error)]
#[error("client_request_id {request_id:?} was used for order {order_id} with different content")]
pub struct RequestIdReused {
    pub request_id: String,
    pub order_id: String,
}

/// What a phone order says, without what the service assigns (id, number, source, times).
fn local_content(mut o: Order) -> Vec<u8> {
    o.id.clear();
    o.number.clear();
    o.source = 0;
    o.created_at = None;
    o.updated_at = None;
    o.encode_to_vec()
}

/// The largest `entityEventSequence` that fits in a version's last three digits.
const SEQUENCE_SLOTS: i64 = 1000;

/// The version number wix-print keys `(order_id, version)` on. For Wix orders it is derived
/// from Wix's own ordering, so it means the same after ingest.db is lost and rebuilt:
/// `updatedDate` in milliseconds × 1000 + `entityEventSequence` (capped at 999; 0 when the
/// search API carries none). Wix moves `updatedDate` on every change and the sequence breaks
/// ties within one millisecond, so a later state of an order always has a larger version,
/// whichever way (webhook or sync) it arrived. Only if Wix's own two orders disagreed would the
/// derived number not grow; then it is `previous + 1`, never a step back. An order without
/// `updatedDate` falls back to its sequence. Local (phone) orders keep their own scheme: version
/// 1, then `previous + 1`.
pub fn next_version(source: i32, updated_ms: i64, sequence: i64, previous: Option<i64>) -> i64 {
    let floor = previous.map_or(1, |p| p.saturating_add(1));
    if source == OrderSource::Local as i32 {
        return floor;
    }
    let derived = if updated_ms > 0 {
        updated_ms.min(i64::MAX / SEQUENCE_SLOTS - 1) * SEQUENCE_SLOTS + sequence.clamp(0, SEQUENCE_SLOTS - 1)
    } else {
        sequence.max(0)
    };
    derived.max(floor)
}

/// Stores `order` as the next version unless it is older than (or identical to) what we have;
/// its outbox row carries `traceparent` (the trace that stored it), if any.
fn upsert_order(tx: &Connection, order: Order, now: i64, traceparent: Option<&str>) -> anyhow::Result<Recorded> {
    let updated_ms = order.updated_at.as_ref().map(wixprint_shared::time::ms_from_timestamp).unwrap_or(0);
    let created_ms = order.created_at.as_ref().map(wixprint_shared::time::ms_from_timestamp).unwrap_or(0);
    let sequence = order.entity_event_sequence;
    let pb = order.encode_to_vec();
    let existing: Option<(i64, i64, i64, Vec<u8>)> = tx
        .query_row(
            "SELECT version, sequence, updated_ms, order_pb FROM orders WHERE order_id = ?1",
            params![order.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let previous_version = existing.as_ref().map_or(0, |e| e.0);
    let version = match existing {
        None => next_version(order.source, updated_ms, sequence, None),
        Some((version, old_seq, old_updated, old_pb)) => {
            // Wix's per-entity sequence orders events exactly; without it, updatedDate does.
            // Wix's per-entity sequence orders events exactly. Without it on both sides (the
            // search API carries none) updatedDate does: Wix moves it on every change, so an
            // equal one is the same state seen again (by webhook and by sync).
            let stale = if sequence > 0 && old_seq > 0 {
                sequence <= old_seq
            } else {
                updated_ms <= old_updated || old_pb == pb
            };
            if stale {
                return Ok(Recorded::Stale { order_id: order.id });
            }
            next_version(order.source, updated_ms, sequence, Some(version))
        }
    };
    tx.exec(
        "INSERT INTO orders (order_id, number, status, source, version, sequence, updated_ms, created_ms, received_ms, order_pb)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(order_id) DO UPDATE SET number = excluded.number, status = excluded.status, version = excluded.version,
           sequence = excluded.sequence, updated_ms = excluded.updated_ms, order_pb = excluded.order_pb",
        params![order.id, order.number, order.status, order.source, version, sequence, updated_ms, created_ms, now, pb],
    )?;
    let request = SubmitOrderRequest {
        order: Some(order.clone()),
        version,
        previous_version,
        received_at: Some(wixprint_shared::time::timestamp_from_ms(now)),
    };
    tx.exec(
        "INSERT INTO outbox (order_id, version, request_pb, next_attempt_ms, created_ms, state, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
        params![order.id, version, request.encode_to_vec(), now, OutboxState::Pending.as_sql(), traceparent],
    )?;
    Ok(Recorded::Applied { order_id: order.id, version })
}

impl wixprint_shared::retention::Prunable for Store {
    type Pruned = Pruned;

    async fn prune(&self, cutoff_ms: i64) -> anyhow::Result<Pruned> {
        Store::prune(self, cutoff_ms).await
    }

    async fn reclaim(&self) -> anyhow::Result<u64> {
        Store::reclaim(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn versions_follow_wix_and_never_step_back() {
        let wix = OrderSource::WixWebhook as i32;
        let t = 1_758_736_405_532;
        // Derived from Wix alone: the same with or without a previous version (a rebuilt db).
        assert_eq!(next_version(wix, t, 1, None), t * 1000 + 1);
        assert_eq!(next_version(wix, t, 2, Some(t * 1000 + 1)), t * 1000 + 2);
        // The sync (no sequence) then a webhook of the same moment: still newer.
        assert_eq!(next_version(OrderSource::WixSync as i32, t, 0, None), t * 1000);
        assert_eq!(next_version(wix, t + 5, 3, Some(t * 1000)), (t + 5) * 1000 + 3);
        // Wix's two orders disagreeing: one more than before, never a step back.
        assert_eq!(next_version(wix, t - 10, 4, Some(t * 1000 + 3)), t * 1000 + 4);
        // No updatedDate: the sequence; nothing at all: a counter.
        assert_eq!(next_version(wix, 0, 7, None), 7);
        assert_eq!(next_version(wix, 0, 0, None), 1);
        assert_eq!(next_version(wix, i64::MAX, 999_999, None), (i64::MAX / 1000 - 1) * 1000 + 999);
        // Phone orders keep their own scheme.
        assert_eq!(next_version(OrderSource::Local as i32, t, 0, None), 1);
        assert_eq!(next_version(OrderSource::Local as i32, t, 0, Some(1)), 2);
    }

    #[tokio::test]
    async fn a_local_order_retried_with_its_request_id_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("i.db"), Duration::from_secs(5)).unwrap();
        let order = || Order { line_items: vec![Default::default()], ..Default::default() };
        let first = store.record_local_order(order(), "20260101".into(), Some("r-1".into())).await.unwrap();
        let retry = store.record_local_order(order(), "20260101".into(), Some("r-1".into())).await.unwrap();
        let other = store.record_local_order(order(), "20260101".into(), Some("r-2".into())).await.unwrap();
        let plain = store.record_local_order(order(), "20260101".into(), None).await.unwrap();
        assert_eq!(first, ("L-20260101-1".to_owned(), 1));
        assert_eq!(retry, first);
        assert_eq!(other.0, "L-20260101-2");
        assert_eq!(plain.0, "L-20260101-3");
        assert_eq!(store.counts().await.unwrap().outbox_pending, 3);
        let mut changed = order();
        changed.buyer_note = "another order".into();
        let err = store.record_local_order(changed, "20260101".into(), Some("r-1".into())).await.unwrap_err();
        assert!(err.downcast_ref::<RequestIdReused>().is_some(), "{err:#}");
    }

    #[test]
    fn a_stored_release_time_is_a_hint_clamped_to_the_window() {
        let now = Instant::now();
        let window = Duration::from_secs(2);
        let wall = 1_758_738_240_000;
        // As stored: due in 1.5 s.
        assert_eq!(held_deadline(now, wall, wall + 1_500, window), now + Duration::from_millis(1_500));
        // The clock stepped back an hour since: still at most the window, never an hour.
        assert_eq!(held_deadline(now, wall - HOUR_MS, wall + 1_500, window), now + window);
        // The clock stepped forward an hour: due now (it was held before this process saw it).
        assert_eq!(held_deadline(now, wall + HOUR_MS, wall + 1_500, window), now);
        assert_eq!(held_deadline(now, i64::MIN, i64::MAX, window), now + window, "no overflow");
        assert_eq!(held_deadline(now, i64::MAX, i64::MIN, window), now, "no overflow");
    }

    #[test]
    fn an_outbox_row_further_ahead_than_any_backoff_is_due_now() {
        let max = Duration::from_secs(30);
        let now = 1_758_738_240_000;
        assert!(outbox_due(now - 1, now, max));
        assert!(outbox_due(now, now, max));
        assert!(!outbox_due(now + 10_000, now, max), "an ordinary backoff is kept");
        assert!(!outbox_due(now + 30_000, now, max));
        assert!(outbox_due(now + HOUR_MS, now, max), "the wall clock stepped back an hour");
        assert!(outbox_due(i64::MAX, i64::MAX, max), "no overflow");
    }

    #[tokio::test]
    async fn a_held_event_from_before_a_restart_is_released_within_the_window_whatever_its_hint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ingest.db"), Duration::from_secs(5)).unwrap();
        let order = Order { id: "o-1".into(), entity_event_sequence: 3, ..Default::default() };
        store
            .db
            .write(move |tx| {
                tx.exec(
                    "INSERT INTO webhook_events (event_id, event_type, entity_id, sequence, received_ms, outcome, payload)
                     VALUES ('e-1', 'updated', 'o-1', 3, 0, 'held', '')",
                    [],
                )?;
                tx.exec(
                    "INSERT INTO held_events (event_id, order_id, sequence, order_pb, release_ms) VALUES ('e-1', 'o-1', 3, ?1, ?2)",
                    params![order.encode_to_vec(), now_ms() + 10 * HOUR_MS],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let window = Duration::from_millis(200);
        let started = Instant::now();
        assert_eq!(store.release_due_events(window).await.unwrap(), 0, "not before the window");
        let at = store.next_release().await.unwrap().unwrap();
        assert!(at <= started + window + Duration::from_millis(50), "hint of 10 h clamped to the window");
        tokio::time::sleep_until(at).await;
        assert_eq!(store.release_due_events(window).await.unwrap(), 1);
        assert_eq!(store.next_release().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_row_refused_n_times_is_dead_leaves_the_queue_and_is_requeued_only_when_dead() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ingest.db"), Duration::from_secs(5)).unwrap();
        let order = Order {
            line_items: vec![wixprint_shared::proto::order::LineItem {
                name: "Pad Thai".into(),
                quantity: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        store.record_local_order(order.clone(), "20260101".into(), None).await.unwrap();
        store.record_local_order(order, "20260101".into(), None).await.unwrap();
        let max = Duration::from_secs(30);
        let rows = store.due_outbox(10, max).await.unwrap();
        let (first, second) = (rows[0].id, rows[1].id);
        assert_eq!(
            store.mark_refused(first, "Unavailable: busy".into(), now_ms() + 20_000, 2).await.unwrap(),
            OutboxState::Pending
        );
        let due: Vec<i64> = store.due_outbox(10, max).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(due, vec![second], "the refused row backs off alone");
        assert_eq!(
            store.mark_refused(first, "Unavailable: busy".into(), now_ms(), 2).await.unwrap(),
            OutboxState::Dead
        );
        let due: Vec<i64> = store.due_outbox(10, max).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(due, vec![second], "a dead row is not retried");
        let dead = store.list_dead_letters(10).await.unwrap();
        assert_eq!((dead.len(), dead[0].id, dead[0].refusals, dead[0].attempts), (1, first, 2, 2));
        let c = store.counts().await.unwrap();
        assert_eq!((c.outbox_dead, c.outbox_pending), (1, 1));
        assert!(c.outbox_oldest_dead_ms.is_some());

        assert_eq!(store.requeue_outbox(second).await.unwrap(), Requeue::NotDead(OutboxState::Pending));
        assert_eq!(store.requeue_outbox(999).await.unwrap(), Requeue::NotFound);
        assert!(matches!(store.requeue_outbox(first).await.unwrap(), Requeue::Requeued { .. }));
        let due = store.due_outbox(10, max).await.unwrap();
        assert_eq!(due.iter().map(|r| (r.id, r.refusals)).collect::<Vec<_>>(), vec![(first, 0), (second, 0)]);
        assert_eq!(store.counts().await.unwrap().outbox_dead, 0);
    }
}
