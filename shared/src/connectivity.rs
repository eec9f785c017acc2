//! Connectivity history both services keep: one table of state intervals per watched
//! component (the internet, each printer, the peer service), the SQL to read, write and prune
//! it, and a [`Debouncer`] that turns noisy raw probe results into confirmed state changes.
//!
//! Owns: the `connectivity_events` schema ([`CONNECTIVITY_MIGRATION`]) and its queries. Each
//! row is one state of one `(kind, name)`; the row with `ended_ms IS NULL` is the current one.
//! The functions take a plain `&rusqlite::Connection`: callers run them inside
//! [`Db::write`](crate::db::Db::write) / [`Db::call`](crate::db::Db::call), so they compose
//! with the caller's own statements in one transaction.
//!
//! Must never: probe anything, talk to the bus, open a database itself, or decide what a
//! state means for printing or ingesting; that stays in the services.

use rusqlite::{Connection, OptionalExtension};

use crate::db::Cached;
use crate::proto::events::ConnectivityEvent;
use crate::time::{now_ms, opt_timestamp, timestamp_from_ms};

/// Component kinds (`Component.kind`, `connectivity_events.kind`).
pub const KIND_INTERNET: &str = "internet";
pub const KIND_PRINTER: &str = "printer";
pub const KIND_SERVICE: &str = "service";

/// Component states (`Component.state`, `connectivity_events.to_state`).
pub const STATE_ONLINE: &str = "online";
pub const STATE_OFFLINE: &str = "offline";
pub const STATE_DEGRADED: &str = "degraded";
pub const STATE_PAPER_LOW: &str = "paper_low";
pub const STATE_PAPER_OUT: &str = "paper_out";
pub const STATE_COVER_OPEN: &str = "cover_open";
pub const STATE_ERROR: &str = "error";
pub const STATE_UNKNOWN: &str = "unknown";

/// Rows [`list`] returns when asked for `limit = 0`.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Most rows [`list`] returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// One migration (append it to the service's migration list): the event table and the index
/// that finds a component's newest rows.
pub const CONNECTIVITY_MIGRATION: &str = "
CREATE TABLE connectivity_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    detail TEXT NOT NULL
);
CREATE INDEX connectivity_events_kind_name ON connectivity_events (kind, name, id);
";

/// Records that `(kind, name)` went from `from` to `to` at `at_ms`: closes the open row of that
/// component (its `ended_ms` becomes `at_ms`, never earlier than its start) and inserts the new
/// open row. Returns the new row's id. The caller decides whether a change happened (see
/// [`Debouncer`]); this records whatever it is given.
pub fn record_change(
    conn: &Connection,
    kind: &str,
    name: &str,
    from: &str,
    to: &str,
    detail: &str,
    at_ms: i64,
) -> rusqlite::Result<i64> {
    conn.exec(
        "UPDATE connectivity_events SET ended_ms = MAX(started_ms, ?3)
         WHERE kind = ?1 AND name = ?2 AND ended_ms IS NULL",
        rusqlite::params![kind, name, at_ms],
    )?;
    conn.row(
        "INSERT INTO connectivity_events (kind, name, from_state, to_state, started_ms, ended_ms, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6) RETURNING id",
        rusqlite::params![kind, name, from, to, at_ms, detail],
        |r| r.get(0),
    )
}

