//! Failing loudly. A panic anywhere (the SQLite writer thread, a dispatcher, the outbox, the
//! sync, the bus), a database file that vanished or was replaced, a corrupt database: the
//! process must not limp on answering 503 while health says SERVING. [`trigger`] records the
//! first fatal condition; health turns NOT_SERVING (each service watches [`wait`]), the
//! shutdown token is cancelled so in-flight work drains, and `cli::main` exits with the
//! condition's code so systemd restarts the service (and an operator can tell why).
//!
//! Must never: be used for errors a caller can handle (a failed write is a 503, not a fatal).

use std::sync::OnceLock;

use tokio::sync::watch;

/// A panic or another internal error (`EX_SOFTWARE`).
pub const EXIT_SOFTWARE: i32 = 70;
/// The database is corrupt or not a database (`EX_DATAERR`): restarting will not help.
pub const EXIT_CORRUPT: i32 = 65;
/// The database file was deleted or replaced while the service ran (`EX_IOERR`).
pub const EXIT_DB_LOST: i32 = 74;
/// A controlled self-restart asked for by the health monitor (`EX_TEMPFAIL`): a critical check
/// did not clear despite healing; the unit restarts on it (`RestartForceExitStatus=75`).
pub const EXIT_RESTART: i32 = 75;

/// Why the process is going down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub code: i32,
    pub reason: String,
}

/// Where a fatal condition is recorded; the process has one ([`trigger`], [`current`], [`wait`]).
pub struct Alarm {
    state: watch::Sender<Option<Fatal>>,
}

impl Default for Alarm {
    fn default() -> Self {
        Self { state: watch::Sender::new(None) }
    }
}

impl Alarm {
    /// Records a fatal condition; the first one wins. True when this one was the first.
    pub fn trigger(&self, code: i32, reason: impl Into<String>) -> bool {
        let reason = reason.into();
        self.state.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(Fatal { code, reason });
            true
        })
    }

    pub fn current(&self) -> Option<Fatal> {
        self.state.borrow().clone()
    }

    pub async fn wait(&self) -> Fatal {
        let mut rx = self.state.subscribe();
        loop {
            if let Some(f) = rx.borrow_and_update().clone() {
                return f;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

fn alarm() -> &'static Alarm {
    static ALARM: OnceLock<Alarm> = OnceLock::new();
    ALARM.get_or_init(Alarm::default)
}

/// Records a fatal condition for the process; the first one wins (its code is the exit code).
pub fn trigger(code: i32, reason: impl Into<String>) {
    let reason = reason.into();
    if alarm().trigger(code, reason.clone()) {
        tracing::error!(exit_code = code, %reason, "fatal: the service stops so that it can be restarted");
    }
}

/// The process's fatal condition, if one was triggered.
pub fn current() -> Option<Fatal> {
    alarm().current()
}

/// Resolves once a fatal condition is triggered in the process.
pub async fn wait() -> Fatal {
    alarm().wait().await
}

/// Every panic, in any thread or task, becomes fatal (after the default hook printed it).
/// Binaries only: tests keep their own panics.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        trigger(EXIT_SOFTWARE, format!("panic in thread {thread}{at}: {message}"));
    }));
}

/// Test hooks for provoking faults in the real binaries (`WIXPRINT_FAILPOINTS`, a
/// comma-separated list of names). Read once; empty in production, where nothing sets it.
pub fn failpoint(name: &str) -> bool {
    static POINTS: OnceLock<Vec<String>> = OnceLock::new();
    POINTS
        .get_or_init(|| {
            std::env::var("WIXPRINT_FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .iter()
        .any(|p| p == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_fatal_condition_wins_and_wakes_the_waiters() {
        let alarm = std::sync::Arc::new(Alarm::default());
        let waiter = tokio::spawn({
            let alarm = alarm.clone();
            async move { alarm.wait().await }
        });
        assert_eq!(alarm.current(), None);
        assert!(alarm.trigger(EXIT_DB_LOST, "print.db was deleted"));
        assert!(!alarm.trigger(EXIT_SOFTWARE, "a later panic"));
        let f = waiter.await.unwrap();
        assert_eq!((f.code, f.reason.as_str()), (EXIT_DB_LOST, "print.db was deleted"));
        assert_eq!(alarm.current(), Some(f));
    }
}
