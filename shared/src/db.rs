//! SQLite for both services: open with the durability pragmas, apply numbered migrations, and
//! run every statement on one dedicated writer thread.
//!
//! Why a thread: `rusqlite::Connection` blocks, and a single owner serialises writers, so no
//! transaction ever meets SQLITE_BUSY from our own process and no async worker ever blocks.
//! Callers send closures; each closure runs to completion (usually one transaction) before
//! the next starts.
//!
//! Writes go through [`Db::write`]: the writer thread runs every write that is waiting in one
//! transaction, each inside its own savepoint (a failing write rolls back only itself), commits
//! once, and only then answers the callers. This group commit turns N concurrent webhooks into
//! one fsync instead of N, without weakening "answered means committed".
//!
//! Durability: WAL with `synchronous=FULL`, so a commit that returned survives power loss.
//! That is what lets ingest answer Wix 200 right after a commit.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;
use tokio::sync::oneshot;

/// How long a write waits for another process's lock by default.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the background thread copies the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Bytes the WAL file keeps after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Most writes the writer thread folds into one transaction.
const MAX_GROUP: usize = 256;

type Finish = Box<dyn FnOnce(Option<String>) + Send>;
type WriteFn = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

enum Task {
    /// Runs alone with the whole connection (reads, maintenance).
    Call(Box<dyn FnOnce(&mut Connection) + Send>),
    /// Runs inside the group transaction; returns whether it succeeded and how to answer
    /// once the commit's outcome is known.
    Write(WriteFn),
}

/// Handle to a database owned by a writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    tx: std::sync::mpsc::Sender<Task>,
    path: std::sync::Arc<std::path::PathBuf>,
}

/// The database is damaged or not a database at all: the message names the file; `cli::main`
/// exits with [`crate::fatal::EXIT_CORRUPT`] and says what to do.
#[derive(Debug, thiserror::Error)]
#[error("database {path} is corrupt: {detail}")]
pub struct Corrupt {
    pub path: String,
    pub detail: String,
}

/// The path of the corrupt database behind `e`, if that is what `e` is about.
pub fn corrupt_database(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|c| c.downcast_ref::<Corrupt>()).map(|c| c.path.clone())
}

/// Whether `e` is SQLite saying the file is damaged or not a database.
fn sqlite_corrupt(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|c| match c.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(f, msg))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) =>
        {
            Some(msg.clone().unwrap_or_else(|| f.to_string()))
        }
        _ => None,
    })
}

/// Which file a path names: a database deleted or replaced while open is told by this
/// changing (SQLite in WAL mode would go on writing into the unlinked file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileId { dev: m.dev(), ino: m.ino() })
    }
}

