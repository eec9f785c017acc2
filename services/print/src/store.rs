//! The print database: orders and their versions as received, and the print queue.
//!
//! Invariants:
//! - (order id, version) is recorded once; a repeat returns the stored answer.
//! - A job's fingerprint (order id, kind, receipt type, copy) is UNIQUE: one receipt set per
//!   order, whatever arrives twice.
//! - Every state change is one committed transaction with a `job_transitions` row, written
//!   before the side effect it announces (see the dispatcher).
//!
//! All SQL of wix-print lives here.

use anyhow::Context;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use wixprint_shared::db::{Cached, Db};
use wixprint_shared::proto::order::{Order, OrderStatus, PaymentStatus};
use wixprint_shared::proto::print::{self as api, Disposition, ReceiptType, SubmitOrderResponse};
use wixprint_shared::time::{now_ms, opt_timestamp};

pub static MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orders (
    order_id        TEXT PRIMARY KEY,
    number          TEXT NOT NULL,
    latest_version  INTEGER NOT NULL,
    status          INTEGER NOT NULL,
    set_version     INTEGER,
    received_ms     INTEGER NOT NULL
);
CREATE TABLE order_versions (
    order_id     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    disposition  INTEGER NOT NULL,
    job_ids      TEXT NOT NULL,
    order_pb     BLOB NOT NULL,
    PRIMARY KEY (order_id, version)
);
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id        TEXT NOT NULL,
    order_number    TEXT NOT NULL,
    version         INTEGER NOT NULL,
    kind            TEXT NOT NULL DEFAULT 'ticket',
    receipt_type    INTEGER NOT NULL,
    copy            INTEGER NOT NULL DEFAULT 1,
    state           TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    order_time_ms   INTEGER NOT NULL,
    type_rank       INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    reprint         INTEGER NOT NULL DEFAULT 0,
    printer         TEXT NOT NULL,
    confirm_id      TEXT,
    last_error      TEXT,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    printed_ms      INTEGER,
    UNIQUE (order_id, kind, receipt_type, copy)
);
CREATE INDEX jobs_ready ON jobs (state, priority, order_time_ms, type_rank, id);
CREATE TABLE job_transitions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     INTEGER NOT NULL REFERENCES jobs(id),
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX job_transitions_job ON job_transitions (job_id, id);
"#,
    r#"
ALTER TABLE jobs ADD COLUMN base_version INTEGER;
ALTER TABLE orders ADD COLUMN paper_version INTEGER;
ALTER TABLE orders ADD COLUMN storno INTEGER NOT NULL DEFAULT 0;
UPDATE orders SET paper_version = set_version;
"#,
    r#"
ALTER TABLE jobs ADD COLUMN routed_from TEXT;
CREATE INDEX jobs_printer_ready ON jobs (printer, state, priority, order_time_ms, type_rank, id);
"#,
    wixprint_shared::connectivity::CONNECTIVITY_MIGRATION,
    r#"
CREATE TABLE recovery_sessions (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    printer           TEXT NOT NULL,
    trigger           TEXT NOT NULL,
    state             TEXT NOT NULL,
    started_ms        INTEGER NOT NULL,
    online_ms         INTEGER NOT NULL,
    processing_ms     INTEGER,
    first_printed_ms  INTEGER,
    ended_ms          INTEGER,
    total             INTEGER NOT NULL DEFAULT 0,
    done              INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    paused_reason     TEXT NOT NULL DEFAULT '',
    summary           TEXT NOT NULL DEFAULT ''
);
CREATE INDEX recovery_sessions_printer ON recovery_sessions (printer, id);
ALTER TABLE jobs ADD COLUMN recovery_session INTEGER;
CREATE INDEX jobs_recovery ON jobs (recovery_session, state);
"#,
];

/// Job lifecycle (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Sending,
    AwaitingConfirm,
    Printed,
    Uncertain,
    Failed,
    Dead,
    Cancelled,
    /// Kept but not printed: the rest of a cancelled recovery, until an operator resumes it.
    Held,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Sending,
        JobState::AwaitingConfirm,
        JobState::Printed,
        JobState::Uncertain,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
        JobState::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Sending => "sending",
            JobState::AwaitingConfirm => "awaiting_confirm",
            JobState::Printed => "printed",
            JobState::Uncertain => "uncertain",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Held => "held",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn to_proto(self) -> api::JobState {
        match self {
            JobState::Queued => api::JobState::Queued,
            JobState::Sending => api::JobState::Sending,
            JobState::AwaitingConfirm => api::JobState::AwaitingConfirm,
            JobState::Printed => api::JobState::Printed,
            JobState::Uncertain => api::JobState::Uncertain,
            JobState::Failed => api::JobState::Failed,
            JobState::Dead => api::JobState::Dead,
            JobState::Cancelled => api::JobState::Cancelled,
            JobState::Held => api::JobState::Held,
        }
    }

    pub fn from_proto(s: api::JobState) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.to_proto() == s)
    }
}

