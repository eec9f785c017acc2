//! SQLite for both services: open with the durability pragmas, apply numbered migrations, and
//! run every statement on one dedicated writer thread.
//!
//! Why a thread: `rusqlite::Connection` blocks, and a single owner serialises writers, so no
//! transaction ever meets SQLITE_BUSY from our own process and no async worker ever blocks.
//! Callers send closures; each closure runs to completion (usually one transaction) before
//! the next starts.
//!
//! Durability: WAL with `synchronous=FULL`, so a commit that returned survives power loss.
//! That is what lets ingest answer Wix 200 right after a commit.

use std::path::Path;

use anyhow::Context;
use rusqlite::Connection;
use tokio::sync::oneshot;

type Task = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to a database owned by a writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    tx: std::sync::mpsc::Sender<Task>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and migrates it. `migrations[i]`
    /// brings the schema to `user_version = i + 1`; each runs in its own transaction.
    pub fn open(path: &Path, migrations: &'static [&'static str]) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating database directory {}", dir.display()))?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("opening database {}", path.display()))?;
        configure(&conn).with_context(|| format!("configuring database {}", path.display()))?;
        migrate(&mut conn, migrations)
            .with_context(|| format!("migrating database {}", path.display()))?;
        let (tx, rx) = std::sync::mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                while let Ok(task) = rx.recv() {
                    task(&mut conn);
                }
                // All handles dropped: close cleanly (checkpoints the WAL).
                drop(conn);
            })
            .context("spawning the sqlite writer thread")?;
        Ok(Self { tx })
    }

    /// Runs `f` on the writer thread and returns its result.
    pub async fn call<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |conn| {
                let _ = reply_tx.send(f(conn));
            }))
            .map_err(|_| anyhow::anyhow!("database writer thread has stopped"))?;
        reply_rx
            .await
            .map_err(|_| anyhow::anyhow!("database writer thread dropped the request"))?
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
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
        tx.execute_batch(sql)
            .with_context(|| format!("migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
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
        db.call(|c| Ok(c.execute("INSERT INTO t (x, y) VALUES (1, 'a')", [])?))
            .await
            .unwrap();
        drop(db);
        let db = Db::open(&path, MIGRATIONS).unwrap();
        let n: i64 = db
            .call(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 1);
        let mode: String = db
            .call(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(mode, "wal");
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