/// `None` while `path` still names the file we opened; else what happened to it.
fn lost(path: &Path, opened: FileId) -> Option<String> {
    match FileId::of(path) {
        Ok(id) if id == opened => None,
        Ok(_) => Some(format!("database file {} was replaced while the service ran", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("database file {} was deleted while the service ran", path.display()))
        }
        // Unreadable metadata (EACCES, EIO) says nothing about the open file: keep going.
        Err(_) => None,
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and migrates it. `migrations[i]`
    /// brings the schema to `user_version = i + 1`; each runs in its own transaction.
    pub fn open(path: &Path, migrations: &'static [&'static str]) -> anyhow::Result<Self> {
        Self::open_with(path, migrations, DEFAULT_BUSY_TIMEOUT)
    }

    /// Like [`Db::open`], with how long a write waits for a lock held by another process
    /// before it fails (and the caller answers 503).
    pub fn open_with(path: &Path, migrations: &'static [&'static str], busy_timeout: Duration) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating database directory {}", dir.display()))?;
        }
        let corrupt = |e: anyhow::Error| match sqlite_corrupt(&e) {
            Some(detail) => anyhow::Error::new(Corrupt { path: path.display().to_string(), detail }),
            None => e,
        };
        let mut conn = Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
        configure(&conn, busy_timeout)
            .map_err(anyhow::Error::from)
            .map_err(corrupt)
            .with_context(|| format!("configuring database {}", path.display()))?;
        migrate(&mut conn, migrations)
            .map_err(corrupt)
            .with_context(|| format!("migrating database {}", path.display()))?;
        // A database made before incremental vacuum existed is converted once (a full VACUUM).
        let auto_vacuum: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
        if auto_vacuum != 2 {
            tracing::info!(db = %path.display(), "converting the database to incremental vacuum (once)");
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            conn.execute_batch("VACUUM").with_context(|| format!("vacuuming {}", path.display()))?;
        }
        let opened = FileId::of(path).with_context(|| format!("reading {}", path.display()))?;
        // Checkpoints copy the WAL back into the database file with an fsync of their own.
        // Run on the writer, they would stall whichever commit crosses the threshold (the
        // p99 of webhook acceptance); a second connection does them in the background
        // instead (PASSIVE never blocks the writer).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
        configure(&checkpointer, busy_timeout)?;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let watched = path.to_path_buf();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                // Ends when the writer thread ends (it holds the sender).
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(CHECKPOINT_INTERVAL) {
                    if let Some(what) = lost(&watched, opened) {
                        crate::fatal::trigger(crate::fatal::EXIT_DB_LOST, what);
                        break;
                    }
                    if let Err(e) = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "background WAL checkpoint failed");
                    }
                }
                let _ = checkpointer.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .context("spawning the sqlite checkpoint thread")?;
        let (tx, rx) = std::sync::mpsc::channel::<Task>();
        let db_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let _stop_checkpointer = stop_tx;
                let mut next = None;
                loop {
                    let task = match next.take() {
                        Some(t) => t,
                        None => match rx.recv() {
                            Ok(t) => t,
                            // All handles dropped: close cleanly (checkpoints the WAL).
                            Err(_) => break,
                        },
                    };
                    match task {
                        Task::Call(f) => f(&mut conn),
                        Task::Write(first) => {
                            let mut group = vec![first];
                            while group.len() < MAX_GROUP {
                                match rx.try_recv() {
                                    Ok(Task::Write(w)) => group.push(w),
                                    Ok(call) => {
                                        next = Some(call);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            run_group(&conn, group, &db_path, opened);
                        }
                    }
                }
            })
            .context("spawning the sqlite writer thread")?;
        Ok(Self { tx, path: std::sync::Arc::new(path.to_path_buf()) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` alone on the writer thread and returns its result. For reads; a write here
    /// manages its own transaction.
    pub async fn call<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Task::Call(Box::new(move |conn| {
            let _ = reply_tx.send(f(conn));
        })))?;
        let result = reply_rx.await.map_err(|_| anyhow::anyhow!("database writer thread dropped the request"))?;
        self.check(result)
    }

    /// A damaged database is fatal (restarting will not mend it, but saying so loudly does).
    fn check<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        if let Err(e) = &result
            && let Some(detail) = sqlite_corrupt(e)
        {
            crate::fatal::trigger(
                crate::fatal::EXIT_CORRUPT,
                format!("database {} is corrupt: {detail}; move it aside and restart", self.path.display()),
            );
        }
        result
    }

    /// Runs `f` inside a write transaction (shared with other writes waiting at the same
    /// time, each in its own savepoint) and answers only after the commit. An `Err` from `f`
    /// rolls back what `f` wrote and nothing else. `f` must not BEGIN or COMMIT itself.
    pub async fn write<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.send(Task::Write(Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |commit_error| {
                let out = match (result, commit_error) {
                    (Ok(v), None) => Ok(v),
                    (Ok(_), Some(e)) => Err(anyhow::anyhow!("commit failed: {e}")),
                    (Err(e), _) => Err(e),
                };
                let _ = reply_tx.send(out);
            });
            (ok, finish)
        })))?;
        let result = reply_rx.await.map_err(|_| anyhow::anyhow!("database writer thread dropped the request"))?;
        self.check(result)
    }

    /// Gives the free pages back to the file system (after pruning), `step` pages per turn on
    /// the writer thread so writes waiting meanwhile go between the turns; returns the
    /// database's size in bytes afterwards.
    pub async fn reclaim(&self, step: u32) -> anyhow::Result<u64> {
        loop {
            let (free, size) = self
                .call(move |conn| {
                    conn.execute_batch(&format!("PRAGMA incremental_vacuum({step})"))?;
                    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
                    let count: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
                    let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
                    Ok((free, (count * page) as u64))
                })
                .await?;
            if free == 0 {
                return Ok(size);
            }
            tokio::task::yield_now().await;
        }
    }

    fn send(&self, task: Task) -> anyhow::Result<()> {
        self.tx.send(task).map_err(|_| anyhow::anyhow!("database writer thread has stopped"))
    }
}

/// One transaction for a group of writes; answers after the commit (or its failure).
fn run_group(conn: &Connection, group: Vec<WriteFn>, path: &Path, opened: FileId) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Without a transaction nothing may run. Dropping the writes unrun drops their reply
        // channels: every caller gets an error (and ingest answers 503).
        tracing::error!(error = %e, writes = group.len(), "cannot begin a write transaction");
        drop(group);
        return;
    }
    let mut finishes = Vec::with_capacity(group.len());
    for w in group {
        if let Err(e) = conn.execute_batch("SAVEPOINT w") {
            tracing::error!(error = %e, "cannot open a savepoint; write refused");
            drop(w);
            continue;
        }
        let (ok, finish) = w(conn);
        let sp = if ok { conn.execute_batch("RELEASE w") } else { conn.execute_batch("ROLLBACK TO w; RELEASE w") };
        finishes.push((finish, sp.err().map(|e| format!("savepoint: {e}"))));
    }
    // Never acknowledge a write into a file nobody will find again: a database deleted or
    // replaced under us rolls back (the caller answers 503) and ends the service.
    let commit_error = match lost(path, opened) {
        Some(what) => {
            crate::fatal::trigger(crate::fatal::EXIT_DB_LOST, what.clone());
            let _ = conn.execute_batch("ROLLBACK");
            Some(what)
        }
        None => conn.execute_batch("COMMIT").err().map(|e| e.to_string()),
    };
    if commit_error.is_some() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for (finish, own_error) in finishes {
        finish(commit_error.clone().or(own_error));
    }
}

fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    // Freed pages go back to the file system in small steps after pruning (`Db::reclaim`),
    // never in one long VACUUM. Only takes effect on a new, empty database (see `open_with`).
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    if pages == 0 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // The WAL file is truncated back to this after a checkpoint (an SD card is small).
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(busy_timeout)?;
    Ok(())
}

fn migrate(conn: &mut Connection, migrations: &[&str]) -> anyhow::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = usize::try_from(current).context("negative user_version")?;
    if current > migrations.len() {
        anyhow::bail!(
            "database schema version {current} is newer than this binary knows ({}); refusing to run an older binary on it",
            migrations.len()
        );
    }
    for (i, sql) in migrations.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql).with_context(|| format!("migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Statement helpers that reuse prepared statements (the connection's LRU cache): the hot
/// paths run the same few statements thousands of times, and parsing SQL each time is most
/// of their CPU.
pub trait Cached {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static MIGRATIONS: &[&str] = &["CREATE TABLE t (x INTEGER);", "ALTER TABLE t ADD COLUMN y TEXT;"];

    #[tokio::test]
    async fn migrates_once_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("wixprint-db-{}", rand::random::<u64>()));
        let path = dir.join("t.db");
        let db = Db::open(&path, MIGRATIONS).unwrap();
        db.call(|c| Ok(c.execute("INSERT INTO t (x, y) VALUES (1, 'a')", [])?)).await.unwrap();
        drop(db);
        let db = Db::open(&path, MIGRATIONS).unwrap();
        let n: i64 = db.call(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 1);
        let mode: String = db.call(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?)).await.unwrap();
        assert_eq!(mode, "wal");
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_write_into_a_deleted_or_replaced_database_is_refused() {
        for replace in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let db = Db::open(&path, MIGRATIONS).unwrap();
            db.write(|c| Ok(c.execute("INSERT INTO t (x) VALUES (1)", [])?)).await.unwrap();
            std::fs::remove_file(&path).unwrap();
            if replace {
                std::fs::write(&path, b"").unwrap();
            }
            let err = db.write(|c| Ok(c.execute("INSERT INTO t (x) VALUES (2)", [])?)).await.unwrap_err();
            let what = if replace { "was replaced" } else { "was deleted" };
            assert!(format!("{err:#}").contains(what), "{err:#}");
        }
    }

    #[tokio::test]
    async fn a_new_database_gives_freed_pages_back_to_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), MIGRATIONS).unwrap();
        let mode: i64 = db.call(|c| Ok(c.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?)).await.unwrap();
        assert_eq!(mode, 2, "incremental");
        db.write(|c| {
            for i in 0..2000 {
                c.execute("INSERT INTO t (x, y) VALUES (?1, ?2)", rusqlite::params![i, "y".repeat(500)])?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let full = db.reclaim(100).await.unwrap();
        db.write(|c| Ok(c.execute("DELETE FROM t", [])?)).await.unwrap();
        let after = db.reclaim(100).await.unwrap();
        assert!(after < full / 4, "{full} bytes before, {after} after");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_reported_as_corrupt_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        std::fs::write(&path, b"not a database at all, just some text that is long enough\n".repeat(50)).unwrap();
        let err = Db::open(&path, MIGRATIONS).err().expect("a text file is not a database");
        assert_eq!(corrupt_database(&err), Some(path.display().to_string()), "{err:#}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn grouped_writes_commit_together_and_a_failing_write_rolls_back_alone() {
        let dir = std::env::temp_dir().join(format!("wixprint-db-{}", rand::random::<u64>()));
        let db = Db::open(&dir.join("t.db"), MIGRATIONS).unwrap();
        let mut handles = Vec::new();
        for i in 0..200i64 {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                db.write(move |c| {
                    c.execute("INSERT INTO t (x) VALUES (?1)", [i])?;
                    if i % 10 == 0 {
                        anyhow::bail!("write {i} refuses");
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut ok = 0;
        for h in handles {
            if h.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 180);
        let n: i64 = db.call(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 180, "failed writes must leave nothing behind");
        let odd: i64 =
            db.call(|c| Ok(c.query_row("SELECT count(*) FROM t WHERE x % 10 = 0", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(odd, 0);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn refuses_a_database_from_a_newer_binary() {
        let dir = std::env::temp_dir().join(format!("wixprint-db-{}", rand::random::<u64>()));
        let path = dir.join("t.db");
        drop(Db::open(&path, MIGRATIONS).unwrap());
        let err = Db::open(&path, &MIGRATIONS[..1]).err().unwrap();
        assert!(format!("{err:#}").contains("newer"));
        std::fs::remove_dir_all(dir).ok();
    }
}
