//! A small ZMTP 3.0 PUB/SUB (NULL mechanism) with hard limits, for the connectivity bus.
//!
//! Why our own: the `zeromq` 0.7 codec allocates whatever frame length a peer announces (a
//! 73-byte greeting + frame header asking for 2^40 bytes aborts the process), keeps every
//! subscription any peer sends and has no connection cap. libzmq (`zmq` crate) can bound
//! frames but needs a C++ build in the static aarch64 image. What the bus needs is tiny: one
//! PUB that fans two-frame messages out, one SUB that connects to one peer. See ARCHITECTURE.md.
//!
//! Limits ([`Limits`]): every frame is checked against a maximum before a byte of it is
//! allocated; a message has at most a few frames; a subscriber may hold a few short
//! subscriptions and send a few frames a second; there is a total and a per-peer connection
//! cap; the handshake has a deadline; a subscriber that does not read is dropped after a write
//! timeout, and what is queued for it is a bounded broadcast (old messages dropped). Any
//! violation closes that one connection; nothing a peer sends can panic, block another
//! connection, or allocate more than `max_frame` at a time.
//!
//! Interoperates with libzmq and `zeromq` peers: greeting 3.0, NULL mechanism, READY with
//! Socket-Type, subscriptions both as 3.0 messages (`\x01topic`) and 3.1 SUBSCRIBE/CANCEL
//! commands, PING answered with PONG.
//!
//! Transports: `tcp://host:port` and `ipc:///path` (a Unix socket; a stale socket file is
//! removed before bind, the file is made 0660, and removed when the publisher stops).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Hard limits of the bus transport. The defaults fit two services exchanging a few hundred
/// bytes a second.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted; a larger announced length closes the connection before any
    /// allocation.
    pub max_frame: usize,
    /// Most frames in one message.
    pub max_frames: usize,
    /// Most subscriptions one subscriber may hold.
    pub max_subscriptions: usize,
    /// Longest subscription prefix.
    pub max_subscription_len: usize,
    /// Most frames a subscriber may send per second (subscriptions, pings).
    pub max_frames_per_sec: u32,
    /// Most subscriber connections at once.
    pub max_connections: usize,
    /// Most subscriber connections at once from one IP address (all Unix-socket peers count
    /// as one).
    pub max_per_peer: usize,
    /// Greeting and READY must complete within this.
    pub handshake_timeout: Duration,
    /// A subscriber that does not take a message within this is dropped.
    pub write_timeout: Duration,
    /// Messages queued per subscriber; older ones are dropped when it falls behind.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: 64 * 1024,
            max_frames: 4,
            max_subscriptions: 8,
            max_subscription_len: 256,
            max_frames_per_sec: 50,
            max_connections: 32,
            max_per_peer: 8,
            handshake_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            queue: 16,
        }
    }
}

/// Where a bus socket binds or connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port`
    Tcp(String),
    Ipc(PathBuf),
}

impl Endpoint {
    pub fn parse(addr: &str) -> std::result::Result<Endpoint, String> {
        if let Some(rest) = addr.strip_prefix("tcp://") {
            let (host, port) =
                rest.rsplit_once(':').ok_or_else(|| format!("{addr:?} has no port (tcp://host:port)"))?;
            if host.is_empty() || host.contains('/') {
                return Err(format!("{addr:?} has no host (tcp://host:port)"));
            }
            port.parse::<u16>().map_err(|_| format!("{addr:?}: {port:?} is not a port"))?;
            Ok(Endpoint::Tcp(rest.to_owned()))
        } else if let Some(path) = addr.strip_prefix("ipc://") {
            if !path.starts_with('/') {
                return Err(format!("{addr:?}: an ipc endpoint needs an absolute path (ipc:///run/…)"));
            }
            if path.len() > 100 {
                return Err(format!("{addr:?}: the socket path is longer than a Unix socket allows"));
            }
            Ok(Endpoint::Ipc(PathBuf::from(path)))
        } else {
            Err(format!("{addr:?} must look like ipc:///path or tcp://host:port"))
        }
    }

