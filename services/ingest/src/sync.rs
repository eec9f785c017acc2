//! The order sync: the safety net under the webhooks. Searches Wix for approved and
//! cancelled orders updated since the watermark (minus a safety margin), page by page in
//! ascending `updatedDate`, and stores what it finds through the same upsert + outbox path as
//! a webhook, so the two sources never double-print.
//!
//! Runs at start-up, every interval, on `SyncNow`, and when the internet comes back (see
//! `reactions`). Every failed Wix call has a failure class ([`classify`]):
//! - **waiting** (Wix unreachable before anything was sent, or any transport failure while the
//!   internet monitor says offline): the run ends with state `waiting`; no try is used and the
//!   `wix-api` breaker is not touched. The next run (interval, `SyncNow`, the internet coming
//!   back) tries again.
//! - **transient** (5xx, 429, connection lost or timed out mid-request, a malformed answer):
//!   counted by the breaker and retried on the same page with the Wix retry backoff
//!   (`INGEST_WIX_RETRY_*`: 0.5 s × 1.5 up to 60 s ± 20 %), at most `tries` (3) per run; a
//!   429's `Retry-After` is honoured (longer than the backoff's maximum: no call before it,
//!   even on `SyncNow`). Then the run ends (`backing_off`); the next one continues from the
//!   watermark, which is saved after every page already stored.
//! - **permanent** (401/403: the key; any other 4xx): the run stops with state `error` and the
//!   reason, and waits ten intervals (or `SyncNow`) instead of hammering Wix with a request it
//!   refuses. The breaker is not touched: the peer is not sick. An order the search returns
//!   that cannot be mapped (invalid data) is skipped with a warning, never retried.
//!
//! While the `wix-api` breaker is open the sync makes no request: the run ends at once with
//! state `breaker_open` and "breaker open until …"; the first call after the window is the
//! probe, the next good calls close it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use wixprint_shared::backoff::Backoff;
use wixprint_shared::breaker::{Admission, Breaker};
use wixprint_shared::connectivity::STATE_OFFLINE;
use wixprint_shared::failure::FailureClass;
use wixprint_shared::proto::events::Component;
use wixprint_shared::proto::ingest::SyncStatus;
use wixprint_shared::time::{ms_from_timestamp, now_ms, opt_timestamp};

use crate::store::{Recorded, Store};
use crate::wix::map_order;
use crate::wix_api::{ApiError, SearchPage, SearchQuery, WixApi};

/// Settings of the sync loop.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub interval: Duration,
    /// Searched window reaches this far behind the watermark (late writes, clock skew).
    pub margin: Duration,
    /// How far back the very first run looks.
    pub lookback: Duration,
    /// Delays between tries of a call that failed transiently.
    pub retry: Backoff,
    /// Tries of one call per run (the first included).
    pub tries: u32,
    /// After Wix refused the key (or the request): wait this long (or for SyncNow) before
    /// trying again.
    pub auth_pause: Duration,
}

/// The class of a failed Wix call for the sync: the error's own class
/// ([`ApiError::class`]), except that while the internet monitor says offline a transport
/// failure of any kind (reset, timeout, refused) is waiting: it is no evidence against Wix.
pub fn classify(error: &ApiError, internet_offline: bool) -> FailureClass {
    match error {
        ApiError::Transport(_) | ApiError::Unreachable(_) if internet_offline => FailureClass::Waiting,
        _ => error.class(),
    }
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
    /// The `wix-api` circuit breaker.
    breaker: Arc<Breaker>,
    /// The internet monitor's confirmed state (`None`: not watched, never offline).
    internet: Option<watch::Receiver<Component>>,
    /// Wix asked (`Retry-After`) for no call before this.
    not_before: Option<Instant>,
    status: Arc<Mutex<SyncStatus>>,
    trigger: Arc<Notify>,
    runs: watch::Sender<(u64, SyncStatus)>,
}

