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
use wixprint_shared::proto::order::Order;
use wixprint_shared::proto::print::ReceiptType;
use wixprint_shared::time::now_ms;

pub use crate::job::{JobKind, JobState, RecoveryState};
use crate::paper::{self, Disposition, JobView, NewJob, OrderPaper, QueuePolicy};
use crate::priority::Priority;
use wixprint_shared::failure::FailureClass;

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
    r#"
CREATE INDEX jobs_printed ON jobs (state, printed_ms);
CREATE INDEX jobs_order ON jobs (order_id, receipt_type, id);
CREATE INDEX order_versions_received ON order_versions (received_ms);
CREATE INDEX orders_received ON orders (received_ms);
CREATE INDEX recovery_sessions_ended ON recovery_sessions (ended_ms);
"#,
    r#"
ALTER TABLE jobs ADD COLUMN failure_class TEXT;
ALTER TABLE job_transitions ADD COLUMN failure_class TEXT;
CREATE INDEX jobs_dead ON jobs (state, printer, updated_ms);
"#,
    wixprint_shared::healing::HEALING_MIGRATION,
    wixprint_shared::alerts::ALERT_MIGRATION,
    // Issue 13: when wix-ingest received the version (SubmitOrderRequest.received_at), for the
    // order latency metric.
    "ALTER TABLE order_versions ADD COLUMN webhook_ms INTEGER;",
    // Issue 13: the W3C traceparent of the SubmitOrder span that made (or re-targeted) the
    // job (NULL without traces): its print span joins the order's trace however late it prints.
    "ALTER TABLE jobs ADD COLUMN traceparent TEXT;",
];

/// How much longer than its versions an order's paper state is kept (a year).
const TOMBSTONE_MS: i64 = 365 * 86_400_000;

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub jobs: u64,
    pub order_versions: u64,
    pub orders: u64,
    pub recovery_sessions: u64,
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
    /// The order version it prints (the compare-and-set of `mark_sending` checks it).
    pub version: i64,
    pub attempts: u32,
    pub max_attempts: u32,
    pub printable: Printable,
    /// The trace of the order version it prints, when traces were on.
    pub traceparent: Option<String>,
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
    let kind = JobKind::from_sql(&kind).with_context(|| format!("job {id}: unknown kind {kind:?}"))?;
    let content = match (kind, base_version) {
        (JobKind::Storno, _) => Content::Storno,
        (JobKind::Change { .. }, Some(base)) => Content::Change {
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

/// Inserts one job the plan asked for.
fn insert_job(
    tx: &Connection,
    order: &Order,
    version: i64,
    new: &NewJob,
    policy: &QueuePolicy,
    now: i64,
    traceparent: Option<&str>,
) -> anyhow::Result<i64> {
    let t = new.receipt_type;
    let (priority, rank) = policy.priority.of(order, t);
    let order_time = order.created_at.as_ref().map(wixprint_shared::time::ms_from_timestamp).unwrap_or(now);
    tx.exec(
        "INSERT INTO jobs (order_id, order_number, version, kind, base_version, receipt_type, copy, state, priority,
            order_time_ms, type_rank, max_attempts, next_attempt_ms, printer, created_ms, updated_ms, reprint, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?13, ?14, ?7, ?8, ?9, ?10, ?15, ?12, ?11, ?11, ?16, ?17)",
        params![
            order.id,
            order.number,
            version,
            new.kind.to_sql(),
            new.base_version,
            t as i32,
            priority.as_sql(),
            order_time,
            rank,
            policy.max_attempts,
            now,
            policy.printer_for(t),
            new.copy,
            JobState::Queued.as_sql(),
            queue_now_ms(),
            new.reprint,
            traceparent,
        ],
    )?;
    let id = tx.last_insert_rowid();
    insert_transition(
        tx,
        id,
        None,
        JobState::Queued,
        &format!("{} for order {} version {version}", new.kind, order.number),
    )?;
    Ok(id)
}

/// The answer to a submitted version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub disposition: Disposition,
    /// Jobs created by this version (empty for a repeat).
    pub job_ids: Vec<i64>,
    /// This exact (order id, version) had been submitted before; the stored answer.
    pub duplicate: bool,
}

/// A job as the admin API lists it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: i64,
    pub order_id: String,
    pub order_number: String,
    pub version: i64,
    pub kind: JobKind,
    pub receipt_type: ReceiptType,
    pub copy: u32,
    pub state: JobState,
    pub attempts: u32,
    pub priority: Priority,
    pub reprint: bool,
    pub printer: String,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub printed_ms: Option<i64>,
    pub next_attempt_ms: i64,
    /// The class of the last failure, if any.
    pub failure_class: Option<FailureClass>,
}

/// One row of a job's history.
#[derive(Debug, Clone)]
pub struct TransitionRecord {
    /// `None` for the job's creation.
    pub from: Option<JobState>,
    pub to: JobState,
    pub at_ms: i64,
    pub detail: String,
    pub failure_class: Option<FailureClass>,
}

#[derive(Clone)]
pub struct Store {
    db: Db,
    /// The longest a job may legitimately wait for its next attempt (the retry backoff's
    /// maximum, with room). A `next_attempt` further ahead was written before the wall clock
    /// stepped back (a Pi without a real-time clock at boot), and is due now.
    horizon_ms: i64,
}

/// The queue's clock, for `next_attempt` (never for records): the wall clock when wix-print
/// started, advanced by the monotonic clock since. A wall-clock step while the process runs
/// (a Pi without a real-time clock steps its time when NTP answers after boot) neither stalls
/// a retry nor fires it early; a step between two runs is covered by the horizon.
pub fn queue_now_ms() -> i64 {
    static ANCHOR: std::sync::LazyLock<(i64, std::time::Instant)> =
        std::sync::LazyLock::new(|| (now_ms(), std::time::Instant::now()));
    ANCHOR.0.saturating_add(ANCHOR.1.elapsed().as_millis().min(i64::MAX as u128) as i64)
}

/// A job is due when its next attempt has come, or lies beyond any backoff (see `horizon_ms`).
const DUE: &str = "(next_attempt_ms <= ?1 OR next_attempt_ms > ?1 + ?3)";

/// A job waits while an earlier job of its order and receipt type is unfinished: a change
/// slip never prints before the ticket it changes, a STORNO never before a ticket in flight.
static UNBLOCKED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "NOT EXISTS (SELECT 1 FROM jobs AS earlier WHERE earlier.order_id = jobs.order_id
           AND earlier.receipt_type = jobs.receipt_type AND earlier.id < jobs.id AND earlier.state IN ({}))",
        JobState::sql_list(&JobState::OPEN)
    )
});