    /// The TCP port, if this is a TCP endpoint with a numeric port.
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Tcp(hp) => hp.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
            Endpoint::Ipc(_) => None,
        }
    }

    /// Reachable only from this host: a Unix socket, or TCP on a loopback address/localhost.
    pub fn is_local(&self) -> bool {
        match self {
            Endpoint::Ipc(_) => true,
            Endpoint::Tcp(hp) => {
                let host = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(hp) => write!(f, "tcp://{hp}"),
            Endpoint::Ipc(p) => write!(f, "ipc://{}", p.display()),
        }
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("protocol: {0}")]
    Protocol(&'static str),
    #[error("limit: {0}")]
    Limit(&'static str),
}

type Result<T> = std::result::Result<T, ZmtpError>;

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

struct Frame {
    more: bool,
    command: bool,
    body: Vec<u8>,
}

/// Reads one frame, refusing (before allocating) a body longer than `max`.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Frame> {
    let flags = r.read_u8().await?;
    if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
        return Err(ZmtpError::Protocol("reserved flag bits set"));
    }
    let len = if flags & FLAG_LONG != 0 { r.read_u64().await? } else { u64::from(r.read_u8().await?) };
    if len > max as u64 {
        return Err(ZmtpError::Limit("frame longer than the maximum"));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    let command = flags & FLAG_COMMAND != 0;
    let more = flags & FLAG_MORE != 0;
    if command && more {
        return Err(ZmtpError::Protocol("a command with the MORE flag"));
    }
    Ok(Frame { more, command, body })
}

fn encode_frame(out: &mut Vec<u8>, body: &[u8], more: bool, command: bool) {
    let mut flags = if more { FLAG_MORE } else { 0 } | if command { FLAG_COMMAND } else { 0 };
    if body.len() > 255 {
        flags |= FLAG_LONG;
        out.push(flags);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(body.len() as u8);
    }
    out.extend_from_slice(body);
}

fn command(name: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(1 + name.len() + data.len());
    body.push(name.len() as u8);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    let mut out = Vec::new();
    encode_frame(&mut out, &body, false, true);
    out
}

fn ready(socket_type: &str) -> Vec<u8> {
    let mut props = Vec::new();
    props.push(11u8);
    props.extend_from_slice(b"Socket-Type");
    props.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    props.extend_from_slice(socket_type.as_bytes());
    command("READY", &props)
}

/// Splits a command body into its name and data.
fn parse_command(body: &[u8]) -> Result<(&[u8], &[u8])> {
    let (&n, rest) = body.split_first().ok_or(ZmtpError::Protocol("empty command"))?;
    if rest.len() < n as usize {
        return Err(ZmtpError::Protocol("command name longer than the frame"));
    }
    Ok(rest.split_at(n as usize))
}

/// The Socket-Type property of a READY command's metadata.
fn socket_type(mut props: &[u8]) -> Result<&[u8]> {
    while let Some((&n, rest)) = props.split_first() {
        let n = n as usize;
        if rest.len() < n + 4 {
            return Err(ZmtpError::Protocol("truncated READY property"));
        }
        let (name, rest) = rest.split_at(n);
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let rest = &rest[4..];
        if rest.len() < len {
            return Err(ZmtpError::Protocol("truncated READY property value"));
        }
        let (value, rest) = rest.split_at(len);
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            return Ok(value);
        }
        props = rest;
    }
    Err(ZmtpError::Protocol("READY without Socket-Type"))
}