/// What a job prints.
#[derive(Debug, Clone)]
pub enum Content {
    /// A receipt of the order's set.
    Ticket,
    /// A change slip: what changed since `base` (the version the paper showed).
    Change { base: Box<Order> },
    /// A cancellation slip.
    Storno,
}

/// Everything needed to render a job exactly as it prints.
#[derive(Debug, Clone)]
pub struct Printable {
    pub receipt_type: ReceiptType,
    pub order: Order,
    pub content: Content,
    /// Reprint after an uncertain outcome: carries the KOPIE banner.
    pub reprint: bool,
    /// The printer this job was routed to before it failed over (its banner names it).
    pub routed_from: Option<String>,
}

/// A job ready to print.
#[derive(Debug, Clone)]
pub struct ReadyJob {
    pub id: i64,
    pub state: JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub printable: Printable,
}

/// Loads what job `id` prints.
fn load_printable(conn: &Connection, id: i64) -> anyhow::Result<Printable> {
    #[allow(clippy::type_complexity)]
    let (order_id, version, kind, base_version, rt, reprint, routed_from): (
        String,
        i64,
        String,
        Option<i64>,
        i32,
        bool,
        Option<String>,
    ) = conn.row(
        "SELECT order_id, version, kind, base_version, receipt_type, reprint, routed_from FROM jobs WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
    )?;
    let order = load_order(conn, &order_id, version).with_context(|| format!("job {id}"))?;
    let content = match (kind.as_str(), base_version) {
        ("storno", _) => Content::Storno,
        (k, Some(base)) if k.starts_with("change:") => Content::Change {
            base: Box::new(load_order(conn, &order_id, base).with_context(|| format!("job {id} base"))?),
        },
        _ => Content::Ticket,
    };
    Ok(Printable {
        receipt_type: ReceiptType::try_from(rt).unwrap_or(ReceiptType::Unspecified),
        order,
        content,
        reprint,
        routed_from,
    })
}

/// Per-job queue settings from config.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    pub receipt_types: Vec<ReceiptType>,
    /// Receipt types that get a STORNO slip when a printed order is cancelled.
    pub storno_types: Vec<ReceiptType>,
    pub max_attempts: u32,
    /// Printer per receipt type; a type not listed prints on `default_printer`.
    pub routes: Vec<(ReceiptType, String)>,
    pub default_printer: String,
    /// Copies of the receipt set's tickets per type (default 1); slips print once.
    pub copies: Vec<(ReceiptType, u32)>,
    /// Queue priorities (allergy → CRITICAL, big orders → HIGH).
    pub priority: crate::priority::Rules,
    /// Print only orders with a line item from this app (Wix Restaurants); `None` prints all.
    pub restaurant_app_id: Option<String>,
    /// Reprint the driver slip when an order printed as unpaid becomes paid.
    pub reprint_driver_when_paid: bool,
}

impl QueuePolicy {
    pub fn printer_for(&self, t: ReceiptType) -> &str {
        self.routes.iter().find(|(r, _)| *r == t).map_or(self.default_printer.as_str(), |(_, p)| p)
    }

    pub fn copies_of(&self, t: ReceiptType) -> u32 {
        self.copies.iter().find(|(r, _)| *r == t).map_or(1, |(_, n)| *n)
    }

    /// Whether this order is one this printer prints at all. Local (phone) orders always are.
    pub fn prints(&self, order: &Order) -> bool {
        match &self.restaurant_app_id {
            None => true,
            Some(_) if order.source == wixprint_shared::proto::order::OrderSource::Local as i32 => true,
            Some(app) => order.catalog_app_ids.iter().any(|a| a == app),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn insert_job(
    tx: &Connection,
    order: &Order,
    version: i64,
    t: ReceiptType,
    kind: &str,
    base_version: Option<i64>,
    copy: u32,
    policy: &QueuePolicy,
    now: i64,
) -> anyhow::Result<i64> {
    let (priority, rank) = policy.priority.of(order, t);
    let order_time = order.created_at.as_ref().map(wixprint_shared::time::ms_from_timestamp).unwrap_or(now);
    tx.exec(
        "INSERT INTO jobs (order_id, order_number, version, kind, base_version, receipt_type, copy, state, priority,
            order_time_ms, type_rank, max_attempts, next_attempt_ms, printer, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?13, 'queued', ?7, ?8, ?9, ?10, ?11, ?12, ?11, ?11)",
        params![
            order.id,
            order.number,
            version,
            kind,
            base_version,
            t as i32,
            priority,
            order_time,
            rank,
            policy.max_attempts,
            now,
            policy.printer_for(t),
            copy
        ],
    )?;
    let id = tx.last_insert_rowid();
    insert_transition(tx, id, "", JobState::Queued, &format!("{kind} for order {} version {version}", order.number))?;
    Ok(id)
}

#[derive(Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    pub fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self { db: Db::open(path, MIGRATIONS)? })
    }

