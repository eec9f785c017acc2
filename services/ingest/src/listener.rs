//! The webhook listener's accept loop: HTTP/1 connections served by hyper with limits, so slow
//! and idle clients are shed instead of starving Wix.
//!
//! - **Connection cap** ([`Limits::max_connections`], below `RLIMIT_NOFILE`): at the cap a new
//!   connection evicts the oldest one that has no request in progress (reading headers or idle
//!   in keep-alive); if every connection is busy with a request, the new one is refused (closed).
//!   A fresh connection is the newest, so a trickling crowd cannot keep Wix out.
//! - **Header read timeout**: a connection that has not completed its first request head in
//!   [`Limits::header_timeout`] is closed (hyper's own `header_read_timeout` as well).
//! - **Idle keep-alive timeout**: a connection with no request in progress for
//!   [`Limits::idle_timeout`] after its last response is closed.
//! - Bodies are bounded in `webhook.rs` (body timeout → 408, global in-flight budget → 503);
//!   hyper's read buffer per connection is capped at [`READ_BUF_MAX`].
//!
//! Shutdown: no new connections; idle ones close at once, one with a request in progress
//! finishes it (the handler commits before answering).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest hyper read buffer per connection (request head plus buffered body bytes).
pub const READ_BUF_MAX: usize = 16 * 1024;

/// Descriptors kept free for everything else (SQLite, gRPC, bus, internet probes).
pub const FD_RESERVE: u64 = 128;

/// Derived connection cap never above this (memory on a Raspberry Pi).
pub const MAX_DERIVED_CONNECTIONS: u64 = 1024;

/// The listener's limits (`INGEST_HTTP_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Bytes of webhook bodies held in memory at once, across all requests.
    pub body_budget_bytes: usize,
}

/// The connection cap derived from the soft descriptor limit: `soft − FD_RESERVE`, at most
/// [`MAX_DERIVED_CONNECTIONS`]; `None` when the limit leaves no room.
pub fn derived_max_connections(nofile_soft: u64) -> Option<usize> {
    let room = nofile_soft.checked_sub(FD_RESERVE).filter(|&n| n >= 8)?;
    usize::try_from(room.min(MAX_DERIVED_CONNECTIONS)).ok()
}

/// What the accept loop knows of one connection.
struct Conn {
    /// Requests in progress on it (0 or 1 for HTTP/1 without pipelining).
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// By id: ascending id is ascending age, so the first idle entry is the oldest.
    conns: BTreeMap<u64, Conn>,
    evicted: u64,
    refused: u64,
    last_report: Option<Instant>,
}

