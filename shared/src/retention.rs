//! How long the services keep what they stored (an SD card is small and a restaurant's
//! customers' names, phones and addresses should not live forever). Each service prunes its
//! own tables ([`run`]: at start, then hourly), in small batches so a webhook or a ticket never
//! waits long behind a prune, and gives the freed pages back (`Db::reclaim`).
//!
//! Must never: prune what is still to be done (an undelivered outbox row, a waiting ticket) or
//! shorten replay protection below Wix's retry period (~47 h): the minimum is [`MIN_DAYS`].

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Source};

/// The shortest retention allowed: longer than Wix's ~47 h of webhook retries, so an event id
/// is remembered as long as Wix may send it again.
pub const MIN_DAYS: u32 = 3;

/// Rows deleted per transaction.
pub const BATCH: usize = 500;

/// How often a service prunes (and once at start).
pub const EVERY: Duration = Duration::from_secs(3600);

/// A retention in days from config key `name`, at least [`MIN_DAYS`].
pub fn days(src: &Source, name: &str, default: u32) -> Result<Duration, ConfigError> {
    let days: u32 = src.parse(name, default)?;
    if days < MIN_DAYS {
        return Err(
            src.invalid(name, format!("must be at least {MIN_DAYS} days (Wix retries a webhook for about 47 hours)"))
        );
    }
    Ok(Duration::from_secs(u64::from(days) * 86_400))
}

/// A store the retention prunes: `prune` deletes what was received before the cutoff (and
/// says what), `reclaim` gives the freed pages back (the database's size in bytes).
pub trait Prunable: Clone + Send + Sync + 'static {
    type Pruned: std::fmt::Debug + Default + PartialEq + Send;
    fn prune(&self, cutoff_ms: i64) -> impl Future<Output = anyhow::Result<Self::Pruned>> + Send;
    fn reclaim(&self) -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// Prunes `store` at start and every [`EVERY`] until shutdown, keeping `retention`.
pub async fn run<S: Prunable>(shutdown: CancellationToken, store: S, retention: Duration) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A long prune or reclaim never holds up a shutdown: each batch is its own write, so
        // stopping between two loses nothing (the next run goes on).
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = prune_once(&store, retention) => {}
        }
    }
}

/// Prunes `store` now (the health monitor on disk pressure): what was pruned and the
/// database's size after the reclaim.
pub async fn prune_now<S: Prunable>(store: &S, retention: Duration) -> anyhow::Result<String> {
    let cutoff = crate::time::now_ms().saturating_sub(crate::time::duration_ms(retention));
    let pruned = store.prune(cutoff).await?;
    let size = store.reclaim().await?;
    Ok(format!("{pruned:?}; database {size} bytes"))
}

async fn prune_once<S: Prunable>(store: &S, retention: Duration) {
    let cutoff = crate::time::now_ms().saturating_sub(crate::time::duration_ms(retention));
    match store.prune(cutoff).await {
        Ok(p) if p == S::Pruned::default() => {}
        Ok(p) => {
            let size = store.reclaim().await.unwrap_or(0);
            tracing::info!(pruned = ?p, db_bytes = size, "retention: pruned old rows");
        }
        Err(e) => tracing::warn!(error = format!("{e:#}"), "retention: pruning failed; retried next hour"),
    }
}