enum RunEnd {
    Done,
    /// Wix refused the key or the request: a long pause.
    Refused,
    /// No call may be made for this long (breaker open, `Retry-After`).
    Later(Duration),
    Shutdown,
}

impl OrderSync {
    pub fn new(
        api: WixApi,
        store: Store,
        outbox_wake: Arc<Notify>,
        settings: SyncSettings,
        breaker: Arc<Breaker>,
        internet: Option<watch::Receiver<Component>>,
    ) -> (Self, SyncHandle) {
        let status = Arc::new(Mutex::new(SyncStatus { state: "idle".into(), ..Default::default() }));
        let trigger = Arc::new(Notify::new());
        let (runs_tx, runs_rx) = watch::channel((0, SyncStatus::default()));
        let handle = SyncHandle { status: status.clone(), trigger: trigger.clone(), runs: runs_rx };
        let sync = Self {
            api,
            store,
            outbox_wake,
            settings,
            breaker,
            internet,
            not_before: None,
            status,
            trigger,
            runs: runs_tx,
        };
        (sync, handle)
    }

    fn update(&self, f: impl FnOnce(&mut SyncStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn set_state(&self, state: &str, detail: String) {
        self.update(|s| {
            s.state = state.into();
            s.detail = detail;
        });
    }

    fn internet_offline(&self) -> bool {
        self.internet.as_ref().is_some_and(|rx| rx.borrow().state == STATE_OFFLINE)
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let end = self.run_once(&shutdown).await;
            if !matches!(end, RunEnd::Shutdown) {
                let state = self.status.lock().unwrap_or_else(|e| e.into_inner()).state.clone();
                let result = match state.as_str() {
                    "idle" => "ok".to_owned(),
                    other => other.to_owned(),
                };
                crate::metrics::get().sync_runs.add(1, &[opentelemetry::KeyValue::new("result", result)]);
            }
            let wait = match end {
                RunEnd::Shutdown => return,
                RunEnd::Done => self.settings.interval,
                RunEnd::Refused => self.settings.auth_pause,
                RunEnd::Later(left) => left.clamp(Duration::from_millis(1), self.settings.interval),
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

    async fn run_once(&mut self, shutdown: &CancellationToken) -> RunEnd {
        self.update(|s| {
            s.runs += 1;
            s.last_attempt = opt_timestamp(Some(now_ms()));
        });
        if let Some(at) = self.not_before {
            let now = Instant::now();
            if at > now {
                self.set_state("backing_off", format!("Wix asked (Retry-After) for no call before {}", wall(at - now)));
                return RunEnd::Later(at - now);
            }
            self.not_before = None;
        }
        let watermark = match self.store.sync_watermark().await {
            Ok(w) => w,
            Err(e) => {
                self.set_state("error", format!("reading the watermark: {e:#}"));
                return RunEnd::Done;
            }
        };
        let since = match watermark {
            Some(w) => w - self.settings.margin.as_millis() as i64,
            None => now_ms() - self.settings.lookback.as_millis() as i64,
        };
        let query = SearchQuery::approved_or_canceled_since(since);
        self.set_state("running", String::new());
        let mut cursor: Option<String> = None;
        let mut newest = watermark;
        loop {
            let page = match self.search_page(&query, cursor.as_deref(), shutdown).await {
                Ok(page) => page,
                Err(end) => {
                    // Pages come in ascending updatedDate: what is stored so far is a sound
                    // watermark for the next run to continue from.
                    if newest > watermark {
                        match self.store.set_sync_watermark(newest).await {
                            Ok(()) => self.update(|s| s.watermark = newest.and_then(|w| opt_timestamp(Some(w)))),
                            Err(e) => tracing::error!(error = format!("{e:#}"), "saving the sync watermark failed"),
                        }
                    }
                    return end;
                }
            };
            self.update(|s| {
                s.state = "running".into();
                s.pages += 1;
                s.orders_seen += page.orders.len() as u64;
            });
            crate::metrics::get().sync_pages.add(1, &[]);
            for json in &page.orders {
                let order = match map_order(json) {
                    Ok(o) => o,
                    Err(e) => {
                        // Invalid data is permanent: retrying would map it the same way.
                        tracing::warn!(error = %e, class = FailureClass::Permanent.as_str(),
                            "order from the search could not be mapped; skipped");
                        sync_order("invalid");
                        continue;
                    }
                };
                let updated = order.updated_at.as_ref().map(ms_from_timestamp);
                match self.store.record_synced_order(order).await {
                    Ok(Recorded::Applied { order_id, version }) => {
                        tracing::info!(%order_id, version, "order sync found a new order version");
                        self.update(|s| s.orders_applied += 1);
                        self.outbox_wake.notify_one();
                        sync_order("applied");
                    }
                    Ok(_) => sync_order("known"),
                    Err(e) => {
                        // Not advancing the watermark past an order we could not store.
                        self.set_state("error", format!("storing a synced order: {e:#}"));
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
            self.set_state("error", format!("saving the watermark: {e:#}"));
            return RunEnd::Done;
        }
        self.update(|s| {
            s.state = "idle".into();
            s.detail.clear();
            s.last_success = opt_timestamp(Some(now_ms()));
            s.watermark = newest.and_then(|w| opt_timestamp(Some(w)));
        });
        RunEnd::Done
    }

    /// One search page through the breaker, retrying transient failures up to `tries` times.
    async fn search_page(
        &mut self,
        query: &SearchQuery,
        cursor: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Result<SearchPage, RunEnd> {
        let mut tries = 0u32;
        loop {
            let probe = match self.breaker.admit() {
                Admission::Go => false,
                Admission::Probe => true,
                Admission::Wait(left) => {
                    let reason = self.breaker.snapshot().reason;
                    self.set_state("breaker_open", format!("breaker open until {}: {reason}", wall(left)));
                    tracing::debug!(left_ms = left.as_millis() as u64, "wix-api breaker open; no search this run");
                    return Err(RunEnd::Later(left));
                }
            };
            tries += 1;
            let result = tokio::select! {
                r = self.api.search_orders(query, cursor) => r,
                _ = shutdown.cancelled() => return Err(RunEnd::Shutdown),
            };
            let error = match result {
                Ok(page) => {
                    if probe {
                        self.breaker.probe_ok();
                    } else {
                        self.breaker.success();
                    }
                    return Ok(page);
                }
                Err(e) => e,
            };
            if matches!(error, ApiError::RateLimited { .. }) {
                crate::metrics::get().sync_rate_limited.add(1, &[]);
            }
            let offline = self.internet_offline();
            let class = classify(&error, offline);
            match class {
                FailureClass::Permanent => {
                    let detail = match &error {
                        ApiError::Auth { status, message } => {
                            format!("Wix refused the API key or site id (HTTP {status}): {message}")
                        }
                        other => format!("Wix refused the search: {other}"),
                    };
                    tracing::error!(%detail, class = class.as_str(),
                        "order sync stopped until the cause is fixed or SyncNow is called");
                    self.set_state("error", detail);
                    return Err(RunEnd::Refused);
                }
                FailureClass::Waiting => {
                    let why = if offline { "the internet is offline" } else { "nothing was sent" };
                    let detail = format!(
                        "waiting ({why}): {error}; the next run is when the internet is back, on SyncNow or in {} s",
                        self.settings.interval.as_secs()
                    );
                    tracing::info!(error = %error, class = class.as_str(), why, "order search waits for Wix");
                    self.set_state("waiting", detail);
                    return Err(RunEnd::Done);
                }
                FailureClass::Transient => {
                    self.breaker.failure(error.to_string());
                    let delay = error.retry_after().unwrap_or_else(|| self.settings.retry.delay(tries));
                    if delay > self.settings.retry.max() {
                        self.not_before = Some(Instant::now() + delay);
                        let detail = format!("transient: {error}; no call before {}", wall(delay));
                        tracing::warn!(%detail, "order search paused as Wix asked");
                        self.set_state("backing_off", detail);
                        return Err(RunEnd::Later(delay));
                    }
                    if tries >= self.settings.tries {
                        let detail = format!("transient: {error}; {tries} tries, the next run continues");
                        tracing::warn!(error = %error, class = class.as_str(), tries,
                            "order search failed; the next run continues from the watermark");
                        self.set_state("backing_off", detail);
                        return Err(RunEnd::Done);
                    }
                    tracing::warn!(error = %error, class = class.as_str(), tries,
                        retry_in_ms = delay.as_millis() as u64, "order search failed; retrying the same page");
                    self.set_state(
                        "backing_off",
                        format!(
                            "transient: {error}; try {tries} of {}, retrying in {} ms",
                            self.settings.tries,
                            delay.as_millis()
                        ),
                    );
                    // A lost connection is what an outage looks like: a trigger (SyncNow, the
                    // internet coming back) retries at once. Wix's own answers keep their wait.
                    let lost = matches!(error, ApiError::Transport(_) | ApiError::Unreachable(_));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.trigger.notified(), if lost => tracing::info!("retrying the order search now"),
                        _ = shutdown.cancelled() => return Err(RunEnd::Shutdown),
                    }
                }
            }
        }
    }
}

/// Counts one order the search returned (`wixprint.ingest.sync.orders`).
fn sync_order(result: &'static str) {
    crate::metrics::get().sync_orders.add(1, &[opentelemetry::KeyValue::new("result", result)]);
}

/// The wall-clock time `left` from now, RFC 3339 (for status lines).
fn wall(left: Duration) -> String {
    let ms = now_ms().saturating_add(i64::try_from(left.as_millis()).unwrap_or(i64::MAX / 2));
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| format!("{} ms from now", left.as_millis()), |t| t.to_string())
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
            retry: Backoff::exponential(hour, 1.5, hour, 0.0).unwrap(),
            tries: 3,
            auth_pause: hour,
        };
        let breaker = Arc::new(Breaker::standalone("wix-api", wixprint_shared::breaker::BreakerConfig::WIX_API));
        let (sync, handle) = OrderSync::new(api, store, Arc::new(Notify::new()), settings, breaker.clone(), None);
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
        // A connection lost mid-request is transient: the breaker counts both tries (the second
        // fails a moment after the fake accepted it).
        tokio::time::timeout(Duration::from_secs(5), async {
            while breaker.snapshot().consecutive_failures < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the breaker counted both transient failures within 5 s");
        token.cancel();
        assert!(!SyncHandle::off("off").trigger(), "a sync that is off is not triggered");
    }

    #[test]
    fn offline_makes_every_transport_failure_waiting_and_nothing_else() {
        let s = || String::from("x");
        let cases = [
            (ApiError::Unreachable(s()), FailureClass::Waiting, FailureClass::Waiting),
            (ApiError::Transport(s()), FailureClass::Transient, FailureClass::Waiting),
            (ApiError::Server { status: 503, message: s() }, FailureClass::Transient, FailureClass::Transient),
            (ApiError::RateLimited { retry_after: None }, FailureClass::Transient, FailureClass::Transient),
            (ApiError::Auth { status: 401, message: s() }, FailureClass::Permanent, FailureClass::Permanent),
            (ApiError::Request { status: 400, message: s() }, FailureClass::Permanent, FailureClass::Permanent),
        ];
        for (error, online, offline) in cases {
            assert_eq!(classify(&error, false), online, "{error:?} online");
            assert_eq!(classify(&error, true), offline, "{error:?} offline");
        }
    }
}