/// The next job a printer's dispatcher takes: the first due and unblocked waiting job in
/// (priority, order time, receipt type, id) order. One ordered walk of `jobs_printer_ready` per
/// waiting state, each stopping at its first match, then the best of those (at most three)
/// rows: a single `state IN (...)` query made SQLite collect and sort every waiting job of the
/// printer for each ticket (≈5 ms per ticket with 6,000 queued, ≈7 µs this way; BENCHMARKS.md).
static NEXT_READY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let per_state: Vec<String> = JobState::WAITING
        .iter()
        .map(|state| {
            format!(
                "SELECT * FROM (SELECT id, state, version, attempts, max_attempts, traceparent, priority,
                        order_time_ms, type_rank
                   FROM jobs INDEXED BY jobs_printer_ready
                  WHERE printer = ?2 AND state = '{}' AND {DUE} AND {}
                  ORDER BY priority, order_time_ms, type_rank, id LIMIT 1)",
                state.as_sql(),
                *UNBLOCKED
            )
        })
        .collect();
    format!(
        "SELECT id, state, version, attempts, max_attempts, traceparent FROM ({})
          ORDER BY priority, order_time_ms, type_rank, id LIMIT 1",
        per_state.join(" UNION ALL ")
    )
});

/// Why `requeue_dead` changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequeueRefused {
    NotFound(i64),
    NotDead(i64, JobState),
    /// The job's order was cancelled: its STORNO covers it.
    Cancelled(i64),
}

/// A waiting job whose stored data cannot become a ticket: it is dead-lettered (permanent).
#[derive(Debug, thiserror::Error)]
#[error("job {id} cannot be printed: {reason}")]
pub struct Unprintable {
    pub id: i64,
    pub state: JobState,
    pub reason: String,
}

/// A job that changed between loading and `mark_sending`: it is reloaded, never sent stale.
#[derive(Debug, thiserror::Error)]
#[error("job {id} changed since it was loaded: expected {} version {}, found {} version {}", .expected.0, .expected.1, .found.0, .found.1)]
pub struct Stale {
    pub id: i64,
    pub expected: (JobState, i64),
    pub found: (JobState, i64),
}