impl Registry {
    /// Makes room for one more connection: `Some(id)` once admitted (evicting the oldest
    /// connection without a request in progress when at `cap`), `None` when all are busy.
    fn admit(&mut self, cap: usize) -> Option<(u64, Arc<AtomicUsize>, CancellationToken)> {
        if self.conns.len() >= cap {
            let victim = self.conns.iter().find(|(_, c)| c.busy.load(Ordering::Acquire) == 0).map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    if let Some(c) = self.conns.remove(&id) {
                        c.close.cancel();
                    }
                    self.evicted += 1;
                }
                None => {
                    self.refused += 1;
                    return None;
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let conn = Conn { busy: Arc::default(), close: CancellationToken::new() };
        let handles = (id, conn.busy.clone(), conn.close.clone());
        self.conns.insert(id, conn);
        Some(handles)
    }

    /// At most one warning every 10 s about shed connections (an attack must not flood logs).
    fn report(&mut self, cap: usize) {
        let now = Instant::now();
        if self.evicted + self.refused == 0 || self.last_report.is_some_and(|t| now < t + Duration::from_secs(10)) {
            return;
        }
        tracing::warn!(
            cap,
            open = self.conns.len(),
            evicted_idle = self.evicted,
            refused = self.refused,
            "webhook listener at its connection cap: shedding idle and slow clients"
        );
        self.last_report = Some(now);
        self.evicted = 0;
        self.refused = 0;
    }
}

fn lock(r: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves `app` on `listener` with `limits` until `shutdown`; returns after every connection
/// has closed.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: CancellationToken) {
    let registry = Arc::new(Mutex::new(Registry::default()));
    let conns = TaskTracker::new();
    let mut accept_errors_reported: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE/ENFILE/ECONNABORTED: pause briefly instead of spinning.
                    if accept_errors_reported.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "webhook listener: accept failed");
                        accept_errors_reported = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let admitted = {
            let mut reg = lock(&registry);
            let admitted = reg.admit(limits.max_connections);
            reg.report(limits.max_connections);
            admitted
        };
        let Some((id, busy, close)) = admitted else {
            drop(stream);
            continue;
        };
        let (app, limits, shutdown, registry) = (app.clone(), limits.clone(), shutdown.clone(), registry.clone());
        conns.spawn(async move {
            serve_connection(stream, app, &limits, busy, close, shutdown).await;
            lock(&registry).conns.remove(&id);
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// Marks a request in progress for as long as it lives; remembers when the last one ended.
struct BusyGuard {
    busy: Arc<AtomicUsize>,
    last_done: Arc<Mutex<Instant>>,
}

impl BusyGuard {
    fn new(busy: Arc<AtomicUsize>, last_done: Arc<Mutex<Instant>>, served: &AtomicBool) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        served.store(true, Ordering::Release);
        Self { busy, last_done }
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.last_done.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: &Limits,
    busy: Arc<AtomicUsize>,
    close: CancellationToken,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let last_done = Arc::new(Mutex::new(Instant::now()));
    let served = Arc::new(AtomicBool::new(false));
    let svc = {
        let (busy, last_done, served) = (busy.clone(), last_done.clone(), served.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = BusyGuard::new(busy.clone(), last_done.clone(), &served);
            let mut app = app.clone();
            async move {
                let resp = tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await;
                drop(guard);
                resp
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(READ_BUF_MAX);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        // No request in progress: the connection may stay this long after it opened (headers)
        // or after its last response (keep-alive).
        let quiet_since = *last_done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let allowed = if served.load(Ordering::Acquire) { limits.idle_timeout } else { limits.header_timeout };
        let is_busy = busy.load(Ordering::Acquire) > 0;
        let deadline = if is_busy { Instant::now() + limits.idle_timeout } else { quiet_since + allowed };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "webhook connection ended with an error");
                }
                return;
            }
            // Evicted at the cap: dropping the connection closes the socket.
            _ = close.cancelled() => return,
            _ = shutdown.cancelled(), if !draining => {
                if busy.load(Ordering::Acquire) == 0 {
                    return;
                }
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                let still_quiet = busy.load(Ordering::Acquire) == 0
                    && *last_done.lock().unwrap_or_else(std::sync::PoisonError::into_inner) == quiet_since;
                if still_quiet && !is_busy {
                    tracing::debug!(idle_ms = allowed.as_millis() as u64, "closing a quiet webhook connection");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_descriptor_limit() {
        assert_eq!(derived_max_connections(1024), Some(896));
        assert_eq!(derived_max_connections(65_536), Some(1024));
        assert_eq!(derived_max_connections(130), None);
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_goes_and_busy_ones_stay() {
        let mut reg = Registry::default();
        let (a, busy_a, close_a) = reg.admit(2).unwrap();
        let (b, _busy_b, close_b) = reg.admit(2).unwrap();
        busy_a.store(1, Ordering::Release);
        let (c, busy_c, _) = reg.admit(2).expect("b is idle: evicted");
        assert!(close_b.is_cancelled() && !close_a.is_cancelled());
        assert_eq!(reg.conns.keys().copied().collect::<Vec<_>>(), vec![a, c]);
        busy_c.store(1, Ordering::Release);
        assert!(reg.admit(2).is_none(), "every connection has a request in progress: refused");
        assert_eq!(reg.conns.len(), 2);
        let _ = b;
    }
}