/// Greeting and READY exchange; `accept` lists the peer socket types we talk to.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    ours: &str,
    accept: &[&[u8]],
    max_frame: usize,
) -> Result<()> {
    s.write_all(&greeting()).await?;
    let mut peer = [0u8; 64];
    s.read_exact(&mut peer).await?;
    if peer[0] != 0xff || peer[9] != 0x7f {
        return Err(ZmtpError::Protocol("not a ZMTP greeting"));
    }
    if peer[10] < 3 {
        return Err(ZmtpError::Protocol("ZMTP older than 3.0"));
    }
    if &peer[12..16] != b"NULL" || peer[16..32].iter().any(|&b| b != 0) {
        return Err(ZmtpError::Protocol("security mechanism other than NULL"));
    }
    s.write_all(&ready(ours)).await?;
    let frame = read_frame(s, max_frame.min(4096)).await?;
    if !frame.command {
        return Err(ZmtpError::Protocol("expected READY"));
    }
    let (name, data) = parse_command(&frame.body)?;
    if name != b"READY" {
        return Err(ZmtpError::Protocol("expected READY"));
    }
    let theirs = socket_type(data)?;
    if !accept.iter().any(|a| theirs.eq_ignore_ascii_case(a)) {
        return Err(ZmtpError::Protocol("incompatible socket type"));
    }
    Ok(())
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

// ---------------------------------------------------------------------------------------------
// Publisher

/// What a publisher has seen, for tests and status.
#[derive(Debug, Default)]
pub struct PubCounters {
    /// Connections turned away by the total or per-peer cap.
    pub refused: AtomicU64,
    /// Connections closed for a protocol error or a broken limit.
    pub dropped: AtomicU64,
    /// Subscribers that completed the handshake.
    pub subscribers: AtomicU64,
}

/// A bound PUB socket: [`Publisher::send`] fans a message out to every subscriber whose
/// subscription is a prefix of the first frame. Never blocks: a subscriber that falls behind
/// loses messages.
pub struct Publisher {
    tx: broadcast::Sender<Arc<Vec<Bytes>>>,
    local: String,
    stop: CancellationToken,
    tasks: TaskTracker,
    counters: Arc<PubCounters>,
    subscribed: Arc<Notify>,
}

enum Listener {
    Tcp(TcpListener),
    Ipc(UnixListener, PathBuf),
}

impl Publisher {
    /// Binds `endpoint`; for ipc, removes a stale socket file first and makes the new one 0660.
    pub async fn bind(endpoint: &Endpoint, limits: Limits) -> std::io::Result<Publisher> {
        let (listener, local) = match endpoint {
            Endpoint::Tcp(hp) => {
                let host = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
                let l = if host == "*" {
                    TcpListener::bind(("0.0.0.0", endpoint.port().unwrap_or(0))).await?
                } else {
                    TcpListener::bind(hp.as_str()).await?
                };
                let local = format!("tcp://{}", l.local_addr()?);
                (Listener::Tcp(l), local)
            }
            Endpoint::Ipc(path) => {
                use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if meta.file_type().is_socket() {
                        // Left by a process that was killed: nobody listens on it any more.
                        if std::os::unix::net::UnixStream::connect(path).is_ok() {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::AddrInUse,
                                format!("{} is in use by another process", path.display()),
                            ));
                        }
                        std::fs::remove_file(path)?;
                    } else {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                }
                if let Some(parent) = path.parent().filter(|p| !p.exists()) {
                    // Outside systemd (which creates RuntimeDirectory=): a private directory.
                    std::fs::create_dir_all(parent)?;
                    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o770))?;
                }
                let l = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                (Listener::Ipc(l, path.clone()), endpoint.to_string())
            }
        };
        let (tx, _) = broadcast::channel(limits.queue.max(1));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let counters = Arc::new(PubCounters::default());
        let subscribed = Arc::new(Notify::new());
        let shared = Shared { limits, tx: tx.clone(), counters: counters.clone(), subscribed: subscribed.clone() };
        tasks.spawn(accept_loop(listener, shared, stop.clone(), tasks.clone()));
        Ok(Publisher { tx, local, stop, tasks, counters, subscribed })
    }

    /// The bound endpoint with the port resolved.
    pub fn local_addr(&self) -> &str {
        &self.local
    }

    /// Queues `frames` for every matching subscriber; returns how many subscribers exist.
    pub fn send(&self, frames: Vec<Bytes>) -> usize {
        self.tx.send(Arc::new(frames)).unwrap_or(0)
    }

    pub fn counters(&self) -> &PubCounters {
        &self.counters
    }

    /// Notified (one permit) whenever a subscriber adds a subscription.
    pub fn subscribed(&self) -> Arc<Notify> {
        self.subscribed.clone()
    }

    /// Stops accepting, closes every subscriber and (ipc) removes the socket file.
    pub async fn close(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Shared {
    limits: Limits,
    tx: broadcast::Sender<Arc<Vec<Bytes>>>,
    counters: Arc<PubCounters>,
    subscribed: Arc<Notify>,
}

async fn accept_loop(listener: Listener, shared: Shared, stop: CancellationToken, tasks: TaskTracker) {
    let Shared { limits, counters, .. } = shared.clone();
    let total = Arc::new(AtomicUsize::new(0));
    let per_peer: Arc<Mutex<HashMap<Option<IpAddr>, usize>>> = Arc::default();
    loop {
        let accepted: std::io::Result<(Box<dyn Stream>, Option<IpAddr>)> = tokio::select! {
            _ = stop.cancelled() => break,
            r = async {
                match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(s, a)| {
                        let _ = s.set_nodelay(true);
                        (Box::new(s) as Box<dyn Stream>, Some(a.ip()))
                    }),
                    Listener::Ipc(l, _) => l.accept().await.map(|(s, _)| (Box::new(s) as Box<dyn Stream>, None)),
                }
            } => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: pause so a full descriptor table cannot spin the loop.
                tracing::debug!(error = %e, "connectivity bus: accept failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let admitted = {
            let mut map = per_peer.lock().unwrap_or_else(|p| p.into_inner());
            let mine = map.entry(peer).or_insert(0);
            if total.load(Ordering::Relaxed) >= limits.max_connections || *mine >= limits.max_per_peer {
                false
            } else {
                *mine += 1;
                total.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        if !admitted {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let (shared, rx, stop) = (shared.clone(), shared.tx.subscribe(), stop.child_token());
        let (total, per_peer) = (total.clone(), per_peer.clone());
        tasks.spawn(async move {
            if let Err(e) = serve_subscriber(stream, &shared, rx, stop).await {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(error = %e, "connectivity bus: subscriber connection closed");
            }
            total.fetch_sub(1, Ordering::Relaxed);
            let mut map = per_peer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&peer);
                }
            }
        });
    }
    if let Listener::Ipc(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

type Subscriptions = Arc<Mutex<Vec<Vec<u8>>>>;

async fn serve_subscriber(
    mut stream: Box<dyn Stream>,
    shared: &Shared,
    mut rx: broadcast::Receiver<Arc<Vec<Bytes>>>,
    stop: CancellationToken,
) -> Result<()> {
    let limits = &shared.limits;
    tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        r = tokio::time::timeout(limits.handshake_timeout, handshake(&mut stream, "PUB", &[b"SUB", b"XSUB"], limits.max_frame)) => {
            r.map_err(|_| ZmtpError::Timeout)??;
        }
    }
    shared.counters.subscribers.fetch_add(1, Ordering::Relaxed);
    let (read, mut write) = tokio::io::split(stream);
    let subs: Subscriptions = Arc::default();
    let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let reader = read_subscriptions(BufReader::with_capacity(4096, read), shared, subs.clone(), pong_tx);
    tokio::pin!(reader);
    let mut out = Vec::new();
    // A subscriber subscribes right after READY; one that does not only holds a slot.
    let subscribe_by = Instant::now() + limits.handshake_timeout;
    let mut subscribed = false;
    loop {
        let frames = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            r = &mut reader => return r,
            _ = tokio::time::sleep_until(subscribe_by), if !subscribed => {
                if subs.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                    return Err(ZmtpError::Limit("no subscription after the handshake"));
                }
                subscribed = true;
                continue;
            }
            pong = pong_rx.recv() => match pong {
                Some(p) => {
                    tokio::time::timeout(limits.write_timeout, write.write_all(&p)).await.map_err(|_| ZmtpError::Timeout)??;
                    continue;
                }
                None => continue,
            },
            m = rx.recv() => match m {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        };
        let matches = {
            let first = frames.first().map_or(&[][..], |f| &f[..]);
            subs.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|s| first.starts_with(s))
        };
        if !matches {
            continue;
        }
        out.clear();
        for (i, f) in frames.iter().enumerate() {
            encode_frame(&mut out, f, i + 1 < frames.len(), false);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = tokio::time::timeout(limits.write_timeout, write.write_all(&out)) => {
                r.map_err(|_| ZmtpError::Timeout)??;
            }
        }
    }
}

