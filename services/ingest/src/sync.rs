//! The order sync: the safety net under the webhooks. Searches Wix for approved and
//! cancelled orders updated since the watermark (minus a safety margin), page by page in
//! ascending `updatedDate`, and stores what it finds through the same upsert + outbox path as
//! a webhook, so the two sources never double-print.
//!
//! Runs at start-up, every interval, on `SyncNow`, and when the internet comes back (see
//! `reactions`). Rate limits and server errors back off
//! and retry the same page (nothing is skipped); an auth error stops the run and shows the
//! reason in `GetStatus` instead of hammering Wix with a key it refuses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use wixprint_shared::backoff::Backoff;
use wixprint_shared::proto::ingest::SyncStatus;
use wixprint_shared::time::{ms_from_timestamp, now_ms, opt_timestamp};

use crate::store::{Recorded, Store};
use crate::wix::map_order;
use crate::wix_api::{ApiError, SearchQuery, WixApi};

/// Settings of the sync loop.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub interval: Duration,
    /// Searched window reaches this far behind the watermark (late writes, clock skew).
    pub margin: Duration,
    /// How far back the very first run looks.
    pub lookback: Duration,
    pub backoff: Backoff,
    /// After Wix refused the key: wait this long (or for SyncNow) before trying again.
    pub auth_pause: Duration,
}

/// Shared view of the sync for the admin API, and the SyncNow trigger.
#[derive(Clone)]
pub struct SyncHandle {
    status: Arc<Mutex<SyncStatus>>,
    trigger: Arc<Notify>,
    /// Completed runs and the status each ended with (what SyncNow answers).
    runs: watch::Receiver<(u64, SyncStatus)>,
}

impl SyncHandle {
    /// A handle for a sync that is switched off, saying why.
    pub fn off(reason: &str) -> Self {
        let status = SyncStatus { state: "off".into(), detail: reason.into(), ..Default::default() };
        let (_tx, runs) = watch::channel((0, status.clone()));
        Self { status: Arc::new(Mutex::new(status)), trigger: Arc::new(Notify::new()), runs }
    }

    pub fn status(&self) -> SyncStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks for a run now without waiting for it; a run under way is followed by one more.
    /// Returns false (and does nothing) when the sync is off.
    pub fn trigger(&self) -> bool {
        if self.status().state == "off" {
            return false;
        }
        self.trigger.notify_one();
        true
    }

    /// Starts a run now and waits (up to `timeout`) until one has finished; answers with the
    /// status that run ended with (the live status while it is still running).
    pub async fn sync_now(&self, timeout: Duration) -> SyncStatus {
        if self.status().state == "off" {
            return self.status();
        }
        let mut runs = self.runs.clone();
        let seen = runs.borrow_and_update().0;
        self.trigger.notify_one();
        match tokio::time::timeout(timeout, runs.wait_for(|(n, _)| *n > seen)).await {
            Ok(Ok(done)) => done.1.clone(),
            _ => self.status(),
        }
    }
}

pub struct OrderSync {
    pub api: WixApi,
    pub store: Store,
    pub outbox_wake: Arc<Notify>,
    pub settings: SyncSettings,
    status: Arc<Mutex<SyncStatus>>,
    trigger: Arc<Notify>,
    runs: watch::Sender<(u64, SyncStatus)>,
}

enum RunEnd {
    Done,
    AuthRefused,
    Shutdown,
}

impl OrderSync {
    pub fn new(api: WixApi, store: Store, outbox_wake: Arc<Notify>, settings: SyncSettings) -> (Self, SyncHandle) {
        let status = Arc::new(Mutex::new(SyncStatus { state: "idle".into(), ..Default::default() }));
        let trigger = Arc::new(Notify::new());
        let (runs_tx, runs_rx) = watch::channel((0, SyncStatus::default()));
        let handle = SyncHandle { status: status.clone(), trigger: trigger.clone(), runs: runs_rx };
        (Self { api, store, outbox_wake, settings, status, trigger, runs: runs_tx }, handle)
    }

