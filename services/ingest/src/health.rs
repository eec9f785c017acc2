//! wix-ingest's part of the health monitor (`wixprint_shared::health`): the outbox backlog and
//! the age of its oldest undelivered row; pruning on disk pressure. The connectivity bus heals
//! itself (its SUB socket is recreated after the peer went quiet, `shared::bus`), so it needs
//! no action here.
//!
//! Must never: count waiting as failing. A backlog while wix-print is down is waiting: both
//! checks only warn by default and never restart the service.

use std::time::Duration;

use wixprint_shared::health::{Action, Hooks, Level, Reading, Thresholds};

use crate::store::Store;

pub struct IngestHooks {
    pub store: Store,
    pub retention: Duration,
    pub outbox_backlog: Thresholds,
    pub outbox_age: Thresholds,
}

impl Hooks for IngestHooks {
    async fn readings(&self) -> Vec<Reading> {
        let counts = self.store.counts().await;
        let (backlog, age, detail) = match counts {
            Ok(c) => (
                Some(c.outbox_pending as f64),
                Some(
                    c.outbox_oldest_pending_ms
                        .map_or(0.0, |ms| (wixprint_shared::time::now_ms() - ms).max(0) as f64 / 1000.0),
                ),
                c.outbox_last_error.map_or(String::new(), |e| format!("last error: {e}")),
            ),
            Err(e) => (None, None, format!("outbox query failed: {e:#}")),
        };
        vec![
            Reading {
                name: "outbox_backlog".into(),
                unit: "rows",
                value: backlog,
                thresholds: self.outbox_backlog,
                detail: detail.clone(),
                restart: false,
            },
            Reading {
                name: "outbox_oldest_pending".into(),
                unit: "s",
                value: age,
                thresholds: self.outbox_age,
                detail,
                restart: false,
            },
        ]
    }

    async fn heal(&self, _check: &str, _level: Level) -> Option<Action> {
        None
    }

    async fn release_caches(&self) -> String {
        "no caches to release".into()
    }

    async fn prune(&self) -> anyhow::Result<String> {
        wixprint_shared::retention::prune_now(&self.store, self.retention).await
    }
}