async fn read_subscriptions<R: AsyncRead + Unpin>(
    mut r: R,
    shared: &Shared,
    subs: Subscriptions,
    pong: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<()> {
    let limits = &shared.limits;
    let mut window = Instant::now();
    let mut in_window = 0u32;
    // Data messages are ignored, but a multi-frame one is read to its end.
    let mut in_message = false;
    loop {
        // A subscription frame is 1 byte + the prefix; a 3.1 SUBSCRIBE is 10 bytes + prefix.
        let frame = read_frame(&mut r, (limits.max_subscription_len + 16).max(64)).await?;
        let now = Instant::now();
        if now.duration_since(window) >= Duration::from_secs(1) {
            window = now;
            in_window = 0;
        }
        in_window += 1;
        if in_window > limits.max_frames_per_sec {
            return Err(ZmtpError::Limit("too many frames per second from a subscriber"));
        }
        let (subscribe, topic): (bool, &[u8]) = if frame.command {
            let (name, data) = parse_command(&frame.body)?;
            match name {
                b"SUBSCRIBE" => (true, data),
                b"CANCEL" => (false, data),
                b"PING" => {
                    // PING: 2-byte TTL then up to 16 bytes of context, echoed in PONG.
                    let context = data.get(2..).unwrap_or(&[]);
                    let context = &context[..context.len().min(16)];
                    let _ = pong.try_send(command("PONG", context));
                    continue;
                }
                _ => continue,
            }
        } else {
            let starts = !in_message;
            in_message = frame.more;
            if !starts {
                continue;
            }
            match frame.body.split_first() {
                Some((1, topic)) if !frame.more => (true, topic),
                Some((0, topic)) if !frame.more => (false, topic),
                _ => continue,
            }
        };
        if topic.len() > limits.max_subscription_len {
            return Err(ZmtpError::Limit("subscription too long"));
        }
        let mut subs = subs.lock().unwrap_or_else(|p| p.into_inner());
        if subscribe {
            if !subs.iter().any(|s| s == topic) {
                if subs.len() >= limits.max_subscriptions {
                    return Err(ZmtpError::Limit("too many subscriptions"));
                }
                subs.push(topic.to_vec());
                shared.subscribed.notify_one();
            }
        } else {
            subs.retain(|s| s != topic);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriber

/// One connected SUB socket: connect, handshake, subscribe, then [`Subscriber::recv`].
pub struct Subscriber {
    stream: BufReader<Box<dyn Stream>>,
    limits: Limits,
}

impl Subscriber {
    /// Connects to `endpoint` and subscribes to `topic`; gives up after `timeout`.
    pub async fn connect(endpoint: &Endpoint, topic: &[u8], limits: Limits, timeout: Duration) -> Result<Subscriber> {
        tokio::time::timeout(timeout, async {
            let mut stream: Box<dyn Stream> = match endpoint {
                Endpoint::Tcp(hp) => {
                    let s = TcpStream::connect(hp.as_str()).await?;
                    let _ = s.set_nodelay(true);
                    Box::new(s)
                }
                Endpoint::Ipc(p) => Box::new(UnixStream::connect(p).await?),
            };
            handshake(&mut stream, "SUB", &[b"PUB", b"XPUB"], limits.max_frame).await?;
            let mut body = Vec::with_capacity(topic.len() + 1);
            body.push(1);
            body.extend_from_slice(topic);
            let mut out = Vec::new();
            encode_frame(&mut out, &body, false, false);
            stream.write_all(&out).await?;
            Ok(Subscriber { stream: BufReader::with_capacity(8192, stream), limits: limits.clone() })
        })
        .await
        .map_err(|_| ZmtpError::Timeout)?
    }

    /// The next message: at most `max_frames` frames of at most `max_frame` bytes each.
    /// Cancel-safe only between messages; drop the subscriber after cancelling it.
    pub async fn recv(&mut self) -> Result<Vec<Bytes>> {
        let mut frames = Vec::new();
        loop {
            let frame = read_frame(&mut self.stream, self.limits.max_frame).await?;
            if frame.command {
                if !frames.is_empty() {
                    return Err(ZmtpError::Protocol("a command inside a message"));
                }
                let (name, data) = parse_command(&frame.body)?;
                if name == b"PING" {
                    let context = data.get(2..).unwrap_or(&[]);
                    let pong = command("PONG", &context[..context.len().min(16)]);
                    self.stream.get_mut().write_all(&pong).await?;
                }
                continue;
            }
            if frames.len() >= self.limits.max_frames {
                return Err(ZmtpError::Limit("too many frames in a message"));
            }
            frames.push(Bytes::from(frame.body));
            if !frame.more {
                return Ok(frames);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::parse("tcp://127.0.0.1:5561").unwrap(), Endpoint::Tcp("127.0.0.1:5561".into()));
        assert!(Endpoint::parse("tcp://127.0.0.1:5561").unwrap().is_local());
        assert!(Endpoint::parse("tcp://localhost:1").unwrap().is_local());
        assert!(Endpoint::parse("tcp://[::1]:1").unwrap().is_local());
        assert!(!Endpoint::parse("tcp://0.0.0.0:1").unwrap().is_local());
        assert!(!Endpoint::parse("tcp://10.0.0.2:1").unwrap().is_local());
        assert!(Endpoint::parse("ipc:///run/x/bus.sock").unwrap().is_local());
        assert!(Endpoint::parse("ipc://relative").is_err());
        assert!(Endpoint::parse("127.0.0.1:1").is_err());
        assert!(Endpoint::parse("tcp://127.0.0.1:x").is_err());
    }

    #[tokio::test]
    async fn an_oversized_frame_header_is_refused_before_allocating() {
        let mut bytes = vec![FLAG_LONG];
        bytes.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut r = &bytes[..];
        assert!(matches!(read_frame(&mut r, 65536).await, Err(ZmtpError::Limit(_))));
    }

    #[tokio::test]
    async fn pub_and_sub_over_ipc_and_tcp() {
        let dir = tempfile::tempdir().unwrap();
        for ep in [Endpoint::Ipc(dir.path().join("bus.sock")), Endpoint::Tcp("127.0.0.1:0".into())] {
            let p = Publisher::bind(&ep, Limits::default()).await.unwrap();
            let at = Endpoint::parse(p.local_addr()).unwrap();
            if let Endpoint::Ipc(path) = &at {
                use std::os::unix::fs::PermissionsExt as _;
                assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o660);
            }
            let mut s = Subscriber::connect(&at, b"t", Limits::default(), Duration::from_secs(2)).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    p.send(vec![Bytes::from_static(b"x"), Bytes::from_static(b"no")]);
                    p.send(vec![Bytes::from_static(b"topic"), Bytes::from(vec![7u8; 300])]);
                    if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(50), s.recv()).await {
                        return m;
                    }
                }
            })
            .await
            .unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(&got[0][..], b"topic");
            assert_eq!(got[1].len(), 300);
            p.close().await;
            if let Endpoint::Ipc(path) = &at {
                assert!(!path.exists(), "the socket file is removed on close");
            }
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_never_subscribes_is_dropped_and_the_cap_holds() {
        let limits = Limits { handshake_timeout: Duration::from_millis(300), max_per_peer: 2, ..Limits::default() };
        let p = Publisher::bind(&Endpoint::Tcp("127.0.0.1:0".into()), limits).await.unwrap();
        let addr = p.local_addr().trim_start_matches("tcp://").to_owned();
        let handshaken = || async {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(&greeting()).await.unwrap();
            s.write_all(&ready("SUB")).await.unwrap();
            let mut g = [0u8; 64];
            s.read_exact(&mut g).await.unwrap();
            s
        };
        let (mut a, _b) = (handshaken().await, handshaken().await);
        // A third connection from the same address is over the per-peer cap: closed at once.
        let mut c = TcpStream::connect(&addr).await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await.unwrap().unwrap_or(0), 0);
        // The idle ones are closed after the deadline (READY is read, then EOF).
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), a.read_to_end(&mut rest)).await.unwrap().ok();
        assert!(p.counters().dropped.load(Ordering::Relaxed) >= 1);
        assert_eq!(p.counters().refused.load(Ordering::Relaxed), 1);
    }
}