    fn update(&self, f: impl FnOnce(&mut SyncStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let wait = match self.run_once(&shutdown).await {
                RunEnd::Shutdown => return,
                RunEnd::Done => self.settings.interval,
                RunEnd::AuthRefused => self.settings.auth_pause,
            };
            let ended = self.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.runs.send_modify(|(n, st)| {
                *n += 1;
                *st = ended;
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.trigger.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn run_once(&self, shutdown: &CancellationToken) -> RunEnd {
        let watermark = match self.store.sync_watermark().await {
            Ok(w) => w,
            Err(e) => {
                self.update(|s| {
                    s.state = "error".into();
                    s.detail = format!("reading the watermark: {e:#}");
                });
                return RunEnd::Done;
            }
        };
        let since = match watermark {
            Some(w) => w - self.settings.margin.as_millis() as i64,
            None => now_ms() - self.settings.lookback.as_millis() as i64,
        };
        let query = SearchQuery::approved_or_canceled_since(since);
        self.update(|s| {
            s.state = "running".into();
            s.detail.clear();
            s.runs += 1;
            s.last_attempt = opt_timestamp(Some(now_ms()));
        });
        let mut cursor: Option<String> = None;
        let mut newest = watermark;
        let mut failures = 0u32;
        loop {
            let page = tokio::select! {
                r = self.api.search_orders(&query, cursor.as_deref()) => r,
                _ = shutdown.cancelled() => return RunEnd::Shutdown,
            };
            let page = match page {
                Ok(p) => {
                    failures = 0;
                    p
                }
                Err(ApiError::Auth { status, message }) => {
                    let detail = format!("Wix refused the API key or site id (HTTP {status}): {message}");
                    tracing::error!(%detail, "order sync stopped until the key is fixed or SyncNow is called");
                    self.update(|s| {
                        s.state = "error".into();
                        s.detail = detail;
                    });
                    return RunEnd::AuthRefused;
                }
                Err(e) => {
                    failures += 1;
                    let delay = e.retry_after().unwrap_or_else(|| self.settings.backoff.delay(failures));
                    tracing::warn!(error = %e, failures, retry_in_ms = delay.as_millis() as u64, "order search failed; retrying the same page");
                    self.update(|s| {
                        s.state = "backing_off".into();
                        s.detail = e.to_string();
                    });
                    // Wix unreachable is what an outage looks like: a trigger (SyncNow, the
                    // internet coming back) retries the page at once. Wix's own answers (429,
                    // 5xx) keep their wait.
                    let unreachable = matches!(e, ApiError::Transport(_));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = self.trigger.notified(), if unreachable => {
                            tracing::info!("retrying the order search now");
                            continue;
                        }
                        _ = shutdown.cancelled() => return RunEnd::Shutdown,
                    }
                }
            };
            self.update(|s| {
                s.state = "running".into();
                s.pages += 1;
                s.orders_seen += page.orders.len() as u64;
            });
            for json in &page.orders {
                let order = match map_order(json) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(error = %e, "order from the search could not be mapped; skipped");
                        continue;
                    }
                };
                let updated = order.updated_at.as_ref().map(ms_from_timestamp);
                match self.store.record_synced_order(order).await {
                    Ok(Recorded::Applied { order_id, version }) => {
                        tracing::info!(%order_id, version, "order sync found a new order version");
                        self.update(|s| s.orders_applied += 1);
                        self.outbox_wake.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Not advancing the watermark past an order we could not store.
                        self.update(|s| {
                            s.state = "error".into();
                            s.detail = format!("storing a synced order: {e:#}");
                        });
                        return RunEnd::Done;
                    }
                }
                newest = newest.max(updated);
            }
            if !page.has_next {
                break;
            }
            cursor = page.next_cursor;
        }
        if let Err(e) = self.store.set_sync_watermark(newest).await {
            self.update(|s| {
                s.state = "error".into();
                s.detail = format!("saving the watermark: {e:#}");
            });
            return RunEnd::Done;
        }
        self.update(|s| {
            s.state = "idle".into();
            s.last_success = opt_timestamp(Some(now_ms()));
            s.watermark = newest.and_then(|w| opt_timestamp(Some(w)));
        });
        RunEnd::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trigger_cuts_the_backoff_short_while_wix_is_unreachable() {
        // "Wix" accepts and hangs up at once: every search is a transport error.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let attempts = Arc::new(AtomicUsize::new(0));
        let (counted, accepted) = (attempts.clone(), Arc::new(Notify::new()));
        let on_accept = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
                counted.fetch_add(1, Ordering::SeqCst);
                on_accept.notify_one();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ingest.db"), Duration::from_secs(5)).unwrap();
        let api = WixApi::new(&url, crate::wix_api::ApiKey::new("key"), "site", Duration::from_secs(5)).unwrap();
        let hour = Duration::from_secs(3600);
        let settings = SyncSettings {
            interval: hour,
            margin: Duration::from_secs(300),
            lookback: hour,
            backoff: Backoff::new(hour, hour, 0.0).unwrap(),
            auth_pause: hour,
        };
        let (sync, handle) = OrderSync::new(api, store, Arc::new(Notify::new()), settings);
        let token = CancellationToken::new();
        tokio::spawn(sync.run(token.clone()));
        let within = |what: &'static str| {
            let accepted = accepted.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(5), accepted.notified())
                    .await
                    .unwrap_or_else(|_| panic!("{what} within 5 s"))
            }
        };
        within("the first search").await;
        // Only a retry can connect again now: the backoff is an hour. (A trigger that comes
        // before the run is waiting is kept as a permit, so there is nothing to wait for here.)
        assert!(handle.trigger());
        within("the retry after the trigger").await;
        assert!(attempts.load(Ordering::SeqCst) >= 2);
        token.cancel();
        assert!(!SyncHandle::off("off").trigger(), "a sync that is off is not triggered");
    }
}