    /// Records an order version and decides, in one transaction, what it means on paper:
    /// the first approved version creates the receipt set; a later version with printable
    /// changes queues change slips (or lets not-yet-printed tickets print the new version); a
    /// cancellation cancels what has not printed and queues STORNO slips for what has. A
    /// repeat of (order id, version) changes nothing and returns the stored answer.
    pub async fn submit(&self, order: Order, version: i64, policy: QueuePolicy) -> anyhow::Result<SubmitOrderResponse> {
        self.db
            .write(move |tx| {
                let seen: Option<(i32, String)> = tx
                    .row(
                        "SELECT disposition, job_ids FROM order_versions WHERE order_id = ?1 AND version = ?2",
                        params![order.id, version],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((disposition, job_ids)) = seen {
                    return Ok(SubmitOrderResponse { disposition, job_ids: parse_ids(&job_ids), duplicate: true });
                }
                let now = now_ms();
                tx.exec(
                    "INSERT INTO order_versions (order_id, version, received_ms, disposition, job_ids, order_pb) VALUES (?1, ?2, ?3, 0, '', ?4)",
                    params![order.id, version, now, order.encode_to_vec()],
                )?;
                let known: Option<(i64, Option<i64>, Option<i64>, bool)> = tx
                    .row(
                        "SELECT latest_version, set_version, paper_version, storno FROM orders WHERE order_id = ?1",
                        params![order.id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                let (latest, set_version, paper_version, storno) = known.unwrap_or((0, None, None, false));
                let approved = order.status == OrderStatus::Approved as i32;
                let canceled = order.status == OrderStatus::Canceled as i32;
                let mut job_ids = Vec::new();
                let mut new_paper = paper_version;
                let mut new_storno = storno;
                let disposition = if version < latest {
                    // Ingest forwards versions in order; an older one changes nothing.
                    Disposition::Recorded
                } else {
                    match set_version {
                        None if !approved => Disposition::NotPrintable,
                        None if !policy.prints(&order) => Disposition::Filtered,
                        None => {
                            for &t in &policy.receipt_types {
                                for copy in 1..=policy.copies_of(t) {
                                    job_ids.push(insert_job(tx, &order, version, t, "ticket", None, copy, &policy, now)?);
                                }
                            }
                            new_paper = Some(version);
                            Disposition::Queued
                        }
                        Some(_) if storno => Disposition::Recorded,
                        Some(_) if canceled => {
                            let open: Vec<(i64, String)> = {
                                let mut st = tx.prepare_cached(
                                    "SELECT id, state FROM jobs WHERE order_id = ?1 AND state IN ('queued', 'uncertain', 'failed', 'held')",
                                )?;
                                st.query_map(params![order.id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
                            };
                            for (id, from) in &open {
                                tx.exec("UPDATE jobs SET state = 'cancelled', updated_ms = ?2 WHERE id = ?1", params![id, now])?;
                                insert_transition(tx, *id, from, JobState::Cancelled, &format!("order cancelled (version {version})"))?;
                            }
                            let on_paper: i64 = tx.row(
                                "SELECT count(*) FROM jobs WHERE order_id = ?1 AND state IN ('printed', 'sending', 'awaiting_confirm', 'dead')",
                                params![order.id],
                                |r| r.get(0),
                            )?;
                            if on_paper > 0 {
                                for &t in &policy.storno_types {
                                    job_ids.push(insert_job(tx, &order, version, t, "storno", None, 1, &policy, now)?);
                                }
                            }
                            new_storno = true;
                            Disposition::Cancelled
                        }
                        Some(_) if !approved => Disposition::Recorded,
                        Some(set) => {
                            let base_version = paper_version.unwrap_or(set);
                            let base = load_order(tx, &order.id, base_version)?;
                            let changes = crate::changes::diff(&base, &order);
                            let mut any = false;
                            for &t in &policy.receipt_types {
                                let relevant = changes.iter().any(|c| match t {
                                    ReceiptType::Driver => c.concerns_driver(),
                                    ReceiptType::Customer => false,
                                    _ => c.concerns_kitchen(),
                                });
                                if !relevant {
                                    continue;
                                }
                                any = true;
                                // A ticket still waiting simply prints the new version.
                                let moved = tx.exec(
                                    "UPDATE jobs SET version = ?3, updated_ms = ?4 WHERE order_id = ?1 AND receipt_type = ?2
                                       AND kind = 'ticket' AND state = 'queued'",
                                    params![order.id, t as i32, version, now],
                                )?;
                                if moved == 0 {
                                    let kind = format!("change:{version}");
                                    job_ids.push(insert_job(tx, &order, version, t, &kind, Some(base_version), 1, &policy, now)?);
                                }
                            }
                            // Optionally, a driver slip paid after it printed is reprinted, so the
                            // driver does not collect cash twice.
                            let paid = |o: &Order| o.payment_status == PaymentStatus::Paid as i32;
                            if policy.reprint_driver_when_paid
                                && paid(&order)
                                && !paid(&base)
                                && policy.receipt_types.contains(&ReceiptType::Driver)
                            {
                                let moved = tx.exec(
                                    "UPDATE jobs SET version = ?2, updated_ms = ?3 WHERE order_id = ?1 AND receipt_type = ?4
                                       AND kind = 'ticket' AND state = 'queued'",
                                    params![order.id, version, now, ReceiptType::Driver as i32],
                                )?;
                                if moved == 0 {
                                    let kind = format!("paid:{version}");
                                    job_ids.push(insert_job(tx, &order, version, ReceiptType::Driver, &kind, None, 1, &policy, now)?);
                                }
                                any = true;
                            }
                            if any {
                                new_paper = Some(version);
                                Disposition::Changed
                            } else {
                                Disposition::Recorded
                            }
                        }
                    }
                };
                let ids_text = job_ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                tx.exec(
                    "UPDATE order_versions SET disposition = ?3, job_ids = ?4 WHERE order_id = ?1 AND version = ?2",
                    params![order.id, version, disposition as i32, ids_text],
                )?;
                let set_now = (disposition == Disposition::Queued).then_some(version);
                tx.exec(
                    "INSERT INTO orders (order_id, number, latest_version, status, set_version, paper_version, storno, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(order_id) DO UPDATE SET
                        number = CASE WHEN excluded.latest_version > latest_version THEN excluded.number ELSE number END,
                        status = CASE WHEN excluded.latest_version > latest_version THEN excluded.status ELSE status END,
                        latest_version = max(latest_version, excluded.latest_version),
                        set_version = coalesce(set_version, excluded.set_version),
                        paper_version = excluded.paper_version,
                        storno = excluded.storno",
                    params![order.id, order.number, version, order.status, set_now, new_paper, new_storno, now],
                )?;
                Ok(SubmitOrderResponse { disposition: disposition as i32, job_ids, duplicate: false })
            })
            .await
    }

    /// Start-up: a job caught in `sending` or `awaiting_confirm` may or may not be on paper.
    /// It becomes `uncertain` and is reprinted with the KOPIE banner.
    pub async fn mark_interrupted_uncertain(&self) -> anyhow::Result<u64> {
        self.db
            .write(|tx| {
                let ids: Vec<(i64, String)> = {
                    let mut stmt =
                        tx.prepare("SELECT id, state FROM jobs WHERE state IN ('sending', 'awaiting_confirm')")?;
                    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
                };
                let now = now_ms();
                for (id, from) in &ids {
                    tx.exec(
                        "UPDATE jobs SET state = 'uncertain', reprint = 1, next_attempt_ms = ?2, updated_ms = ?2,
                           last_error = 'interrupted by a restart before the printer confirmed' WHERE id = ?1",
                        params![id, now],
                    )?;
                    insert_transition(
                        tx,
                        *id,
                        from,
                        JobState::Uncertain,
                        "found after restart; will reprint with banner",
                    )?;
                }
                Ok(ids.len() as u64)
            })
            .await
    }

    /// The next job for `printer`, by priority, order time, receipt type.
    pub async fn next_ready_job(&self, printer: &str) -> anyhow::Result<Option<ReadyJob>> {
        let printer = printer.to_owned();
        self.db
            .call(move |conn| {
                let row: Option<(i64, String, u32, u32)> = conn
                    .row(
                        "SELECT id, state, attempts, max_attempts FROM jobs
                         WHERE printer = ?2 AND state IN ('queued', 'uncertain', 'failed') AND next_attempt_ms <= ?1
                         ORDER BY priority, order_time_ms, type_rank, id LIMIT 1",
                        params![now_ms(), printer],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?;
                let Some((id, state, attempts, max_attempts)) = row else {
                    return Ok(None);
                };
                Ok(Some(ReadyJob {
                    id,
                    state: JobState::parse(&state).context("unknown job state in database")?,
                    attempts,
                    max_attempts,
                    printable: load_printable(conn, id)?,
                }))
            })
            .await
    }

    /// Earliest time a job waiting for `printer` becomes due, if any waits.
    pub async fn next_due_ms(&self, printer: &str) -> anyhow::Result<Option<i64>> {
        let printer = printer.to_owned();
        self.db
            .call(move |conn| {
                Ok(conn.row(
                    "SELECT min(next_attempt_ms) FROM jobs WHERE printer = ?1 AND state IN ('queued', 'uncertain', 'failed')",
                    params![printer],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    /// Failover: every job waiting for `from` (not in flight) moves to `to`, remembering where
    /// it was meant to print. Returns how many moved.
    pub async fn fail_over(&self, from: &str, to: &str, reason: &str) -> anyhow::Result<u64> {
        let (from, to, reason) = (from.to_owned(), to.to_owned(), reason.to_owned());
        self.db
            .write(move |tx| {
                let ids: Vec<(i64, String)> = {
                    let mut st = tx.prepare_cached(
                        "SELECT id, state FROM jobs WHERE printer = ?1 AND state IN ('queued', 'uncertain', 'failed')",
                    )?;
                    st.query_map(params![from], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
                };
                let now = now_ms();
                for (id, state) in &ids {
                    tx.exec(
                        "UPDATE jobs SET printer = ?2, routed_from = coalesce(routed_from, ?3), updated_ms = ?4 WHERE id = ?1",
                        params![id, to, from, now],
                    )?;
                    let state = JobState::parse(state).unwrap_or(JobState::Queued);
                    insert_transition(tx, *id, state.as_str(), state, &format!("failed over from {from} to {to}: {reason}"))?;
                }
                Ok(ids.len() as u64)
            })
            .await
    }

    /// `queued|uncertain|failed → sending`: one attempt used; committed before any byte goes out.
    pub async fn mark_sending(&self, id: i64, from: JobState, confirm_id: String) -> anyhow::Result<()> {
        self.transition(id, from, JobState::Sending, format!("attempt with process id {confirm_id}"), move |tx, now| {
            tx.exec(
                "UPDATE jobs SET state = 'sending', attempts = attempts + 1, confirm_id = ?2, updated_ms = ?3 WHERE id = ?1",
                params![id, confirm_id, now],
            )?;
            Ok(())
        })
        .await
    }

    /// `sending → awaiting_confirm`: the bytes are out.
    pub async fn mark_awaiting_confirm(&self, id: i64) -> anyhow::Result<()> {
        self.transition(
            id,
            JobState::Sending,
            JobState::AwaitingConfirm,
            "sent; waiting for the printer".into(),
            move |tx, now| {
                tx.exec("UPDATE jobs SET state = 'awaiting_confirm', updated_ms = ?2 WHERE id = ?1", params![id, now])?;
                Ok(())
            },
        )
        .await
    }

    /// `awaiting_confirm → printed`: the printer said so.
    pub async fn mark_printed(&self, id: i64) -> anyhow::Result<()> {
        self.transition(
            id,
            JobState::AwaitingConfirm,
            JobState::Printed,
            "confirmed by the printer".into(),
            move |tx, now| {
                tx.exec(
                "UPDATE jobs SET state = 'printed', printed_ms = ?2, updated_ms = ?2, last_error = NULL WHERE id = ?1",
                params![id, now],
            )?;
                Ok(())
            },
        )
        .await
    }

    /// `sending|awaiting_confirm → uncertain` (reprint with banner), or `dead` when the attempts
    /// are used up.
    pub async fn mark_uncertain(
        &self,
        id: i64,
        from: JobState,
        detail: String,
        retry_at_ms: i64,
    ) -> anyhow::Result<JobState> {
        self.db
            .write(move |tx| {
                let (attempts, max): (u32, u32) =
                    tx.row("SELECT attempts, max_attempts FROM jobs WHERE id = ?1", params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let to = if attempts >= max { JobState::Dead } else { JobState::Uncertain };
                let now = now_ms();
                tx.exec(
                    "UPDATE jobs SET state = ?2, reprint = 1, last_error = ?3, next_attempt_ms = ?4, updated_ms = ?5 WHERE id = ?1",
                    params![id, to.as_str(), detail, retry_at_ms, now],
                )?;
                insert_transition(tx, id, from.as_str(), to, &detail)?;
                Ok(to)
            })
            .await
    }

    async fn transition(
        &self,
        id: i64,
        from: JobState,
        to: JobState,
        detail: String,
        update: impl FnOnce(&Connection, i64) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.db
            .write(move |tx| {
                let current: String = tx.row("SELECT state FROM jobs WHERE id = ?1", params![id], |r| r.get(0))?;
                if current != from.as_str() {
                    anyhow::bail!("job {id}: expected state {} but found {current}", from.as_str());
                }
                update(tx, now_ms())?;
                insert_transition(tx, id, from.as_str(), to, &detail)?;
                Ok(())
            })
            .await
    }

    /// The latest version of an order as received, for previews.
    pub async fn latest_order(&self, order_id: String) -> anyhow::Result<Option<(Order, i64)>> {
        self.db
            .call(move |conn| {
                let Some(version) = conn
                    .row("SELECT latest_version FROM orders WHERE order_id = ?1", params![order_id], |r| {
                        r.get::<_, i64>(0)
                    })
                    .optional()?
                else {
                    return Ok(None);
                };
                Ok(Some((load_order(conn, &order_id, version)?, version)))
            })
            .await
    }

    pub async fn counts(&self) -> anyhow::Result<Vec<(JobState, u64)>> {
        self.db
            .call(|conn| {
                let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state")?;
                let rows: Vec<(String, i64)> =
                    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
                Ok(JobState::ALL
                    .into_iter()
                    .map(|s| (s, rows.iter().find(|(n, _)| n == s.as_str()).map(|(_, c)| *c as u64).unwrap_or(0)))
                    .collect())
            })
            .await
    }

    pub async fn order_counts(&self) -> anyhow::Result<(u64, u64)> {
        self.db
            .call(|conn| {
                let orders: i64 = conn.row("SELECT count(*) FROM orders", [], |r| r.get(0))?;
                let versions: i64 = conn.row("SELECT count(*) FROM order_versions", [], |r| r.get(0))?;
                Ok((orders as u64, versions as u64))
            })
            .await
    }

    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        order_id: Option<String>,
        limit: u32,
    ) -> anyhow::Result<Vec<api::Job>> {
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "{JOB_SQL} WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR order_id = ?2) ORDER BY id LIMIT ?3"
                ))?;
                let jobs = stmt
                    .query_map(params![state.map(|s| s.as_str()), order_id, limit], job_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(jobs)
            })
            .await
    }

    pub async fn last_printed(&self) -> anyhow::Result<Option<api::Job>> {
        self.db
            .call(|conn| {
                Ok(conn
                    .query_row(
                        &format!("{JOB_SQL} WHERE state = 'printed' ORDER BY printed_ms DESC, id DESC LIMIT 1"),
                        [],
                        job_from_row,
                    )
                    .optional()?)
            })
            .await
    }

    /// Records a confirmed printer state change as a `connectivity_events` row.
    pub async fn record_printer_change(&self, c: crate::printer::Change) -> anyhow::Result<()> {
        self.db
            .write(move |tx| {
                wixprint_shared::connectivity::record_change(
                    tx,
                    wixprint_shared::connectivity::KIND_PRINTER,
                    &c.printer,
                    c.from.as_str(),
                    c.to.as_str(),
                    &c.detail,
                    c.at_ms,
                )?;
                Ok(())
            })
            .await
    }

    pub async fn connectivity_events(
        &self,
        kind: Option<String>,
        name: Option<String>,
        limit: u32,
    ) -> anyhow::Result<Vec<wixprint_shared::proto::events::ConnectivityEvent>> {
        self.db
            .call(move |conn| Ok(wixprint_shared::connectivity::list(conn, kind.as_deref(), name.as_deref(), limit)?))
            .await
    }

    /// Deletes closed connectivity events that ended before `cutoff_ms`.
    pub async fn prune_connectivity(&self, cutoff_ms: i64) -> anyhow::Result<usize> {
        self.db.write(move |tx| Ok(wixprint_shared::connectivity::prune(tx, cutoff_ms)?)).await
    }

    /// Jobs by printer, state and priority; and the oldest waiting job's creation time.
    pub async fn queue_counts(&self) -> anyhow::Result<(Vec<(String, JobState, i32, u64)>, Option<i64>)> {
        self.db
            .call(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT printer, state, priority, count(*) FROM jobs GROUP BY printer, state, priority
                     ORDER BY printer, state, priority",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i32>(2)?, r.get::<_, i64>(3)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let counts = rows
                    .into_iter()
                    .filter_map(|(p, s, prio, n)| JobState::parse(&s).map(|s| (p, s, prio, n as u64)))
                    .collect();
                let oldest: Option<i64> = conn.row(
                    "SELECT min(created_ms) FROM jobs WHERE state IN ('queued', 'uncertain', 'failed')",
                    [],
                    |r| r.get(0),
                )?;
                Ok((counts, oldest))
            })
            .await
    }

    // ---- recovery sessions (see recovery.rs) ----

    /// A new session for `printer`: every job waiting for it becomes its backlog.
    pub async fn start_recovery(&self, printer: &str, trigger: &str, online_ms: i64) -> anyhow::Result<Option<i64>> {
        let (printer, trigger) = (printer.to_owned(), trigger.to_owned());
        self.db
            .write(move |tx| {
                // The backlog: what waits for the printer, what the dispatcher already took since
                // the printer returned (it does not wait for this bookkeeping).
                const BACKLOG: &str =
                    "printer = ?1 AND (state IN ('queued', 'uncertain', 'failed', 'sending', 'awaiting_confirm')
                     OR (state = 'printed' AND printed_ms >= ?2))";
                let waiting: i64 = tx.row(
                    "SELECT count(*) FROM jobs WHERE printer = ?1 AND state IN ('queued', 'uncertain', 'failed')",
                    params![printer],
                    |r| r.get(0),
                )?;
                if waiting == 0 {
                    return Ok(None);
                }
                let total: i64 =
                    tx.row(&format!("SELECT count(*) FROM jobs WHERE {BACKLOG}"), params![printer, online_ms], |r| {
                        r.get(0)
                    })?;
                let id: i64 = tx.row(
                    "INSERT INTO recovery_sessions (printer, trigger, state, started_ms, online_ms, total)
                     VALUES (?1, ?2, 'validating', ?3, ?4, ?5) RETURNING id",
                    params![printer, trigger, now_ms(), online_ms, total],
                    |r| r.get(0),
                )?;
                tx.exec(
                    &format!("UPDATE jobs SET recovery_session = ?3 WHERE {BACKLOG}"),
                    params![printer, online_ms, id],
                )?;
                Ok(Some(id))
            })
            .await
    }

    /// Sets a session's state (and reason); `ended` closes it.
    pub async fn set_recovery_state(&self, id: i64, state: &str, reason: &str, ended: bool) -> anyhow::Result<()> {
        let (state, reason) = (state.to_owned(), reason.to_owned());
        self.db
            .write(move |tx| {
                let now = now_ms();
                tx.exec(
                    "UPDATE recovery_sessions SET state = ?2, paused_reason = ?3,
                        processing_ms = CASE WHEN ?2 = 'processing' THEN coalesce(processing_ms, ?4) ELSE processing_ms END,
                        ended_ms = CASE WHEN ?5 THEN ?4 ELSE NULL END
                     WHERE id = ?1",
                    params![id, state, reason, now, ended],
                )?;
                Ok(())
            })
            .await
    }

    /// Recounts a session's progress from its backlog jobs; returns the session.
    pub async fn refresh_recovery(&self, id: i64) -> anyhow::Result<Option<RecoveryRow>> {
        self.db
            .write(move |tx| {
                tx.exec(
                    "UPDATE recovery_sessions SET
                        done = (SELECT count(*) FROM jobs WHERE recovery_session = ?1 AND state IN ('printed', 'cancelled')),
                        failed = (SELECT count(*) FROM jobs WHERE recovery_session = ?1 AND state = 'dead'),
                        first_printed_ms = (SELECT min(printed_ms) FROM jobs WHERE recovery_session = ?1)
                     WHERE id = ?1",
                    params![id],
                )?;
                recovery_row(tx, id)
            })
            .await
    }

    /// Jobs of a session by whether they still wait (queued, uncertain, failed, in flight) or are held.
    pub async fn recovery_open_jobs(&self, id: i64) -> anyhow::Result<(u64, u64)> {
        self.db
            .call(move |conn| {
                let waiting: i64 = conn.row(
                    "SELECT count(*) FROM jobs WHERE recovery_session = ?1
                       AND state IN ('queued', 'uncertain', 'failed', 'sending', 'awaiting_confirm')",
                    params![id],
                    |r| r.get(0),
                )?;
                let held: i64 = conn.row(
                    "SELECT count(*) FROM jobs WHERE recovery_session = ?1 AND state = 'held'",
                    params![id],
                    |r| r.get(0),
                )?;
                Ok((waiting as u64, held as u64))
            })
            .await
    }

    /// Cancel: the session's waiting backlog is kept as `held`; returns how many.
    pub async fn hold_recovery_jobs(&self, id: i64) -> anyhow::Result<u64> {
        self.move_recovery_jobs(
            id,
            &["queued", "uncertain", "failed"],
            JobState::Held,
            "recovery cancelled: kept, not printed",
        )
        .await
    }

    /// Resume after cancel: held jobs wait again.
    pub async fn release_recovery_jobs(&self, id: i64) -> anyhow::Result<u64> {
        self.move_recovery_jobs(id, &["held"], JobState::Queued, "recovery resumed").await
    }

    async fn move_recovery_jobs(&self, id: i64, from: &[&str], to: JobState, detail: &str) -> anyhow::Result<u64> {
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        let detail = detail.to_owned();
        self.db
            .write(move |tx| {
                let rows: Vec<(i64, String)> = {
                    let mut st = tx.prepare_cached("SELECT id, state FROM jobs WHERE recovery_session = ?1")?;
                    st.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
                };
                let now = now_ms();
                let mut n = 0;
                for (job, state) in rows.iter().filter(|(_, s)| from.contains(s)) {
                    tx.exec(
                        "UPDATE jobs SET state = ?2, next_attempt_ms = ?3, updated_ms = ?3 WHERE id = ?1",
                        params![job, to.as_str(), now],
                    )?;
                    insert_transition(tx, *job, state, to, &detail)?;
                    n += 1;
                }
                Ok(n)
            })
            .await
    }

    /// Sessions left open by an earlier process: closed as interrupted (their waiting jobs
    /// form the backlog of the next session).
    pub async fn close_stale_recoveries(&self) -> anyhow::Result<u64> {
        self.db
            .write(|tx| {
                Ok(tx.exec(
                    "UPDATE recovery_sessions SET state = 'interrupted', ended_ms = ?1,
                        summary = 'wix-print stopped during this recovery; a new session took over its jobs'
                     WHERE ended_ms IS NULL",
                    params![now_ms()],
                )? as u64)
            })
            .await
    }

    pub async fn set_recovery_summary(&self, id: i64, summary: String) -> anyhow::Result<()> {
        self.db
            .write(move |tx| {
                tx.exec("UPDATE recovery_sessions SET summary = ?2 WHERE id = ?1", params![id, summary])?;
                Ok(())
            })
            .await
    }

    pub async fn recovery(&self, id: i64) -> anyhow::Result<Option<RecoveryRow>> {
        self.db.call(move |conn| recovery_row(conn, id)).await
    }

    /// The open session of `printer`, if any.
    pub async fn open_recovery(&self, printer: &str) -> anyhow::Result<Option<RecoveryRow>> {
        let printer = printer.to_owned();
        self.db
            .call(move |conn| {
                let id: Option<i64> = conn
                    .row(
                        "SELECT id FROM recovery_sessions WHERE printer = ?1 AND ended_ms IS NULL ORDER BY id DESC LIMIT 1",
                        params![printer],
                        |r| r.get(0),
                    )
                    .optional()?;
                match id {
                    Some(id) => recovery_row(conn, id),
                    None => Ok(None),
                }
            })
            .await
    }

    /// Sessions newest first, optionally of one printer.
    pub async fn list_recoveries(&self, printer: Option<String>, limit: u32) -> anyhow::Result<Vec<RecoveryRow>> {
        self.db
            .call(move |conn| {
                let ids: Vec<i64> = {
                    let mut st = conn.prepare_cached(
                        "SELECT id FROM recovery_sessions WHERE (?1 IS NULL OR printer = ?1) ORDER BY id DESC LIMIT ?2",
                    )?;
                    st.query_map(params![printer, limit], |r| r.get(0))?.collect::<Result<_, _>>()?
                };
                let mut out = Vec::new();
                for id in ids {
                    out.extend(recovery_row(conn, id)?);
                }
                Ok(out)
            })
            .await
    }

    /// A job, its order version and its transitions.
    pub async fn get_job(&self, id: i64) -> anyhow::Result<Option<(api::Job, Printable, Vec<api::JobTransition>)>> {
        self.db
            .call(move |conn| {
                let Some(job) = conn.row(&format!("{JOB_SQL} WHERE id = ?1"), params![id], job_from_row).optional()?
                else {
                    return Ok(None);
                };
                let printable = load_printable(conn, id)?;
                let mut stmt = conn.prepare_cached(
                    "SELECT from_state, to_state, at_ms, detail FROM job_transitions WHERE job_id = ?1 ORDER BY id",
                )?;
                let transitions = stmt
                    .query_map(params![id], |r| {
                        Ok(api::JobTransition {
                            from_state: r.get(0)?,
                            to_state: r.get(1)?,
                            at: opt_timestamp(r.get(2)?),
                            detail: r.get(3)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some((job, printable, transitions)))
            })
            .await
    }
}

/// One row of `recovery_sessions`.
#[derive(Debug, Clone, Default)]
pub struct RecoveryRow {
    pub id: i64,
    pub printer: String,
    pub trigger: String,
    pub state: String,
    pub started_ms: i64,
    pub online_ms: i64,
    pub processing_ms: Option<i64>,
    pub first_printed_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub paused_reason: String,
    pub summary: String,
}

fn recovery_row(conn: &Connection, id: i64) -> anyhow::Result<Option<RecoveryRow>> {
    Ok(conn
        .row(
            "SELECT id, printer, trigger, state, started_ms, online_ms, processing_ms, first_printed_ms, ended_ms,
                    total, done, failed, paused_reason, summary FROM recovery_sessions WHERE id = ?1",
            params![id],
            |r| {
                Ok(RecoveryRow {
                    id: r.get(0)?,
                    printer: r.get(1)?,
                    trigger: r.get(2)?,
                    state: r.get(3)?,
                    started_ms: r.get(4)?,
                    online_ms: r.get(5)?,
                    processing_ms: r.get(6)?,
                    first_printed_ms: r.get(7)?,
                    ended_ms: r.get(8)?,
                    total: r.get::<_, i64>(9)? as u64,
                    done: r.get::<_, i64>(10)? as u64,
                    failed: r.get::<_, i64>(11)? as u64,
                    paused_reason: r.get(12)?,
                    summary: r.get(13)?,
                })
            },
        )
        .optional()?)
}

fn load_order(conn: &Connection, order_id: &str, version: i64) -> anyhow::Result<Order> {
    let pb: Vec<u8> = conn.row(
        "SELECT order_pb FROM order_versions WHERE order_id = ?1 AND version = ?2",
        params![order_id, version],
        |r| r.get(0),
    )?;
    Order::decode(pb.as_slice()).context("stored order is undecodable")
}

const JOB_SQL: &str =
    "SELECT id, order_id, order_number, version, receipt_type, copy, state, attempts, priority, reprint, printer,
    last_error, created_ms, updated_ms, printed_ms, next_attempt_ms, kind FROM jobs";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<api::Job> {
    let state: String = r.get(6)?;
    Ok(api::Job {
        id: r.get(0)?,
        order_id: r.get(1)?,
        order_number: r.get(2)?,
        version: r.get(3)?,
        receipt_type: r.get(4)?,
        copy: r.get(5)?,
        state: JobState::parse(&state).map(|s| s.to_proto()).unwrap_or(api::JobState::Unspecified) as i32,
        attempts: r.get(7)?,
        priority: r.get(8)?,
        reprint: r.get(9)?,
        printer: r.get(10)?,
        last_error: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
        created_at: opt_timestamp(r.get(12)?),
        updated_at: opt_timestamp(r.get(13)?),
        printed_at: opt_timestamp(r.get(14)?),
        next_attempt_at: opt_timestamp(r.get(15)?),
        kind: r.get::<_, String>(16)?.split(':').next().unwrap_or_default().to_owned(),
    })
}

fn insert_transition(tx: &Connection, id: i64, from: &str, to: JobState, detail: &str) -> rusqlite::Result<()> {
    tx.exec(
        "INSERT INTO job_transitions (job_id, from_state, to_state, at_ms, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, from, to.as_str(), now_ms(), detail],
    )?;
    Ok(())
}

fn parse_ids(s: &str) -> Vec<i64> {
    s.split(',').filter_map(|p| p.parse().ok()).collect()
}