/// Events newest first, optionally only of one kind and/or name. `limit` 0 means
/// [`DEFAULT_LIST_LIMIT`]; at most [`MAX_LIST_LIMIT`]. `duration_ms` is `ended − started`,
/// or `now − started` for the open row.
pub fn list(
    conn: &Connection,
    kind: Option<&str>,
    name: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<ConnectivityEvent>> {
    let limit = if limit == 0 { DEFAULT_LIST_LIMIT } else { limit.min(MAX_LIST_LIMIT) };
    // One fixed statement per filter shape, so each is prepared once and can use the index.
    let sql = match (kind.is_some(), name.is_some()) {
        (true, true) => {
            "SELECT id, kind, name, from_state, to_state, started_ms, ended_ms, detail FROM connectivity_events
             WHERE kind = ?1 AND name = ?2 ORDER BY id DESC LIMIT ?3"
        }
        (true, false) => {
            "SELECT id, kind, name, from_state, to_state, started_ms, ended_ms, detail FROM connectivity_events
             WHERE kind = ?1 AND ?2 IS NULL ORDER BY id DESC LIMIT ?3"
        }
        (false, true) => {
            "SELECT id, kind, name, from_state, to_state, started_ms, ended_ms, detail FROM connectivity_events
             WHERE ?1 IS NULL AND name = ?2 ORDER BY id DESC LIMIT ?3"
        }
        (false, false) => {
            "SELECT id, kind, name, from_state, to_state, started_ms, ended_ms, detail FROM connectivity_events
             WHERE ?1 IS NULL AND ?2 IS NULL ORDER BY id DESC LIMIT ?3"
        }
    };
    let now = now_ms();
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(rusqlite::params![kind, name, limit], |r| event_from_row(r, now))?;
    rows.collect()
}

/// The open (current) row of `(kind, name)`, if any: what a service restores at start-up to
/// know the state it last recorded.
pub fn current(conn: &Connection, kind: &str, name: &str) -> rusqlite::Result<Option<ConnectivityEvent>> {
    let now = now_ms();
    conn.row(
        "SELECT id, kind, name, from_state, to_state, started_ms, ended_ms, detail FROM connectivity_events
         WHERE kind = ?1 AND name = ?2 AND ended_ms IS NULL ORDER BY id DESC LIMIT 1",
        rusqlite::params![kind, name],
        |r| event_from_row(r, now),
    )
    .optional()
}

/// Deletes closed rows that ended before `older_than_ms`; open rows always stay. Returns how
/// many rows went.
pub fn prune(conn: &Connection, older_than_ms: i64) -> rusqlite::Result<usize> {
    conn.exec("DELETE FROM connectivity_events WHERE ended_ms IS NOT NULL AND ended_ms < ?1", [older_than_ms])
}

fn event_from_row(r: &rusqlite::Row<'_>, now: i64) -> rusqlite::Result<ConnectivityEvent> {
    let started: i64 = r.get(5)?;
    let ended: Option<i64> = r.get(6)?;
    let duration = ended.unwrap_or(now).saturating_sub(started).max(0);
    Ok(ConnectivityEvent {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        from_state: r.get(3)?,
        to_state: r.get(4)?,
        started_at: Some(timestamp_from_ms(started)),
        ended_at: opt_timestamp(ended),
        duration_ms: u64::try_from(duration).unwrap_or(0),
        detail: r.get(7)?,
    })
}

/// Confirms a state change only after the same new raw state was observed `confirm` times in
/// a row, so one lost probe does not flap a component. The very first observation is accepted
/// at once (there is nothing to flap from). Pure: no clock, no I/O.
#[derive(Debug, Clone)]
pub struct Debouncer {
    confirm: u32,
    current: Option<String>,
    /// A raw state different from `current` and how many times in a row it was seen.
    candidate: Option<(String, u32)>,
}

impl Debouncer {
    /// `confirm` 0 is treated as 1 (every change is accepted at once).
    pub fn new(confirm: u32) -> Self {
        Self { confirm: confirm.max(1), current: None, candidate: None }
    }

    /// A debouncer whose confirmed state is already `state` (e.g. "unknown" before the first
    /// probe): unlike [`Debouncer::new`], the first observation then needs `confirm` rounds too.
    pub fn starting_at(confirm: u32, state: &str) -> Self {
        Self { confirm: confirm.max(1), current: Some(state.to_owned()), candidate: None }
    }

    /// Feeds one raw observation; returns `Some(new_state)` when it confirms a change.
    pub fn observe(&mut self, raw_state: &str) -> Option<String> {
        self.observe_with(raw_state, false)
    }

    /// Like [`Debouncer::observe`]; with `immediate` a change to `raw_state` is confirmed at
    /// once (a printer coming back is believed at once, one going away only after `confirm`).
    pub fn observe_with(&mut self, raw_state: &str, immediate: bool) -> Option<String> {
        match &self.current {
            None => {
                self.current = Some(raw_state.to_owned());
                self.candidate = None;
                return Some(raw_state.to_owned());
            }
            Some(current) if current == raw_state => {
                self.candidate = None;
                return None;
            }
            Some(_) => {}
        }
        let seen = match &mut self.candidate {
            Some((state, n)) if state == raw_state => {
                *n = n.saturating_add(1);
                *n
            }
            _ => {
                self.candidate = Some((raw_state.to_owned(), 1));
                1
            }
        };
        if immediate || seen >= self.confirm {
            self.candidate = None;
            self.current = Some(raw_state.to_owned());
            return Some(raw_state.to_owned());
        }
        None
    }

    /// The confirmed state, `None` before the first observation.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(CONNECTIVITY_MIGRATION).unwrap();
        conn
    }

    #[test]
    fn debouncer_accepts_the_first_observation_at_once() {
        let mut d = Debouncer::new(3);
        assert_eq!(d.current(), None);
        assert_eq!(d.observe("online").as_deref(), Some("online"));
        assert_eq!(d.current(), Some("online"));
        assert_eq!(d.observe("online"), None);
    }

    #[test]
    fn debouncer_confirms_a_change_after_n_in_a_row_only() {
        let mut d = Debouncer::new(3);
        d.observe("online");
        assert_eq!(d.observe("offline"), None);
        assert_eq!(d.observe("offline"), None);
        assert_eq!(d.observe("offline").as_deref(), Some("offline"));
        assert_eq!(d.current(), Some("offline"));
        // Staying there reports nothing more.
        assert_eq!(d.observe("offline"), None);
    }

    #[test]
    fn debouncer_resets_on_an_interruption() {
        let mut d = Debouncer::new(2);
        d.observe("online");
        assert_eq!(d.observe("offline"), None);
        // Back to the current state: the candidate is forgotten.
        assert_eq!(d.observe("online"), None);
        assert_eq!(d.observe("offline"), None);
        // A different candidate restarts the count.
        assert_eq!(d.observe("degraded"), None);
        assert_eq!(d.observe("degraded").as_deref(), Some("degraded"));
        assert_eq!(d.current(), Some("degraded"));
    }

    #[test]
    fn debouncer_with_confirm_zero_or_one_follows_every_change() {
        for confirm in [0, 1] {
            let mut d = Debouncer::new(confirm);
            assert_eq!(d.observe("a").as_deref(), Some("a"));
            assert_eq!(d.observe("b").as_deref(), Some("b"));
            assert_eq!(d.observe("b"), None);
            assert_eq!(d.observe("a").as_deref(), Some("a"));
        }
    }

    #[test]
    fn debouncer_can_start_from_a_known_state_and_accept_some_changes_at_once() {
        let mut d = Debouncer::starting_at(2, "unknown");
        assert_eq!(d.current(), Some("unknown"));
        // Going away needs two rounds, even as the first observation.
        assert_eq!(d.observe("offline"), None);
        assert_eq!(d.observe("offline").as_deref(), Some("offline"));
        // Coming back is believed at once; an immediate observation also ends a candidate.
        assert_eq!(d.observe("paper_out"), None);
        assert_eq!(d.observe_with("online", true).as_deref(), Some("online"));
        assert_eq!(d.observe("paper_out"), None);
        assert_eq!(d.observe_with("online", true), None, "no change, and the candidate is forgotten");
        assert_eq!(d.observe("paper_out"), None);
        assert_eq!(d.current(), Some("online"));
    }

    #[test]
    fn record_change_closes_the_open_row_and_list_is_newest_first() {
        let conn = memory_db();
        let a = record_change(&conn, KIND_INTERNET, "internet", "unknown", "online", "", 1_000).unwrap();
        let b = record_change(&conn, KIND_INTERNET, "internet", "online", "offline", "dns failed", 5_000).unwrap();
        let p = record_change(&conn, KIND_PRINTER, "kitchen", "unknown", "online", "", 2_000).unwrap();
        assert!(a < b && b < p);

        let all = list(&conn, None, None, 0).unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![p, b, a]);

        let internet = list(&conn, Some(KIND_INTERNET), Some("internet"), 10).unwrap();
        assert_eq!(internet.len(), 2);
        let (newest, oldest) = (&internet[0], &internet[1]);
        assert_eq!((newest.from_state.as_str(), newest.to_state.as_str()), ("online", "offline"));
        assert_eq!(newest.detail, "dns failed");
        assert!(newest.ended_at.is_none(), "the current row is open");
        assert!(newest.duration_ms > 0, "an open row's duration runs until now");
        assert_eq!(oldest.ended_at, Some(timestamp_from_ms(5_000)));
        assert_eq!(oldest.started_at, Some(timestamp_from_ms(1_000)));
        assert_eq!(oldest.duration_ms, 4_000);

        // The printer's row was not closed by the internet's change.
        let cur = current(&conn, KIND_PRINTER, "kitchen").unwrap().unwrap();
        assert_eq!(cur.id, p);
        assert_eq!(current(&conn, KIND_PRINTER, "bar").unwrap(), None);

        assert_eq!(list(&conn, Some(KIND_PRINTER), None, 0).unwrap().len(), 1);
        assert_eq!(list(&conn, None, Some("internet"), 0).unwrap().len(), 2);
        assert_eq!(list(&conn, None, None, 1).unwrap().len(), 1);
        let open: i64 = conn
            .query_row("SELECT count(*) FROM connectivity_events WHERE ended_ms IS NULL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(open, 2, "exactly one open row per component");
    }

    #[test]
    fn a_change_dated_before_the_open_row_never_makes_a_negative_duration() {
        let conn = memory_db();
        record_change(&conn, KIND_INTERNET, "internet", "unknown", "online", "", 10_000).unwrap();
        // The wall clock stepped back.
        record_change(&conn, KIND_INTERNET, "internet", "online", "offline", "", 9_000).unwrap();
        let rows = list(&conn, None, None, 0).unwrap();
        assert_eq!(rows[1].ended_at, Some(timestamp_from_ms(10_000)));
        assert_eq!(rows[1].duration_ms, 0);
    }

    #[test]
    fn prune_deletes_only_closed_rows_that_ended_before_the_cutoff() {
        let conn = memory_db();
        record_change(&conn, KIND_INTERNET, "internet", "unknown", "online", "", 1_000).unwrap();
        record_change(&conn, KIND_INTERNET, "internet", "online", "offline", "", 2_000).unwrap();
        record_change(&conn, KIND_INTERNET, "internet", "offline", "online", "", 8_000).unwrap();
        // A component whose only row is open and very old.
        record_change(&conn, KIND_PRINTER, "kitchen", "unknown", "online", "", 500).unwrap();
        // Rows ended at 2_000 and 8_000; cutoff 5_000 removes only the first.
        assert_eq!(prune(&conn, 5_000).unwrap(), 1);
        let left = list(&conn, None, None, 0).unwrap();
        assert_eq!(left.len(), 3);
        assert!(left.iter().any(|e| e.kind == KIND_PRINTER), "open rows are never pruned");
        assert_eq!(prune(&conn, i64::MAX).unwrap(), 1);
        assert_eq!(list(&conn, None, None, 0).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn works_through_db_write_and_call() {
        static MIGRATIONS: &[&str] = &[CONNECTIVITY_MIGRATION];
        let dir = std::env::temp_dir().join(format!("wixprint-connectivity-{}", rand::random::<u64>()));
        let db = crate::db::Db::open(&dir.join("t.db"), MIGRATIONS).unwrap();
        let id = db
            .write(|c| Ok(record_change(c, KIND_SERVICE, "wix-print", "unknown", "live", "peer heard", 1_000)?))
            .await
            .unwrap();
        let rows = db.call(|c| Ok(list(c, Some(KIND_SERVICE), None, 0)?)).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, id);
        assert_eq!(rows[0].to_state, "live");
        drop(db);
        std::fs::remove_dir_all(dir).ok();
    }
}
