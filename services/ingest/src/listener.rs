//! The webhook listener's accept loop: HTTP/1 connections served by hyper with limits, so slow
//! and idle clients are shed instead of starving Wix.
//!
//! - **Connection cap** ([`Limits::max_connections`], below `RLIMIT_NOFILE`): at the cap a new
//!   connection evicts the oldest one that has no request in progress (reading headers or idle
//!   in keep-alive), else the one whose request started longest ago if that was more than
//!   [`STALE_REQUEST`] ago (Wix itself gives up after 1.25 s: such a request is a slow body, or
//!   one Wix no longer waits for; nothing is stored before its body is complete, and a commit already queued
//!   still completes, deduplicated on Wix's retry); otherwise the new one is refused (closed).
//!   A fresh connection is the newest, so a crowd of slow clients cannot keep Wix out.
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

/// A request in progress for longer than this may be evicted at the connection cap: Wix
/// gives up on a webhook after 1.25 s, so no one is waiting for its answer any more.
pub const STALE_REQUEST: Duration = Duration::from_millis(1250);

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

/// What a connection is doing, shared by its task, its requests and the accept loop.
struct Activity {
    /// Requests in progress (0 or 1 for HTTP/1 without pipelining).
    busy: AtomicUsize,
    /// When the request in progress started.
    request_since: Mutex<Option<Instant>>,
    /// When the connection opened or its last request ended.
    quiet_since: Mutex<Instant>,
    /// A request was seen: `idle_timeout` applies from now on, not `header_timeout`.
    served: AtomicBool,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Activity {
    fn new() -> Self {
        Self {
            busy: AtomicUsize::new(0),
            request_since: Mutex::new(None),
            quiet_since: Mutex::new(Instant::now()),
            served: AtomicBool::new(false),
        }
    }

    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) > 0
    }

    fn begin(&self) {
        *locked(&self.request_since) = Some(Instant::now());
        self.served.store(true, Ordering::Release);
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        let now = Instant::now();
        *locked(&self.quiet_since) = now;
        *locked(&self.request_since) = None;
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the accept loop knows of one connection.
struct Conn {
    activity: Arc<Activity>,
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
    fn admit(&mut self, cap: usize) -> Option<(u64, Arc<Activity>, CancellationToken)> {
        if self.conns.len() >= cap {
            let now = Instant::now();
            let idle = self.conns.iter().find(|(_, c)| !c.activity.is_busy()).map(|(id, _)| *id);
            let stale = || {
                self.conns
                    .iter()
                    .filter_map(|(id, c)| {
                        let since = (*locked(&c.activity.request_since))?;
                        (now.saturating_duration_since(since) >= STALE_REQUEST).then_some((since, *id))
                    })
                    .min()
                    .map(|(_, id)| id)
            };
            let victim = idle.or_else(stale);
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
        let conn = Conn { activity: Arc::new(Activity::new()), close: CancellationToken::new() };
        let handles = (id, conn.activity.clone(), conn.close.clone());
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

/// The kernel's queue of connections not yet accepted. Rust's (and mio's) default is 128:
/// under a crowd of slow clients, Wix's connection would then wait in the SYN queue for the
/// server's retransmitted SYN-ACK (1 s, then 3 s) instead of being accepted, and the accept
/// loop could not see the crowd it has to shed. Capped by `net.core.somaxconn`.
const BACKLOG: u32 = 1024;

/// Binds the webhook listener with a [`BACKLOG`]-deep accept queue.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
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
        let Some((id, activity, close)) = admitted else {
            drop(stream);
            continue;
        };
        let (app, limits, shutdown, registry) = (app.clone(), limits.clone(), shutdown.clone(), registry.clone());
        conns.spawn(async move {
            serve_connection(stream, app, &limits, activity, close, shutdown).await;
            lock(&registry).conns.remove(&id);
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// Marks a request in progress for as long as it lives.
struct BusyGuard(Arc<Activity>);

impl BusyGuard {
    fn new(activity: Arc<Activity>) -> Self {
        activity.begin();
        Self(activity)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: &Limits,
    activity: Arc<Activity>,
    close: CancellationToken,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = BusyGuard::new(activity.clone());
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
        let quiet_since = *locked(&activity.quiet_since);
        let allowed = if activity.served.load(Ordering::Acquire) { limits.idle_timeout } else { limits.header_timeout };
        let is_busy = activity.is_busy();
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
                if !activity.is_busy() {
                    return;
                }
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline) => {
                let still_quiet = !activity.is_busy() && *locked(&activity.quiet_since) == quiet_since;
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
    fn at_the_cap_the_oldest_idle_connection_goes_then_the_stalest_request_then_none() {
        let mut reg = Registry::default();
        let (a, act_a, close_a) = reg.admit(2).unwrap();
        let (_b, _act_b, close_b) = reg.admit(2).unwrap();
        act_a.begin();
        let (c, act_c, close_c) = reg.admit(2).expect("b is idle: evicted");
        assert!(close_b.is_cancelled() && !close_a.is_cancelled());
        assert_eq!(reg.conns.keys().copied().collect::<Vec<_>>(), vec![a, c]);
        act_c.begin();
        assert!(reg.admit(2).is_none(), "every request is younger than STALE_REQUEST: refused");
        assert_eq!(reg.conns.len(), 2);
        // a's request started longer ago than STALE_REQUEST.
        let long_ago = Instant::now().checked_sub(STALE_REQUEST * 2).expect("uptime");
        *locked(&act_a.request_since) = Some(long_ago);
        let (d, _, _) = reg.admit(2).expect("a's request is the stalest: evicted");
        assert!(close_a.is_cancelled() && !close_c.is_cancelled());
        assert_eq!(reg.conns.keys().copied().collect::<Vec<_>>(), vec![c, d]);
        act_c.end();
        assert!(!act_c.is_busy());
    }
}