impl Store {
    pub fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        Self::open_with_horizon(path, std::time::Duration::from_secs(3600))
    }

    /// Opens the store; `horizon` is the longest legitimate wait for a next attempt.
    pub fn open_with_horizon(path: &std::path::Path, horizon: std::time::Duration) -> anyhow::Result<Self> {
        Ok(Self { db: Db::open(path, MIGRATIONS)?, horizon_ms: horizon.as_millis().min(i64::MAX as u128) as i64 })
    }

    /// Records an order version and, in the same transaction, does what it means on paper
    /// (decided by [`paper::plan`]): the first approved version creates the receipt set; a
    /// later version with printable changes queues change slips (or lets tickets never sent
    /// print the new version); a cancellation cancels what waits and queues STORNO slips for
    /// what may be on paper. A repeat of (order id, version) changes nothing and returns the
    /// stored answer.
    pub async fn submit(
        &self,
        order: Order,
        version: i64,
        previous_version: i64,
        policy: QueuePolicy,
    ) -> anyhow::Result<SubmitOutcome> {
        self.submit_received(order, version, previous_version, policy, None, None).await
    }

    /// [`Store::submit`], remembering when wix-ingest received the version (`webhook_ms`,
    /// the start of `wixprint.print.order.latency`) and the trace the jobs it makes or
    /// re-targets belong to (`traceparent`).
    pub async fn submit_received(
        &self,
        order: Order,
        version: i64,
        previous_version: i64,
        policy: QueuePolicy,
        webhook_ms: Option<i64>,
        traceparent: Option<String>,
    ) -> anyhow::Result<SubmitOutcome> {
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
                    let disposition = Disposition::from_sql(disposition)
                        .with_context(|| format!("unknown disposition {disposition} stored for order {}", order.id))?;
                    return Ok(SubmitOutcome { disposition, job_ids: parse_ids(&job_ids), duplicate: true });
                }
                let now = now_ms();
                tx.exec(
                    "INSERT INTO order_versions (order_id, version, received_ms, disposition, job_ids, order_pb, webhook_ms) VALUES (?1, ?2, ?3, 0, '', ?4, ?5)",
                    params![order.id, version, now, order.encode_to_vec(), webhook_ms],
                )?;
                let known: Option<OrderPaper> = tx
                    .row(
                        "SELECT latest_version, set_version, paper_version, storno FROM orders WHERE order_id = ?1",
                        params![order.id],
                        |r| {
                            Ok(OrderPaper {
                                latest_version: r.get(0)?,
                                set_version: r.get(1)?,
                                paper_version: r.get(2)?,
                                storno: r.get(3)?,
                            })
                        },
                    )
                    .optional()?;
                let jobs = order_jobs(tx, &order.id)?;
                // The version the paper shows; gone when the retention pruned it (then nothing
                // more prints for the order: see `paper::plan`).
                let base = match known.and_then(|k| k.paper_version.or(k.set_version)) {
                    Some(v) => load_order_if_kept(tx, &order.id, v)?,
                    None => None,
                };
                // Ingest forwarded an earlier version we have no record of, for an order we do
                // not know at all: print.db lost this order's history.
                let missed_history = known.is_none()
                    && previous_version > 0
                    && tx
                        .row(
                            "SELECT count(*) FROM order_versions WHERE order_id = ?1 AND version = ?2",
                            params![order.id, previous_version],
                            |r| r.get::<_, i64>(0),
                        )?
                        == 0;
                let arrival = paper::Arrival { missed_history, now_ms: now };
                let plan = paper::plan(known, &jobs, base.as_ref(), &order, version, arrival, &policy);

                let reason = format!("order {} version {version}", order.number);
                for &(id, from) in &plan.cancels {
                    set_state(tx, id, from, JobState::Cancelled, now)?;
                    insert_transition(tx, id, Some(from), JobState::Cancelled, &format!("{reason} cancelled it"))?;
                }
                for &id in &plan.retargets {
                    let state: String = tx.row("SELECT state FROM jobs WHERE id = ?1", params![id], |r| r.get(0))?;
                    let state = parse_state(&state)?;
                    tx.exec(
                        "UPDATE jobs SET version = ?2, updated_ms = ?3, traceparent = ?4 WHERE id = ?1",
                        params![id, version, now, traceparent],
                    )?;
                    insert_transition(tx, id, Some(state), state, &format!("{reason}: prints this version"))?;
                }
                let mut job_ids = Vec::with_capacity(plan.inserts.len());
                for new in &plan.inserts {
                    job_ids.push(insert_job(tx, &order, version, new, &policy, now, traceparent.as_deref())?);
                }
                let ids_text = job_ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                tx.exec(
                    "UPDATE order_versions SET disposition = ?3, job_ids = ?4 WHERE order_id = ?1 AND version = ?2",
                    params![order.id, version, plan.disposition.as_sql(), ids_text],
                )?;
                let p = plan.paper;
                tx.exec(
                    "INSERT INTO orders (order_id, number, latest_version, status, set_version, paper_version, storno, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(order_id) DO UPDATE SET
                        number = CASE WHEN excluded.latest_version > latest_version THEN excluded.number ELSE number END,
                        status = CASE WHEN excluded.latest_version > latest_version THEN excluded.status ELSE status END,
                        latest_version = excluded.latest_version,
                        set_version = excluded.set_version,
                        paper_version = excluded.paper_version,
                        storno = excluded.storno",
                    params![order.id, order.number, p.latest_version, order.status, p.set_version, p.paper_version, p.storno, now],
                )?;
                Ok(SubmitOutcome { disposition: plan.disposition, job_ids, duplicate: false })
            })
            .await
    }

    /// Start-up: a job caught in `sending` or `awaiting_confirm` may or may not be on paper.
    /// It becomes `uncertain` and is reprinted with the KOPIE banner (or `cancelled`, when its
    /// order was cancelled meanwhile: the STORNO covers it; see [`paper::after_doubt`]).
    pub async fn mark_interrupted_uncertain(&self) -> anyhow::Result<u64> {
        self.db
            .write(|tx| {
                let ids: Vec<(i64, String)> = {
                    let mut stmt = tx.prepare(&format!(
                        "SELECT id, state FROM jobs WHERE state IN ({})",
                        JobState::sql_list(&JobState::IN_FLIGHT)
                    ))?;
                    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
                };
                let now = now_ms();
                for (id, from) in &ids {
                    let from = parse_state(from)?;
                    let doubt = job_doubt(tx, *id)?;
                    // A restart is not the job's fault: it keeps its attempts for the reprint.
                    let to = paper::after_doubt(doubt.order_cancelled, 0, 1);
                    let detail = match to {
                        JobState::Cancelled => "found after restart; its order was cancelled, the STORNO covers it",
                        _ => "found after restart; will reprint with banner",
                    };
                    tx.exec(
                        "UPDATE jobs SET state = ?3, reprint = 1, next_attempt_ms = ?4, updated_ms = ?2,
                           last_error = 'interrupted by a restart before the printer confirmed' WHERE id = ?1",
                        params![id, now, to.as_sql(), queue_now_ms()],
                    )?;
                    insert_transition(tx, *id, Some(from), to, detail)?;
                }
                Ok(ids.len() as u64)
            })
            .await
    }

    /// The next job for `printer`, by priority, order time, receipt type; a job never comes
    /// before an unfinished earlier job of its order and receipt type (a change slip follows
    /// its ticket, a STORNO follows a ticket in flight).
    pub async fn next_ready_job(&self, printer: &str) -> anyhow::Result<Option<ReadyJob>> {
        let printer = printer.to_owned();
        let horizon = self.horizon_ms;
        self.db
            .call(move |conn| {
                let row: Option<(i64, String, i64, u32, u32, Option<String>)> = conn
                    .row(&NEXT_READY, params![queue_now_ms(), printer, horizon], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                    })
                    .optional()?;
                let Some((id, state, version, attempts, max_attempts, traceparent)) = row else {
                    return Ok(None);
                };
                let state = parse_state(&state)?;
                let printable = match load_printable(conn, id) {
                    Ok(p) => p,
                    // Undecodable or missing data (not a failing database): never printable.
                    Err(e)
                        if !e.chain().any(|c| {
                            c.downcast_ref::<rusqlite::Error>()
                                .is_some_and(|e| !matches!(e, rusqlite::Error::QueryReturnedNoRows))
                        }) =>
                    {
                        anyhow::bail!(Unprintable { id, state, reason: format!("{e:#}") })
                    }
                    Err(e) => return Err(e),
                };
                Ok(Some(ReadyJob { id, state, version, attempts, max_attempts, printable, traceparent }))
            })
            .await
    }

    /// Earliest time a job waiting for `printer` becomes due, if any waits (jobs that wait
    /// for an earlier job of their order are not due: that job's end wakes the queue).
    pub async fn next_due_ms(&self, printer: &str) -> anyhow::Result<Option<i64>> {
        let printer = printer.to_owned();
        let horizon = self.horizon_ms;
        self.db
            .call(move |conn| {
                // A time further ahead than any backoff was written before the wall clock
                // stepped back: it is due now.
                Ok(conn.row(
                    &format!(
                        "SELECT min(CASE WHEN next_attempt_ms > ?2 + ?3 THEN ?2 ELSE next_attempt_ms END)
                         FROM jobs WHERE printer = ?1 AND state IN ({}) AND {}",
                        JobState::sql_list(&JobState::WAITING),
                        *UNBLOCKED
                    ),
                    params![printer, queue_now_ms(), horizon],
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
                    let mut st = tx.prepare_cached(&format!(
                        "SELECT id, state FROM jobs WHERE printer = ?1 AND state IN ({})",
                        JobState::sql_list(&JobState::WAITING)
                    ))?;
                    st.query_map(params![from], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
                };
                let now = now_ms();
                for (id, state) in &ids {
                    tx.exec(
                        "UPDATE jobs SET printer = ?2, routed_from = coalesce(routed_from, ?3), updated_ms = ?4 WHERE id = ?1",
                        params![id, to, from, now],
                    )?;
                    let state = parse_state(state)?;
                    insert_transition(tx, *id, Some(state), state, &format!("failed over from {from} to {to}: {reason}"))?;
                }
                Ok(ids.len() as u64)
            })
            .await
    }

    /// `queued|uncertain|failed → sending`: one attempt used; committed before any byte goes
    /// out. A compare-and-set on (state, version): a job that changed since it was loaded
    /// (cancelled, or now carrying a newer version) is not sent; the caller reloads it.
    pub async fn mark_sending(&self, job: &ReadyJob, confirm_id: String) -> anyhow::Result<()> {
        let (id, from, version) = (job.id, job.state, job.version);
        self.db
            .write(move |tx| {
                let (state, current): (String, i64) =
                    tx.row("SELECT state, version FROM jobs WHERE id = ?1", params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let state = parse_state(&state)?;
                if state != from || current != version {
                    anyhow::bail!(Stale { id, expected: (from, version), found: (state, current) });
                }
                tx.exec(
                    "UPDATE jobs SET state = ?4, attempts = attempts + 1, confirm_id = ?2, updated_ms = ?3 WHERE id = ?1",
                    params![id, confirm_id, now_ms(), JobState::Sending.as_sql()],
                )?;
                insert_transition(tx, id, Some(from), JobState::Sending, &format!("attempt with process id {confirm_id}"))?;
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
            |_, _| Ok(()),
        )
        .await
    }

    /// `awaiting_confirm → printed`: the printer said so. Answers the order latency in ms
    /// (wix-ingest's receipt of the job's version → now) when this was the order's last open
    /// job and the receipt time is known.
    pub async fn mark_printed(&self, id: i64) -> anyhow::Result<Option<i64>> {
        let latency = std::sync::Arc::new(std::sync::Mutex::new(None));
        let out = latency.clone();
        self.transition(
            id,
            JobState::AwaitingConfirm,
            JobState::Printed,
            "confirmed by the printer".into(),
            move |tx, now| {
                tx.exec("UPDATE jobs SET printed_ms = ?2, last_error = NULL WHERE id = ?1", params![id, now])?;
                // Two indexed lookups (jobs_order, the order_versions key).
                let webhook_ms: Option<i64> = tx.row(
                    &format!(
                        "SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs o WHERE o.order_id = j.order_id AND o.state IN ({}))
                           THEN NULL ELSE (SELECT v.webhook_ms FROM order_versions v WHERE v.order_id = j.order_id AND v.version = j.version) END
                         FROM jobs j WHERE j.id = ?1",
                        JobState::sql_list(&JobState::OPEN)
                    ),
                    params![id],
                    |r| r.get(0),
                )?;
                *out.lock().unwrap_or_else(|e| e.into_inner()) = webhook_ms.map(|w| (now - w).max(0));
                Ok(())
            },
        )
        .await?;
        Ok(latency.lock().unwrap_or_else(|e| e.into_inner()).take())
    }

    /// Open and dead jobs by printer, state and priority, and the oldest waiting job's
    /// creation time: the queue gauges and the health check (printed and cancelled history is
    /// not counted, so this stays cheap as history grows).
    pub async fn queue_depth(&self) -> anyhow::Result<(Vec<(String, JobState, Priority, u64)>, Option<i64>)> {
        let mut states = JobState::OPEN.to_vec();
        states.push(JobState::Dead);
        self.counts_by_printer(Some(states)).await
    }

    /// `sending|awaiting_confirm →` `uncertain` (reprint with banner), `dead` when the attempts
    /// are used up, or `cancelled` when the order was cancelled meanwhile ([`paper::after_doubt`]).
    pub async fn mark_uncertain(
        &self,
        id: i64,
        from: JobState,
        detail: String,
        retry_at_ms: i64,
    ) -> anyhow::Result<JobState> {
        self.db
            .write(move |tx| {
                let doubt = job_doubt(tx, id)?;
                let to = paper::after_doubt(doubt.order_cancelled, doubt.attempts, doubt.max_attempts);
                let now = now_ms();
                let class = FailureClass::Transient.as_str();
                tx.exec(
                    "UPDATE jobs SET state = ?2, reprint = 1, last_error = ?3, next_attempt_ms = ?4, updated_ms = ?5,
                       failure_class = ?6 WHERE id = ?1",
                    params![id, to.as_sql(), detail, retry_at_ms, now, class],
                )?;
                let detail = match to {
                    JobState::Cancelled => format!("{detail}; its order was cancelled, the STORNO covers it"),
                    JobState::Dead => {
                        format!("{detail}; attempts used up ({} of {})", doubt.attempts, doubt.max_attempts)
                    }
                    _ => detail,
                };
                insert_failed_transition(tx, id, from, to, &detail, FailureClass::Transient)?;
                Ok(to)
            })
            .await
    }

    /// A waiting job that can never print (its stored order cannot be read back, ...): `dead`
    /// at once with its reason, class `permanent`. A job that changed meanwhile is left alone.
    pub async fn mark_dead_permanent(&self, id: i64, from: JobState, detail: String) -> anyhow::Result<bool> {
        self.db
            .write(move |tx| {
                let current: String = tx.row("SELECT state FROM jobs WHERE id = ?1", params![id], |r| r.get(0))?;
                if parse_state(&current)? != from {
                    return Ok(false);
                }
                tx.exec(
                    "UPDATE jobs SET state = ?2, last_error = ?3, updated_ms = ?4, failure_class = ?5 WHERE id = ?1",
                    params![id, JobState::Dead.as_sql(), detail, now_ms(), FailureClass::Permanent.as_str()],
                )?;
                insert_failed_transition(tx, id, from, JobState::Dead, &detail, FailureClass::Permanent)?;
                Ok(true)
            })
            .await
    }

    /// Dead letters, newest first (of one printer when given), and how many there are.
    pub async fn dead_letters(&self, printer: Option<String>, limit: u32) -> anyhow::Result<(Vec<JobRecord>, u64)> {
        self.db
            .call(move |conn| {
                let dead = JobState::Dead.as_sql();
                let total: i64 = conn.row(
                    "SELECT COUNT(*) FROM jobs WHERE state = ?1 AND (?2 IS NULL OR printer = ?2)",
                    params![dead, printer],
                    |r| r.get(0),
                )?;
                let mut stmt = conn.prepare_cached(&format!(
                    "{JOB_SQL} WHERE state = ?1 AND (?2 IS NULL OR printer = ?2) ORDER BY updated_ms DESC, id DESC LIMIT ?3"
                ))?;
                let jobs = stmt
                    .query_map(params![dead, printer, limit], job_row)?
                    .map(|r| job_record(r?))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok((jobs, total as u64))
            })
            .await
    }

    /// Puts dead jobs back in the queue, due now: `ids` (each must be dead), or every dead job
    /// (of `printer` when given) when `ids` is `None`. A job keeps its attempts (they say it
    /// may be on paper: a later cancellation still prints its STORNO) and gets a fresh set of
    /// `max_attempts` on top; it carries the KOPIE banner when an earlier attempt may have
    /// reached paper. A dead job of a cancelled order is not requeued (its STORNO covers it).
    pub async fn requeue_dead(
        &self,
        ids: Option<Vec<i64>>,
        printer: Option<String>,
        max_attempts: u32,
    ) -> anyhow::Result<Result<Vec<JobRecord>, RequeueRefused>> {
        self.db
            .write(move |tx| {
                let dead = JobState::Dead.as_sql();
                let candidates: Vec<i64> = match &ids {
                    Some(ids) => {
                        for id in ids {
                            let row: Option<(String, bool)> = tx
                                .row(
                                    "SELECT j.state, coalesce(o.storno, 0) FROM jobs j
                                       LEFT JOIN orders o ON o.order_id = j.order_id WHERE j.id = ?1",
                                    params![id],
                                    |r| Ok((r.get(0)?, r.get(1)?)),
                                )
                                .optional()?;
                            match row {
                                None => return Ok(Err(RequeueRefused::NotFound(*id))),
                                Some((state, _)) if state != dead => {
                                    return Ok(Err(RequeueRefused::NotDead(*id, parse_state(&state)?)));
                                }
                                Some((_, true)) => return Ok(Err(RequeueRefused::Cancelled(*id))),
                                Some(_) => {}
                            }
                        }
                        ids.clone()
                    }
                    None => {
                        let mut st = tx.prepare_cached(
                            "SELECT j.id FROM jobs j LEFT JOIN orders o ON o.order_id = j.order_id
                              WHERE j.state = ?1 AND (?2 IS NULL OR j.printer = ?2) AND coalesce(o.storno, 0) = 0
                              ORDER BY j.id",
                        )?;
                        st.query_map(params![dead, printer], |r| r.get(0))?.collect::<Result<_, _>>()?
                    }
                };
                let now = now_ms();
                let mut out = Vec::with_capacity(candidates.len());
                for id in candidates {
                    tx.exec(
                        "UPDATE jobs SET state = ?2, max_attempts = attempts + ?3, next_attempt_ms = ?4, updated_ms = ?5,
                           reprint = CASE WHEN attempts > 0 THEN 1 ELSE reprint END WHERE id = ?1",
                        params![id, JobState::Queued.as_sql(), max_attempts, queue_now_ms(), now],
                    )?;
                    insert_transition(tx, id, Some(JobState::Dead), JobState::Queued, "requeued by an operator")?;
                    let row = tx.row(&format!("{JOB_SQL} WHERE id = ?1"), params![id], job_row)?;
                    out.push(job_record(row)?);
                }
                Ok(Ok(out))
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
                let current = parse_state(&current)?;
                if current != from {
                    anyhow::bail!("job {id}: expected state {from} but found {current}");
                }
                let now = now_ms();
                set_state(tx, id, from, to, now)?;
                update(tx, now)?;
                insert_transition(tx, id, Some(from), to, &detail)?;
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
                    .map(|s| (s, rows.iter().find(|(n, _)| n == s.as_sql()).map(|(_, c)| *c as u64).unwrap_or(0)))
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
    ) -> anyhow::Result<Vec<JobRecord>> {
        self.db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "{JOB_SQL} WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR order_id = ?2) ORDER BY id LIMIT ?3"
                ))?;
                let jobs = stmt
                    .query_map(params![state.map(|s| s.as_sql()), order_id, limit], job_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                jobs.into_iter().map(job_record).collect()
            })
            .await
    }

    pub async fn last_printed(&self) -> anyhow::Result<Option<JobRecord>> {
        self.db
            .call(|conn| {
                conn.query_row(
                    &format!("{JOB_SQL} WHERE state = ?1 ORDER BY printed_ms DESC, id DESC LIMIT 1"),
                    params![JobState::Printed.as_sql()],
                    job_row,
                )
                .optional()?
                .map(job_record)
                .transpose()
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

    /// Retention: deletes, in small batches, finished jobs (printed, cancelled, dead) last
    /// touched before `cutoff_ms` with their transitions, then order versions and orders with
    /// no job left that arrived before it (names, phones, addresses go with them), and recovery
    /// sessions that ended before it. A waiting, held or doubtful job is never pruned.
    pub async fn prune(&self, cutoff_ms: i64) -> anyhow::Result<Pruned> {
        let batch = wixprint_shared::retention::BATCH as i64;
        let mut pruned = Pruned::default();
        let finished = JobState::sql_list(&[JobState::Printed, JobState::Cancelled, JobState::Dead]);
        loop {
            let finished = finished.clone();
            let n = self
                .db
                .write(move |tx| {
                    let ids: Vec<i64> = {
                        let mut st = tx.prepare_cached(&format!(
                            "SELECT id FROM jobs WHERE state IN ({finished}) AND updated_ms < ?1 LIMIT ?2"
                        ))?;
                        st.query_map(params![cutoff_ms, batch], |r| r.get(0))?.collect::<Result<_, _>>()?
                    };
                    for id in &ids {
                        tx.exec("DELETE FROM job_transitions WHERE job_id = ?1", params![id])?;
                        tx.exec("DELETE FROM jobs WHERE id = ?1", params![id])?;
                    }
                    Ok(ids.len() as u64)
                })
                .await
                .context("pruning jobs")?;
            pruned.jobs += n;
            if n < batch as u64 {
                break;
            }
        }
        let steps = [
            (
                "order_versions",
                "DELETE FROM order_versions WHERE rowid IN
                   (SELECT v.rowid FROM order_versions v WHERE v.received_ms < ?1
                      AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.order_id = v.order_id) LIMIT ?2)",
            ),
            // An order's paper state (no personal data: id, number, versions, STORNO) outlives
            // its versions by a year, so a late Wix event of it is recorded, never printed as a
            // new order.
            (
                "orders",
                "DELETE FROM orders WHERE order_id IN
                   (SELECT o.order_id FROM orders o WHERE o.received_ms < ?1 - ?3
                      AND NOT EXISTS (SELECT 1 FROM order_versions v WHERE v.order_id = o.order_id) LIMIT ?2)",
            ),
            (
                "recovery_sessions",
                "DELETE FROM recovery_sessions WHERE id IN
                   (SELECT id FROM recovery_sessions WHERE ended_ms < ?1 LIMIT ?2)",
            ),
        ];
        for (table, sql) in steps {
            loop {
                let n = self
                    .db
                    .write(move |tx| {
                        let n = if sql.contains("?3") {
                            tx.exec(sql, params![cutoff_ms, batch, TOMBSTONE_MS])?
                        } else {
                            tx.exec(sql, params![cutoff_ms, batch])?
                        };
                        Ok(n as u64)
                    })
                    .await
                    .with_context(|| format!("pruning {table}"))?;
                match table {
                    "order_versions" => pruned.order_versions += n,
                    "orders" => pruned.orders += n,
                    _ => pruned.recovery_sessions += n,
                }
                if n < batch as u64 {
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

    /// Deletes closed connectivity events that ended before `cutoff_ms`.
    pub async fn prune_connectivity(&self, cutoff_ms: i64) -> anyhow::Result<usize> {
        self.db.write(move |tx| Ok(wixprint_shared::connectivity::prune(tx, cutoff_ms)?)).await
    }

    /// Jobs by printer, state and priority; and the oldest waiting job's creation time.
    pub async fn queue_counts(&self) -> anyhow::Result<(Vec<(String, JobState, Priority, u64)>, Option<i64>)> {
        self.counts_by_printer(None).await
    }

    /// Jobs (in `states`, or all) by printer, state and priority, and the oldest waiting job's
    /// creation time.
    async fn counts_by_printer(
        &self,
        states: Option<Vec<JobState>>,
    ) -> anyhow::Result<(Vec<(String, JobState, Priority, u64)>, Option<i64>)> {
        self.db
            .call(move |conn| {
                let filter = states.map_or(String::new(), |s| format!("WHERE state IN ({})", JobState::sql_list(&s)));
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT printer, state, priority, count(*) FROM jobs {filter} GROUP BY printer, state, priority
                     ORDER BY printer, state, priority"
                ))?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i32>(2)?, r.get::<_, i64>(3)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let counts = rows
                    .into_iter()
                    .map(|(p, s, prio, n)| {
                        let prio = Priority::from_sql(prio).with_context(|| format!("unknown priority {prio}"))?;
                        Ok((p, parse_state(&s)?, prio, n as u64))
                    })
                    .collect::<anyhow::Result<_>>()?;
                let oldest: Option<i64> = conn.row(
                    &format!(
                        "SELECT min(created_ms) FROM jobs WHERE state IN ({})",
                        JobState::sql_list(&JobState::WAITING)
                    ),
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
                let backlog = format!(
                    "printer = ?1 AND (state IN ({}, {}) OR (state = '{}' AND printed_ms >= ?2))",
                    JobState::sql_list(&JobState::WAITING),
                    JobState::sql_list(&JobState::IN_FLIGHT),
                    JobState::Printed.as_sql()
                );
                let waiting: i64 = tx.row(
                    &format!(
                        "SELECT count(*) FROM jobs WHERE printer = ?1 AND state IN ({})",
                        JobState::sql_list(&JobState::WAITING)
                    ),
                    params![printer],
                    |r| r.get(0),
                )?;
                if waiting == 0 {
                    return Ok(None);
                }
                let total: i64 =
                    tx.row(&format!("SELECT count(*) FROM jobs WHERE {backlog}"), params![printer, online_ms], |r| {
                        r.get(0)
                    })?;
                let id: i64 = tx.row(
                    "INSERT INTO recovery_sessions (printer, trigger, state, started_ms, online_ms, total)
                     VALUES (?1, ?2, ?6, ?3, ?4, ?5) RETURNING id",
                    params![printer, trigger, now_ms(), online_ms, total, RecoveryState::Validating.as_sql()],
                    |r| r.get(0),
                )?;
                tx.exec(
                    &format!("UPDATE jobs SET recovery_session = ?3 WHERE {backlog}"),
                    params![printer, online_ms, id],
                )?;
                Ok(Some(id))
            })
            .await
    }

    /// Sets a session's state (and reason); `ended` closes it.
    pub async fn set_recovery_state(
        &self,
        id: i64,
        state: RecoveryState,
        reason: &str,
        ended: bool,
    ) -> anyhow::Result<()> {
        let reason = reason.to_owned();
        self.db
            .write(move |tx| {
                let now = now_ms();
                tx.exec(
                    "UPDATE recovery_sessions SET state = ?2, paused_reason = ?3,
                        processing_ms = CASE WHEN ?6 THEN coalesce(processing_ms, ?4) ELSE processing_ms END,
                        ended_ms = CASE WHEN ?5 THEN ?4 ELSE NULL END
                     WHERE id = ?1",
                    params![id, state.as_sql(), reason, now, ended, state == RecoveryState::Processing],
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
                    &format!(
                        "UPDATE recovery_sessions SET
                            done = (SELECT count(*) FROM jobs WHERE recovery_session = ?1 AND state IN ({})),
                            failed = (SELECT count(*) FROM jobs WHERE recovery_session = ?1 AND state IN ({})),
                            first_printed_ms = (SELECT min(printed_ms) FROM jobs WHERE recovery_session = ?1)
                         WHERE id = ?1",
                        JobState::sql_list(&[JobState::Printed, JobState::Cancelled]),
                        JobState::sql_list(&[JobState::Dead])
                    ),
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
                    &format!(
                        "SELECT count(*) FROM jobs WHERE recovery_session = ?1 AND state IN ({}, {})",
                        JobState::sql_list(&JobState::WAITING),
                        JobState::sql_list(&JobState::IN_FLIGHT)
                    ),
                    params![id],
                    |r| r.get(0),
                )?;
                let held: i64 = conn.row(
                    "SELECT count(*) FROM jobs WHERE recovery_session = ?1 AND state = ?2",
                    params![id, JobState::Held.as_sql()],
                    |r| r.get(0),
                )?;
                Ok((waiting as u64, held as u64))
            })
            .await
    }

    /// Cancel: the session's waiting backlog is kept as `held`; returns how many.
    pub async fn hold_recovery_jobs(&self, id: i64) -> anyhow::Result<u64> {
        self.move_recovery_jobs(id, &JobState::WAITING, JobState::Held, "recovery cancelled: kept, not printed").await
    }

    /// Resume after cancel: held jobs wait again.
    pub async fn release_recovery_jobs(&self, id: i64) -> anyhow::Result<u64> {
        self.move_recovery_jobs(id, &[JobState::Held], JobState::Queued, "recovery resumed").await
    }

    async fn move_recovery_jobs(&self, id: i64, from: &[JobState], to: JobState, detail: &str) -> anyhow::Result<u64> {
        let from = from.to_vec();
        let detail = detail.to_owned();
        self.db
            .write(move |tx| {
                let rows: Vec<(i64, String)> = {
                    let mut st = tx.prepare_cached("SELECT id, state FROM jobs WHERE recovery_session = ?1")?;
                    st.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
                };
                let now = now_ms();
                let mut n = 0;
                for (job, state) in &rows {
                    let state = parse_state(state)?;
                    if !from.contains(&state) {
                        continue;
                    }
                    tx.exec(
                        "UPDATE jobs SET state = ?2, next_attempt_ms = ?4, updated_ms = ?3 WHERE id = ?1",
                        params![job, to.as_sql(), now, queue_now_ms()],
                    )?;
                    insert_transition(tx, *job, Some(state), to, &detail)?;
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
                    "UPDATE recovery_sessions SET state = ?2, ended_ms = ?1,
                        summary = 'wix-print stopped during this recovery; a new session took over its jobs'
                     WHERE ended_ms IS NULL",
                    params![now_ms(), RecoveryState::Interrupted.as_sql()],
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
    pub async fn get_job(&self, id: i64) -> anyhow::Result<Option<(JobRecord, Printable, Vec<TransitionRecord>)>> {
        self.db
            .call(move |conn| {
                let Some(row) = conn.row(&format!("{JOB_SQL} WHERE id = ?1"), params![id], job_row).optional()? else {
                    return Ok(None);
                };
                let job = job_record(row)?;
                let printable = load_printable(conn, id)?;
                let mut stmt = conn.prepare_cached(
                    "SELECT from_state, to_state, at_ms, detail, failure_class FROM job_transitions WHERE job_id = ?1 ORDER BY id",
                )?;
                let rows = stmt
                    .query_map(params![id], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<String>>(4)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let transitions = rows
                    .into_iter()
                    .map(|(from, to, at_ms, detail, class)| {
                        Ok(TransitionRecord {
                            from: if from.is_empty() { None } else { Some(parse_state(&from)?) },
                            to: parse_state(&to)?,
                            at_ms,
                            detail,
                            failure_class: class.as_deref().and_then(FailureClass::parse),
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
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
    pub state: RecoveryState,
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
    let row = conn
        .row(
            "SELECT id, printer, trigger, state, started_ms, online_ms, processing_ms, first_printed_ms, ended_ms,
                    total, done, failed, paused_reason, summary FROM recovery_sessions WHERE id = ?1",
            params![id],
            |r| {
                Ok(RecoveryRow {
                    id: r.get(0)?,
                    printer: r.get(1)?,
                    trigger: r.get(2)?,
                    state: Default::default(),
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
                .and_then(|row| Ok((row, r.get::<_, String>(3)?)))
            },
        )
        .optional()?;
    let Some((mut row, state)) = row else { return Ok(None) };
    row.state =
        RecoveryState::from_sql(&state).with_context(|| format!("recovery session {id}: unknown state {state:?}"))?;
    Ok(Some(row))
}

fn load_order_if_kept(conn: &Connection, order_id: &str, version: i64) -> anyhow::Result<Option<Order>> {
    let pb: Option<Vec<u8>> = conn
        .row(
            "SELECT order_pb FROM order_versions WHERE order_id = ?1 AND version = ?2",
            params![order_id, version],
            |r| r.get(0),
        )
        .optional()?;
    pb.map(|pb| Order::decode(pb.as_slice()).context("stored order is undecodable")).transpose()
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
    last_error, created_ms, updated_ms, printed_ms, next_attempt_ms, kind, failure_class FROM jobs";

/// A `jobs` row as read by [`JOB_SQL`], before its typed columns are checked.
type JobRow = (JobRecord, String, String, i32, i32);

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    let record = JobRecord {
        id: r.get(0)?,
        order_id: r.get(1)?,
        order_number: r.get(2)?,
        version: r.get(3)?,
        kind: JobKind::Ticket,
        receipt_type: ReceiptType::Unspecified,
        copy: r.get(5)?,
        state: JobState::Queued,
        attempts: r.get(7)?,
        priority: Priority::Low,
        reprint: r.get(9)?,
        printer: r.get(10)?,
        last_error: r.get(11)?,
        created_ms: r.get(12)?,
        updated_ms: r.get(13)?,
        printed_ms: r.get(14)?,
        next_attempt_ms: r.get(15)?,
        failure_class: r.get::<_, Option<String>>(17)?.as_deref().and_then(FailureClass::parse),
    };
    Ok((record, r.get(6)?, r.get(16)?, r.get(4)?, r.get(8)?))
}

fn job_record((mut job, state, kind, receipt_type, priority): JobRow) -> anyhow::Result<JobRecord> {
    job.state = parse_state(&state)?;
    job.kind = JobKind::from_sql(&kind).with_context(|| format!("job {}: unknown kind {kind:?}", job.id))?;
    job.receipt_type = ReceiptType::try_from(receipt_type).unwrap_or(ReceiptType::Unspecified);
    job.priority =
        Priority::from_sql(priority).with_context(|| format!("job {}: unknown priority {priority}", job.id))?;
    Ok(job)
}

fn parse_state(s: &str) -> anyhow::Result<JobState> {
    JobState::from_sql(s).with_context(|| format!("unknown job state {s:?} in the database"))
}

/// Moves job `id` from `from` to `to` (the caller records the transition).
fn set_state(tx: &Connection, id: i64, from: JobState, to: JobState, now: i64) -> anyhow::Result<()> {
    let n = tx.exec(
        "UPDATE jobs SET state = ?3, updated_ms = ?4 WHERE id = ?1 AND state = ?2",
        params![id, from.as_sql(), to.as_sql(), now],
    )?;
    anyhow::ensure!(n == 1, "job {id} is no longer {from}");
    Ok(())
}

/// The jobs of an order, as the decision core sees them.
fn order_jobs(conn: &Connection, order_id: &str) -> anyhow::Result<Vec<JobView>> {
    let mut st = conn.prepare_cached(
        "SELECT id, kind, receipt_type, state, version, attempts FROM jobs WHERE order_id = ?1 ORDER BY id",
    )?;
    let rows = st
        .query_map(params![order_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, u32>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(id, kind, rt, state, version, attempts)| {
            Ok(JobView {
                id,
                kind: JobKind::from_sql(&kind).with_context(|| format!("job {id}: unknown kind {kind:?}"))?,
                receipt_type: ReceiptType::try_from(rt).unwrap_or(ReceiptType::Unspecified),
                state: parse_state(&state)?,
                version,
                attempts,
            })
        })
        .collect()
}

/// What decides a doubtful job's fate.
struct Doubt {
    attempts: u32,
    max_attempts: u32,
    order_cancelled: bool,
}

fn job_doubt(conn: &Connection, id: i64) -> anyhow::Result<Doubt> {
    Ok(conn.row(
        "SELECT j.attempts, j.max_attempts, coalesce(o.storno, 0) FROM jobs j
           LEFT JOIN orders o ON o.order_id = j.order_id WHERE j.id = ?1",
        params![id],
        |r| Ok(Doubt { attempts: r.get(0)?, max_attempts: r.get(1)?, order_cancelled: r.get(2)? }),
    )?)
}

fn insert_failed_transition(
    tx: &Connection,
    id: i64,
    from: JobState,
    to: JobState,
    detail: &str,
    class: FailureClass,
) -> rusqlite::Result<()> {
    tx.exec(
        "INSERT INTO job_transitions (job_id, from_state, to_state, at_ms, detail, failure_class)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, from.as_sql(), to.as_sql(), now_ms(), detail, class.as_str()],
    )?;
    Ok(())
}

fn insert_transition(
    tx: &Connection,
    id: i64,
    from: Option<JobState>,
    to: JobState,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.exec(
        "INSERT INTO job_transitions (job_id, from_state, to_state, at_ms, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, from.map_or("", JobState::as_sql), to.as_sql(), now_ms(), detail],
    )?;
    Ok(())
}

fn parse_ids(s: &str) -> Vec<i64> {
    s.split(',').filter_map(|p| p.parse().ok()).collect()
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
    //! The store executes what `paper::plan` decides; these check the execution against a
    //! real SQLite file: plans land in one transaction, the compare-and-set refuses stale
    //! jobs, doubt after a cancellation cancels, ordering and the clock horizon hold.
    use super::*;
    use wixprint_shared::proto::order::{LineItem, OrderStatus};

    fn policy() -> QueuePolicy {
        paper::test_policy(&[ReceiptType::Kitchen], &[ReceiptType::Kitchen])
    }

    fn order(status: OrderStatus, quantity: u32) -> Order {
        Order {
            id: "o-1".into(),
            number: "10001".into(),
            status: status as i32,
            line_items: vec![LineItem { id: "li".into(), name: "Pad Thai".into(), quantity, ..Default::default() }],
            ..Default::default()
        }
    }

    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::open_with_horizon(&dir.path().join("print.db"), std::time::Duration::from_secs(60)).unwrap()
    }

    async fn send(store: &Store, job: &ReadyJob) {
        store.mark_sending(job, "0001".into()).await.unwrap();
        store.mark_awaiting_confirm(job.id).await.unwrap();
    }

    /// The dispatcher's query walks `jobs_printer_ready` in order, one state at a time, and
    /// sorts only the (at most three) rows that walk found: never every waiting job.
    #[tokio::test]
    async fn the_next_job_is_found_by_an_ordered_index_walk_and_across_waiting_states() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let conn = rusqlite::Connection::open(dir.path().join("print.db")).unwrap();
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {}", *NEXT_READY)).unwrap();
        let plan: Vec<String> =
            st.query_map(params![0, "main", 0], |r| r.get::<_, String>(3)).unwrap().collect::<Result<_, _>>().unwrap();
        let searches: Vec<&String> = plan.iter().filter(|l| l.starts_with("SEARCH jobs ")).collect();
        assert_eq!(searches.len(), JobState::WAITING.len(), "{plan:#?}");
        assert!(searches.iter().all(|l| l.contains("jobs_printer_ready (printer=? AND state=?)")), "{plan:#?}");
        assert_eq!(
            plan.iter().filter(|l| l.contains("TEMP B-TREE")).count(),
            1,
            "only the final pick sorts: {plan:#?}"
        );

        // An earlier order's ticket in doubt (state uncertain) comes before a later queued one.
        s.submit(order(OrderStatus::Approved, 1), 1, 0, policy()).await.unwrap();
        let first = s.next_ready_job("main").await.unwrap().unwrap();
        send(&s, &first).await;
        let mut later = order(OrderStatus::Approved, 1);
        later.id = "o-2".into();
        later.number = "10002".into();
        s.submit(later, 1, 0, policy()).await.unwrap();
        let to = s.mark_uncertain(first.id, JobState::AwaitingConfirm, "no answer".into(), queue_now_ms()).await;
        assert_eq!(to.unwrap(), JobState::Uncertain);
        let next = s.next_ready_job("main").await.unwrap().unwrap();
        assert_eq!((next.id, next.state), (first.id, JobState::Uncertain));
    }

    #[tokio::test]
    async fn a_plan_lands_and_a_repeat_returns_the_stored_answer() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let first = s.submit(order(OrderStatus::Approved, 1), 1, 0, policy()).await.unwrap();
        assert_eq!((first.disposition, first.job_ids.len(), first.duplicate), (Disposition::Queued, 1, false));
        let again = s.submit(order(OrderStatus::Approved, 1), 1, 0, policy()).await.unwrap();
        assert_eq!(
            (again.disposition, again.job_ids.clone(), again.duplicate),
            (Disposition::Queued, first.job_ids, true)
        );
        let jobs = s.list_jobs(None, None, 10).await.unwrap();
        assert_eq!(
            (jobs.len(), jobs[0].kind, jobs[0].state, jobs[0].priority),
            (1, JobKind::Ticket, JobState::Queued, Priority::High)
        );
    }

    #[tokio::test]
    async fn a_job_changed_after_loading_is_not_sent() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        s.submit(order(OrderStatus::Approved, 1), 1, 0, policy()).await.unwrap();
        let loaded = s.next_ready_job("main").await.unwrap().unwrap();
        assert_eq!(loaded.version, 1);
        // Version 2 arrives while the dispatcher holds version 1 in memory.
        let changed = s.submit(order(OrderStatus::Approved, 2), 2, 0, policy()).await.unwrap();
        assert_eq!((changed.disposition, changed.job_ids.len()), (Disposition::Changed, 0));
        let err = s.mark_sending(&loaded, "0001".into()).await.unwrap_err();
        assert!(err.downcast_ref::<Stale>().is_some(), "{err:#}");
        let reloaded = s.next_ready_job("main").await.unwrap().unwrap();
        assert_eq!((reloaded.id, reloaded.version, reloaded.printable.order.line_items[0].quantity), (loaded.id, 2, 2));
        s.mark_sending(&reloaded, "0002".into()).await.unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_order_s_ticket_in_doubt_is_cancelled_and_its_storno_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        s.submit(order(OrderStatus::Approved, 1), 1, 0, policy()).await.unwrap();
        let ticket = s.next_ready_job("main").await.unwrap().unwrap();
        send(&s, &ticket).await;
        let cancel = s.submit(order(OrderStatus::Canceled, 1), 2, 0, policy()).await.unwrap();
        assert_eq!((cancel.disposition, cancel.job_ids.len()), (Disposition::Cancelled, 1));
        // The STORNO does not print while the ticket is in flight.
        assert!(s.next_ready_job("main").await.unwrap().is_none());
        assert_eq!(s.next_due_ms("main").await.unwrap(), None, "a blocked job is not due: no busy wake-ups");
        let to = s
            .mark_uncertain(ticket.id, JobState::AwaitingConfirm, "no confirmation".into(), queue_now_ms())
            .await
            .unwrap();
        assert_eq!(to, JobState::Cancelled);
        let storno = s.next_ready_job("main").await.unwrap().unwrap();
        assert!(matches!(storno.printable.content, Content::Storno));
    }

    #[tokio::test]
    async fn a_restart_cancels_an_interrupted_ticket_of_a_cancelled_order_and_reprints_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        s.submit(order(OrderStatus::Approved, 1), 1, 0, policy()).await.unwrap();
        let mut other = order(OrderStatus::Approved, 1);
        other.id = "o-2".into();
        s.submit(other, 1, 0, policy()).await.unwrap();
        let a = s.next_ready_job("main").await.unwrap().unwrap();
        send(&s, &a).await;
        s.submit(order(OrderStatus::Canceled, 1), 2, 0, policy()).await.unwrap();
        let b = s.next_ready_job("main").await.unwrap().unwrap();
        assert_ne!(a.id, b.id);
        s.mark_sending(&b, "0003".into()).await.unwrap();
        assert_eq!(s.mark_interrupted_uncertain().await.unwrap(), 2);
        let (ja, _, _) = s.get_job(a.id).await.unwrap().unwrap();
        let (jb, _, tb) = s.get_job(b.id).await.unwrap().unwrap();
        assert_eq!((ja.state, jb.state, jb.reprint), (JobState::Cancelled, JobState::Uncertain, true));
        assert_eq!(tb.last().map(|t| (t.from, t.to)), Some((Some(JobState::Sending), JobState::Uncertain)));
    }

    #[tokio::test]
    async fn a_retry_time_beyond_the_horizon_is_due_now_after_the_clock_stepped_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir).await;
        let mut b = order(OrderStatus::Approved, 1);
        b.id = "o-2".into();
        s.submit(order(OrderStatus::Approved, 1), 1, 0, policy()).await.unwrap();
        s.submit(b, 1, 0, policy()).await.unwrap();
        let a = s.next_ready_job("main").await.unwrap().unwrap();
        s.mark_sending(&a, "0001".into()).await.unwrap();
        let b = s.next_ready_job("main").await.unwrap().unwrap();
        s.mark_sending(&b, "0002".into()).await.unwrap();
        // A retry 2 s ahead waits.
        s.mark_uncertain(a.id, JobState::Sending, "lost".into(), queue_now_ms() + 2_000).await.unwrap();
        assert!(s.next_ready_job("main").await.unwrap().is_none());
        let due = s.next_due_ms("main").await.unwrap().unwrap();
        assert!(due > queue_now_ms() + 1_000, "due in about 2 s");
        // A retry written before the wall clock stepped back an hour lies an hour ahead:
        // beyond any backoff (the horizon, 60 s here), so it is due now.
        s.mark_uncertain(b.id, JobState::Sending, "lost".into(), queue_now_ms() + 3_600_000).await.unwrap();
        let again = s.next_ready_job("main").await.unwrap().expect("due despite the clock step");
        assert_eq!(again.id, b.id);
        assert!(s.next_due_ms("main").await.unwrap().unwrap() <= queue_now_ms());
    }
}
