//! The connectivity bus between wix-ingest and wix-print: broker-less ZeroMQ PUB/SUB on which
//! each service publishes its whole connectivity state and watches the other's.
//!
//! Owns: this service's PUB socket (bound at start; a bind error is a config problem and is
//! returned), the SUB socket connected to the peer's PUB, the heartbeat, and the view of the
//! peer ([`PeerStatus`]): "live" while its heartbeats arrive, "unknown" before the first one
//! and after `stale_after` without one.
//!
//! Every message is two frames, the topic [`TOPIC`] and a prost-encoded [`ConnectivityState`]:
//! the full current state with the source, a per-process instance id, a per-instance sequence
//! and a timestamp, re-sent every heartbeat. PUB/SUB drops messages (the first ~150 ms after a
//! connect, a restarting peer, a full queue), so nothing here depends on a message arriving:
//! the subscriber is level-triggered and the next heartbeat repairs any loss.
//!
//! The transport is [`crate::zmtp`], our own ZMTP 3.0 PUB/SUB with hard limits (frames of at
//! most 64 KiB, few subscriptions, capped connections): see ARCHITECTURE.md for why not the
//! `zeromq` crate or libzmq. On top of it this module:
//! - connects the subscriber in its own task, with a short timeout in a loop, so start-up
//!   never waits for the peer, and drops and recreates a SUB connection that has heard nothing
//!   for `stale_after` (a half-open connection is otherwise never noticed);
//! - re-sends the state shortly after a subscription arrives (a PUB drops what it sends
//!   before that), coalescing a burst of subscriptions into one re-send;
//! - rate-limits what the peer can cause: over 100 messages/s drops the connection, another
//!   instance replaces a live one at most every [`MIN_INSTANCE_CHANGE`] (replays of earlier
//!   instances and older timestamps are refused), watchers are notified at most every
//!   [`MIN_NOTIFY_INTERVAL`], `peer_arrived` at most every [`MIN_INSTANCE_CHANGE`], and every
//!   log line about what the peer sends is rate-limited;
//! - with a [`BusKey`] (`BUS_KEY_FILE`, required off loopback), signs every message with
//!   HMAC-SHA256 and drops messages without a valid MAC or more than [`MAX_CLOCK_SKEW`] from
//!   our clock.
//!
//! Must never: block start-up on the peer, panic on what arrives from the network, store
//! anything (the services record changes with [`crate::connectivity`]), or decide what the
//! peer's state means for printing or ingesting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::zmtp::{self, Endpoint, Limits};

use crate::proto::events::{Component, ConnectivityState, PeerStatus};
use crate::time::{now_ms, timestamp_from_ms};

/// First frame of every bus message, and the SUB socket's subscription.
pub const TOPIC: &str = "connectivity";
/// `PeerStatus.state` while the peer's heartbeats arrive.
pub const PEER_LIVE: &str = "live";
/// `PeerStatus.state` before the first heartbeat and after `stale_after` without one.
pub const PEER_UNKNOWN: &str = "unknown";
/// The socket file names of the default transport, in [`runtime_dir`].
pub const INGEST_SOCKET: &str = "ingest-bus.sock";
pub const PRINT_SOCKET: &str = "print-bus.sock";
/// Fourth frame of an authenticated message: HMAC-SHA256 over topic and payload.
const MAC_LEN: usize = 32;
/// With a key, a message whose timestamp is further than this from our clock is refused
/// (replay protection beyond the per-instance sequence).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// A different instance replaces a live peer at most this often (a forged "restarted" flood
/// becomes at most one arrival per interval).
pub const MIN_INSTANCE_CHANGE: Duration = Duration::from_secs(1);
/// Watchers are notified of peer changes at most this often (changes in between are merged).
pub const MIN_NOTIFY_INTERVAL: Duration = Duration::from_millis(100);
/// Instances remembered with their last sequence, so a replay of an older instance is refused.
const REMEMBERED_INSTANCES: usize = 16;

/// Where both services find the bus sockets by default: systemd's `$RUNTIME_DIRECTORY` (the
/// units share `RuntimeDirectory=wix-printer`), else `$XDG_RUNTIME_DIR/wix-printer`, else
/// `/run/wix-printer`.
pub fn runtime_dir() -> std::path::PathBuf {
    runtime_dir_from(|k| std::env::var(k).ok())
}

pub fn runtime_dir_from(env: impl Fn(&str) -> Option<String>) -> std::path::PathBuf {
    if let Some(dir) = env("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // Several directories are separated by ':'; the first is ours.
        return std::path::PathBuf::from(dir.split(':').next().unwrap_or(&dir));
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return std::path::Path::new(&dir).join("wix-printer");
    }
    std::path::PathBuf::from("/run/wix-printer")
}

/// `ipc://<runtime dir>/<file>`.
pub fn default_addr(env: impl Fn(&str) -> Option<String>, file: &str) -> String {
    format!("ipc://{}", runtime_dir_from(env).join(file).display())
}

/// The shared secret of a bus that leaves the host: every message carries an HMAC-SHA256 of
/// it, and a message without a valid one is dropped.
#[derive(Clone)]
pub struct BusKey(Arc<[u8]>);

impl BusKey {
    /// At least 16 bytes (surrounding whitespace of a key file is ignored).
    pub fn new(secret: &[u8]) -> anyhow::Result<BusKey> {
        let trimmed = secret.trim_ascii();
        if trimmed.len() < 16 {
            anyhow::bail!("the bus key must be at least 16 bytes");
        }
        Ok(BusKey(trimmed.into()))
    }

    fn mac(&self, topic: &[u8], payload: &[u8]) -> Vec<u8> {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        ctx.update(&(topic.len() as u64).to_be_bytes());
        ctx.update(topic);
        ctx.update(payload);
        ctx.sign().as_ref().to_vec()
    }

    fn verify(&self, topic: &[u8], payload: &[u8], tag: &[u8]) -> bool {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let mut data = Vec::with_capacity(8 + topic.len() + payload.len());
        data.extend_from_slice(&(topic.len() as u64).to_be_bytes());
        data.extend_from_slice(topic);
        data.extend_from_slice(payload);
        aws_lc_rs::hmac::verify(&key, &data, tag).is_ok()
    }
}

impl std::fmt::Debug for BusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BusKey(<secret>)")
    }
}
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_millis(3500);

/// Longest a single `SubSocket::connect` attempt may retry before the subscriber task starts
/// a new one (the crate's default is 30 s).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
/// Pause after a failed connect or receive, so an error that repeats at once cannot spin.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// When the state is re-sent after a subscription arrives (subscriptions arriving meanwhile
/// share the re-send, so a subscription flood cannot make us send more than this allows).
const RESEND_AFTER_SUBSCRIBE: Duration = Duration::from_millis(20);
/// Most messages a second taken from the peer (it sends one per heartbeat plus one per change):
/// a peer sending more is dropped for [`VIOLATION_PAUSE`], so a flood costs little CPU.
const MAX_MESSAGES_PER_SEC: u32 = 100;
/// Pause after the peer broke a protocol rule or limit, before connecting again.
const VIOLATION_PAUSE: Duration = Duration::from_millis(500);

/// What one service needs to join the bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// This service's name on the bus: "wix-ingest" / "wix-print".
    pub source: String,
    /// Where this service's PUB socket binds, e.g. `tcp://127.0.0.1:5561`.
    pub pub_addr: String,
    /// The peer's PUB socket, which our SUB socket connects to.
    pub peer_addr: String,
    /// How often the current state is re-sent.
    pub heartbeat: Duration,
    /// How long without a message from the peer before it is "unknown".
    pub stale_after: Duration,
    /// Required when either address is not on this host; then every message is authenticated.
    pub key: Option<BusKey>,
    /// Hard limits of the transport (frame size, subscriptions, connections).
    pub limits: Limits,
}

impl BusConfig {
    /// A config with the default heartbeat (1 s) and staleness (3.5 s).
    pub fn new(source: impl Into<String>, pub_addr: impl Into<String>, peer_addr: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            pub_addr: pub_addr.into(),
            peer_addr: peer_addr.into(),
            heartbeat: DEFAULT_HEARTBEAT,
            stale_after: DEFAULT_STALE_AFTER,
            key: None,
            limits: Limits::default(),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.source.is_empty() {
            anyhow::bail!("bus source name is empty");
        }
        if self.heartbeat.is_zero() {
            anyhow::bail!("bus heartbeat must be greater than zero");
        }
        if self.stale_after <= self.heartbeat {
            anyhow::bail!(
                "bus stale_after ({:?}) must be longer than the heartbeat ({:?}), or a live peer looks silent",
                self.stale_after,
                self.heartbeat
            );
        }
        if u32::try_from(self.heartbeat.as_millis()).is_err() {
            anyhow::bail!("bus heartbeat {:?} is too long", self.heartbeat);
        }
        if self.pub_addr == self.peer_addr {
            anyhow::bail!("bus pub_addr and peer_addr are both {}: the peer must be another service", self.pub_addr);
        }
        let peer = Endpoint::parse(&self.peer_addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("bus peer_addr {:?} is not a bus endpoint", self.peer_addr))?;
        let local = Endpoint::parse(&self.pub_addr)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("bus pub_addr {:?} is not a bus endpoint", self.pub_addr))?;
        if self.key.is_none() && !(peer.is_local() && local.is_local()) {
            anyhow::bail!(
                "a bus address leaves this host ({} / {}): a bus key (BUS_KEY_FILE) is required",
                self.pub_addr,
                self.peer_addr
            );
        }
        Ok(())
    }
}

/// The config key names of one service's bus settings (see [`config_from`]).
pub struct BusKeys {
    /// Where this service's PUB binds, e.g. "bus_pub_addr" (INGEST_PUB_ADDR).
    pub pub_addr: &'static str,
    /// The peer's PUB, e.g. "print_pub_addr" (PRINT_PUB_ADDR).
    pub peer_addr: &'static str,
    /// Socket file names of the default `ipc://` addresses in [`runtime_dir`].
    pub pub_socket: &'static str,
    pub peer_socket: &'static str,
}

/// Reads and checks the bus settings (config keys `bus_heartbeat_ms`, `bus_stale_ms` and
/// `bus_key_file` must be declared by the service, besides its two addresses): addresses (default `ipc://` sockets in the runtime
/// directory), heartbeat, staleness and key. A bus address that leaves the host without
/// `BUS_KEY_FILE` is refused (a config error: exit 78 naming the key).
pub fn config_from(
    src: &crate::config::Source,
    source: &str,
    keys: &BusKeys,
) -> Result<BusConfig, crate::config::ConfigError> {
    let env = |k: &str| std::env::var(k).ok();
    let pub_addr = src.string(keys.pub_addr, &default_addr(env, keys.pub_socket));
    let local = Endpoint::parse(&pub_addr).map_err(|e| src.invalid(keys.pub_addr, e))?;
    let peer_addr = src.string(keys.peer_addr, &default_addr(env, keys.peer_socket));
    let peer = Endpoint::parse(&peer_addr).map_err(|e| src.invalid(keys.peer_addr, e))?;
    if peer.port() == Some(0) {
        return Err(
            src.invalid(keys.peer_addr, format!("{peer_addr:?}: port 0 is only allowed where this service binds"))
        );
    }
    if pub_addr == peer_addr {
        return Err(src.invalid(keys.peer_addr, format!("is {peer_addr}, the same as this service's own bus address")));
    }
    let heartbeat = src.millis("bus_heartbeat_ms", DEFAULT_HEARTBEAT.as_millis() as u64)?;
    if heartbeat.is_zero() {
        return Err(src.invalid("bus_heartbeat_ms", "must be greater than zero"));
    }
    if u32::try_from(heartbeat.as_millis()).is_err() {
        return Err(src.invalid("bus_heartbeat_ms", "is too long"));
    }
    let stale_after = src.millis("bus_stale_ms", DEFAULT_STALE_AFTER.as_millis() as u64)?;
    if stale_after <= heartbeat {
        return Err(src.invalid(
            "bus_stale_ms",
            format!("must be longer than BUS_HEARTBEAT_MS ({} ms), or a live peer looks silent", heartbeat.as_millis()),
        ));
    }
    let key = match src.get("bus_key_file") {
        None => None,
        Some(file) => {
            let secret =
                std::fs::read(file).map_err(|e| src.invalid("bus_key_file", format!("cannot read {file}: {e}")))?;
            Some(BusKey::new(&secret).map_err(|e| src.invalid("bus_key_file", format!("{file}: {e}")))?)
        }
    };
    if key.is_none() && !(local.is_local() && peer.is_local()) {
        let outside = if local.is_local() { &peer_addr } else { &pub_addr };
        return Err(src.invalid(
            "bus_key_file",
            format!(
                "is required: the connectivity bus address {outside} is reachable from other hosts, so every \
                 message must be authenticated (a file with at least 16 random bytes, the same on both hosts)"
            ),
        ));
    }
    Ok(BusConfig { heartbeat, stale_after, key, ..BusConfig::new(source, pub_addr, peer_addr) })
}

/// What the bus has done, for status pages and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusCounters {
    /// Messages handed to the PUB socket (it drops them while nobody subscribes).
    pub sent: u64,
    /// Messages the SUB socket delivered, whatever they were.
    pub received: u64,
    /// Messages from the peer that updated its status.
    pub accepted: u64,
    /// Messages that were not a topic frame plus a valid `ConnectivityState`.
    pub undecodable: u64,
    /// Messages carrying our own source (peer_addr points back at ourselves?).
    pub own: u64,
    /// Messages with a sequence already seen for their instance (duplicates, reordering).
    pub out_of_order: u64,
    /// SUB sockets dropped and recreated because a connected peer went silent.
    pub resubscribes: u64,
    /// Messages without a valid MAC, or too old/new, on an authenticated bus.
    pub unauthenticated: u64,
    /// Messages of another instance refused while the current one is live (rate limit,
    /// replays of older instances, older timestamps).
    pub refused_instances: u64,
    /// Connections to the peer closed for breaking a protocol rule or limit.
    pub peer_violations: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    accepted: AtomicU64,
    undecodable: AtomicU64,
    own: AtomicU64,
    out_of_order: AtomicU64,
    resubscribes: AtomicU64,
    unauthenticated: AtomicU64,
    refused_instances: AtomicU64,
    peer_violations: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> BusCounters {
        BusCounters {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            undecodable: self.undecodable.load(Ordering::Relaxed),
            own: self.own.load(Ordering::Relaxed),
            out_of_order: self.out_of_order.load(Ordering::Relaxed),
            resubscribes: self.resubscribes.load(Ordering::Relaxed),
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            refused_instances: self.refused_instances.load(Ordering::Relaxed),
            peer_violations: self.peer_violations.load(Ordering::Relaxed),
        }
    }
}

/// A running bus. Cheap to clone; the tasks stop when the shutdown token is cancelled or the
/// last clone is dropped.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    instance: String,
    local_addr: String,
    local: watch::Sender<Vec<Component>>,
    peer: watch::Receiver<PeerStatus>,
    arrived: Arc<Notify>,
    counters: Arc<Counters>,
    tasks: TaskTracker,
}

impl Bus {
    /// Binds the PUB socket (a bind error is returned: it is a config/port problem), spawns
    /// the publisher and subscriber tasks, and returns at once: it never waits for the peer.
    /// Must be called inside a tokio runtime.
    pub async fn start(cfg: BusConfig, shutdown: CancellationToken) -> anyhow::Result<Bus> {
        cfg.validate()?;
        let endpoint = Endpoint::parse(&cfg.pub_addr).map_err(|e| anyhow::anyhow!("{e}"))?;
        let peer_endpoint = Endpoint::parse(&cfg.peer_addr).map_err(|e| anyhow::anyhow!("{e}"))?;
        let pub_socket = zmtp::Publisher::bind(&endpoint, cfg.limits.clone())
            .await
            .with_context(|| format!("binding the connectivity bus PUB socket on {}", cfg.pub_addr))?;
        let local_addr = pub_socket.local_addr().to_owned();
        let instance = format!("{:016x}", rand::random::<u64>());
        let (local_tx, local_rx) = watch::channel(Vec::new());
        let (peer_tx, peer_rx) = watch::channel(PeerStatus { state: PEER_UNKNOWN.into(), ..Default::default() });
        let arrived = Arc::new(Notify::new());
        let counters = Arc::new(Counters::default());
        // Either task ending (shutdown, or every Bus handle dropped) ends the other.
        let stop = shutdown.child_token();
        let tasks = TaskTracker::new();
        tasks.spawn(run_publisher(Publisher {
            socket: pub_socket,
            key: cfg.key.clone(),
            local: local_rx,
            source: cfg.source.clone(),
            instance: instance.clone(),
            heartbeat: cfg.heartbeat,
            counters: counters.clone(),
            stop: stop.clone(),
        }));
        tasks.spawn(run_subscriber(Subscriber {
            tracker: PeerTracker::new(cfg.source.clone(), cfg.stale_after, cfg.key.clone()),
            peer_addr: cfg.peer_addr.clone(),
            peer_endpoint,
            limits: cfg.limits.clone(),
            stale_after: cfg.stale_after,
            peer: peer_tx,
            arrived: arrived.clone(),
            counters: counters.clone(),
            stop,
        }));
        tasks.close();
        tracing::info!(
            source = %cfg.source, %instance, pub_addr = %local_addr, peer_addr = %cfg.peer_addr,
            "connectivity bus started"
        );
        Ok(Bus {
            inner: Arc::new(Inner {
                source: cfg.source,
                instance,
                local_addr,
                local: local_tx,
                peer: peer_rx,
                arrived,
                counters,
                tasks,
            }),
        })
    }

    /// Replaces this service's published state (its components); published at once and then
    /// every heartbeat.
    pub fn publish(&self, components: Vec<Component>) {
        self.inner.local.send_replace(components);
    }

    /// The peer as last seen: "live" with its components while heartbeats arrive, "unknown"
    /// before the first one and after `stale_after` without one (its components, if it was
    /// ever heard, then stay listed with state "unknown").
    pub fn peer(&self) -> PeerStatus {
        self.inner.peer.borrow().clone()
    }

    /// Level-triggered view of the peer: notifies when its state, instance, source or
    /// components change, not on every heartbeat (`last_seen` and `messages` are updated
    /// in place without a notification).
    pub fn watch_peer(&self) -> watch::Receiver<PeerStatus> {
        self.inner.peer.clone()
    }

    /// Notified when the peer is seen with a new instance id (it restarted) or becomes live
    /// after being unknown (including the first time). Uses `notify_one`: if nobody is
    /// waiting, one permit is stored, so an arrival between two waits is not lost; meant for
    /// one consumer (others should use [`Bus::watch_peer`]).
    pub fn peer_arrived(&self) -> Arc<Notify> {
        self.inner.arrived.clone()
    }

    /// The endpoint the PUB socket is bound to, with the port resolved (useful with port 0).
    pub fn local_addr(&self) -> &str {
        &self.inner.local_addr
    }

    /// This process's instance id on the bus.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// This service's source name on the bus.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    pub fn counters(&self) -> BusCounters {
        self.inner.counters.snapshot()
    }

    /// Waits until both bus tasks have stopped (after the shutdown token is cancelled) and the
    /// PUB socket has released its address.
    pub async fn closed(&self) {
        self.inner.tasks.wait().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Publisher

struct Publisher {
    socket: zmtp::Publisher,
    key: Option<BusKey>,
    local: watch::Receiver<Vec<Component>>,
    source: String,
    instance: String,
    heartbeat: Duration,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

async fn run_publisher(p: Publisher) {
    let heartbeat_ms = u32::try_from(p.heartbeat.as_millis()).unwrap_or(u32::MAX);
    let mut local = p.local.clone();
    let subscribed = p.socket.subscribed();
    let mut sequence = 0u64;
    let mut tick = tokio::time::interval(p.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A subscription just arrived: the state is re-sent shortly (coalescing a burst of them).
    let mut resend: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = p.stop.cancelled() => break,
            changed = local.changed() => {
                if changed.is_err() {
                    // Every Bus handle is gone: nobody can publish or read the peer any more.
                    break;
                }
                tick.reset();
            }
            _ = tick.tick() => {}
            _ = sleep_until_opt(resend) => resend = None,
            _ = subscribed.notified() => {
                if resend.is_none() {
                    resend = Some(Instant::now() + RESEND_AFTER_SUBSCRIBE);
                }
                continue;
            }
        }
        sequence += 1;
        let state = ConnectivityState {
            source: p.source.clone(),
            instance: p.instance.clone(),
            sequence,
            at: Some(timestamp_from_ms(now_ms())),
            heartbeat_ms,
            components: local.borrow_and_update().clone(),
        };
        let payload = state.encode_to_vec();
        let mut frames = vec![Bytes::from_static(TOPIC.as_bytes()), Bytes::from(payload)];
        if let Some(key) = &p.key {
            frames.push(Bytes::from(key.mac(&frames[0], &frames[1])));
        }
        p.socket.send(frames);
        Counters::bump(&p.counters.sent);
    }
    p.stop.cancel();
    p.socket.close().await;
    tracing::debug!("connectivity bus publisher stopped");
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriber

struct Subscriber {
    tracker: PeerTracker,
    peer_addr: String,
    peer_endpoint: Endpoint,
    limits: Limits,
    stale_after: Duration,
    peer: watch::Sender<PeerStatus>,
    arrived: Arc<Notify>,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

/// What a receiver task (one per SUB socket) reports, tagged with its generation.
enum Received {
    Connected(u64),
    Message(u64, Vec<Bytes>),
}

/// The current SUB socket's receiver task and what the supervisor knows about it.
struct SubHandle {
    generation: u64,
    stop: CancellationToken,
    /// Since when the socket has been connected and silent; `None` until it connects.
    quiet_since: Option<Instant>,
}

/// At most one line per `every`; the lines in between are counted and reported with the next.
struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    const fn new(every: Duration) -> Self {
        LogLimit { every, last: None, suppressed: 0 }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now.duration_since(last) < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Supervises one SUB socket at a time: feeds what it receives into the [`PeerTracker`],
/// marks the peer unknown when it falls silent, and replaces a connected socket that has
/// heard nothing for `stale_after`. Watchers are notified at most every
/// [`MIN_NOTIFY_INTERVAL`] and `peer_arrived` at most every [`MIN_INSTANCE_CHANGE`], and every
/// log line about what the peer sends is rate-limited: nothing the peer sends can turn into a
/// storm of reactions or log lines.
async fn run_subscriber(mut s: Subscriber) {
    let connect_timeout = s.stale_after.clamp(MIN_CONNECT_TIMEOUT, MAX_CONNECT_TIMEOUT);
    let (tx, mut rx) = mpsc::channel::<Received>(64);
    let receivers = TaskTracker::new();
    let (bus_stop, endpoint, limits, counters) =
        (s.stop.clone(), s.peer_endpoint.clone(), s.limits.clone(), s.counters.clone());
    let spawn_socket = |generation: u64| {
        let stop = bus_stop.child_token();
        receivers.spawn(run_receiver(Receiver {
            generation,
            endpoint: endpoint.clone(),
            limits: limits.clone(),
            connect_timeout,
            tx: tx.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
        }));
        SubHandle { generation, stop, quiet_since: None }
    };
    let mut socket = spawn_socket(0);
    let mut logs = Logs::default();
    let mut last_notify: Option<Instant> = None;
    let mut notify_pending = false;
    let mut last_arrival: Option<Instant> = None;
    let mut arrival_pending = false;
    loop {
        let recreate_at = socket.quiet_since.map(|t| t + s.stale_after);
        let notify_at = notify_pending.then(|| last_notify.map_or_else(Instant::now, |t| t + MIN_NOTIFY_INTERVAL));
        let arrival_at = arrival_pending.then(|| last_arrival.map_or_else(Instant::now, |t| t + MIN_INSTANCE_CHANGE));
        let wake_at = [recreate_at, s.tracker.stale_deadline(), notify_at, arrival_at].into_iter().flatten().min();
        tokio::select! {
            biased;
            _ = s.stop.cancelled() => break,
            received = rx.recv() => match received {
                Some(Received::Connected(g)) if g == socket.generation => {
                    tracing::debug!(peer_addr = %s.peer_addr, "connectivity bus: subscribed to the peer");
                    socket.quiet_since = Some(Instant::now());
                }
                Some(Received::Connected(_)) => {}
                Some(Received::Message(g, message)) => {
                    if g == socket.generation && socket.quiet_since.is_some() {
                        socket.quiet_since = Some(Instant::now());
                    }
                    let (changed, arrived) = s.on_message(&message, &mut logs);
                    notify_pending |= changed;
                    arrival_pending |= arrived;
                }
                // The supervisor holds a sender itself, so this cannot happen; stop cleanly anyway.
                None => break,
            },
            _ = sleep_until_opt(wake_at) => {
                let now = Instant::now();
                if s.check_stale(now) {
                    notify_pending = true;
                }
                if recreate_at.is_some_and(|at| at <= now) {
                    // The peer's PUB went away (or is wedged): a fresh socket reconnects now.
                    socket.stop.cancel();
                    socket = spawn_socket(socket.generation + 1);
                    Counters::bump(&s.counters.resubscribes);
                    tracing::debug!(generation = socket.generation, "connectivity bus: recreated the SUB socket");
                }
            }
        }
        let now = Instant::now();
        if notify_pending && last_notify.is_none_or(|t| now.duration_since(t) >= MIN_NOTIFY_INTERVAL) {
            publish_status(&s.peer, s.tracker.status());
            notify_pending = false;
            last_notify = Some(now);
        }
        if arrival_pending && last_arrival.is_none_or(|t| now.duration_since(t) >= MIN_INSTANCE_CHANGE) {
            let p = s.tracker.status();
            if let Some(suppressed) = logs.arrival.allow(now) {
                tracing::info!(
                    peer = %p.source, instance = %p.instance, restarts_seen = p.restarts_seen, suppressed,
                    "connectivity bus: peer is live"
                );
            }
            s.arrived.notify_one();
            arrival_pending = false;
            last_arrival = Some(now);
        }
    }
    s.stop.cancel();
    socket.stop.cancel();
    receivers.close();
    receivers.wait().await;
    // A stopped bus knows nothing about the peer any more.
    s.tracker.mark_unknown(now_ms(), "connectivity bus stopped");
    publish_status(&s.peer, s.tracker.status());
    tracing::debug!("connectivity bus subscriber stopped");
}

/// Rate limits of the subscriber's log lines.
struct Logs {
    undecodable: LogLimit,
    own: LogLimit,
    refused: LogLimit,
    arrival: LogLimit,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            undecodable: LogLimit::new(Duration::from_secs(10)),
            own: LogLimit::new(Duration::from_secs(60)),
            refused: LogLimit::new(Duration::from_secs(10)),
            arrival: LogLimit::new(Duration::from_secs(1)),
        }
    }
}

impl Subscriber {
    /// Returns (watchers should hear of a change, the peer arrived).
    fn on_message(&mut self, message: &[Bytes], logs: &mut Logs) -> (bool, bool) {
        Counters::bump(&self.counters.received);
        let now = Instant::now();
        match self.tracker.on_message(message, now, now_ms()) {
            Verdict::Undecodable(why) => {
                Counters::bump(&self.counters.undecodable);
                if let Some(suppressed) = logs.undecodable.allow(now) {
                    tracing::debug!(
                        why,
                        frames = message.len(),
                        suppressed,
                        "connectivity bus: ignoring an undecodable message"
                    );
                }
            }
            Verdict::Unauthenticated(why) => {
                Counters::bump(&self.counters.unauthenticated);
                if let Some(suppressed) = logs.undecodable.allow(now) {
                    tracing::warn!(why, suppressed, "connectivity bus: ignoring an unauthenticated message");
                }
            }
            Verdict::Own => {
                Counters::bump(&self.counters.own);
                if logs.own.allow(now).is_some() {
                    tracing::warn!(
                        peer_addr = %self.peer_addr,
                        "connectivity bus: receiving our own messages; is peer_addr our own pub_addr?"
                    );
                }
            }
            Verdict::OutOfOrder => {
                Counters::bump(&self.counters.out_of_order);
                if logs.refused.allow(now).is_some() {
                    tracing::debug!("connectivity bus: ignoring an already seen sequence number");
                }
            }
            Verdict::RefusedInstance(why) => {
                Counters::bump(&self.counters.refused_instances);
                if let Some(suppressed) = logs.refused.allow(now) {
                    tracing::debug!(why, suppressed, "connectivity bus: ignoring another instance of the peer");
                }
            }
            Verdict::Accepted { arrived } => {
                Counters::bump(&self.counters.accepted);
                return (true, arrived);
            }
        }
        (false, false)
    }

    /// Whether the peer just turned unknown.
    fn check_stale(&mut self, now: Instant) -> bool {
        if self.tracker.check_stale(now, now_ms()) {
            let p = self.tracker.status();
            tracing::warn!(
                peer = %p.source, silent_for = ?self.stale_after,
                "connectivity bus: peer is unknown (no heartbeat)"
            );
            return true;
        }
        false
    }
}

/// Pushes the tracker's view to watchers; they are notified only for a change that matters.
fn publish_status(peer: &watch::Sender<PeerStatus>, next: &PeerStatus) {
    peer.send_if_modified(|current| {
        let changed = current.state != next.state
            || current.instance != next.instance
            || current.source != next.source
            || current.components != next.components;
        current.clone_from(next);
        changed
    });
}

struct Receiver {
    generation: u64,
    endpoint: Endpoint,
    limits: Limits,
    connect_timeout: Duration,
    tx: mpsc::Sender<Received>,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

/// Owns one SUB connection at a time: connects (retrying with a short timeout), then forwards
/// every message until the connection fails or it is told to stop; then connects again. A
/// peer that breaks a protocol rule or a limit is dropped and not retried for
/// [`VIOLATION_PAUSE`], so a hostile publisher cannot make us spin.
async fn run_receiver(r: Receiver) {
    let mut announced = false;
    loop {
        let connected = tokio::select! {
            biased;
            _ = r.stop.cancelled() => return,
            c = zmtp::Subscriber::connect(&r.endpoint, TOPIC.as_bytes(), r.limits.clone(), r.connect_timeout) => c,
        };
        let mut socket = match connected {
            Ok(socket) => socket,
            Err(e) => {
                tracing::trace!(error = %e, endpoint = %r.endpoint, "connectivity bus: peer not reachable yet");
                let pause_for = if matches!(e, zmtp::ZmtpError::Io(_) | zmtp::ZmtpError::Timeout) {
                    RETRY_PAUSE
                } else {
                    Counters::bump(&r.counters.peer_violations);
                    VIOLATION_PAUSE
                };
                if pause(&r.stop, pause_for).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if !announced {
            if r.tx.send(Received::Connected(r.generation)).await.is_err() {
                return;
            }
            announced = true;
        }
        let mut window = Instant::now();
        let mut in_window = 0u32;
        let error = loop {
            let received = tokio::select! {
                biased;
                _ = r.stop.cancelled() => return,
                m = socket.recv() => m,
            };
            match received {
                Ok(message) => {
                    let now = Instant::now();
                    if now.duration_since(window) >= Duration::from_secs(1) {
                        (window, in_window) = (now, 0);
                    }
                    in_window += 1;
                    if in_window > MAX_MESSAGES_PER_SEC {
                        break zmtp::ZmtpError::Limit("too many messages per second from the peer");
                    }
                    if r.tx.send(Received::Message(r.generation, message)).await.is_err() {
                        return;
                    }
                }
                Err(e) => break e,
            }
        };
        drop(socket);
        let pause_for = match error {
            zmtp::ZmtpError::Io(_) | zmtp::ZmtpError::Timeout => RETRY_PAUSE,
            _ => {
                Counters::bump(&r.counters.peer_violations);
                VIOLATION_PAUSE
            }
        };
        tracing::trace!(error = %error, "connectivity bus: connection to the peer ended");
        if pause(&r.stop, pause_for).await.is_err() {
            return;
        }
    }
}

/// Sleeps `d`; `Err` if `stop` was cancelled first.
async fn pause(stop: &CancellationToken, d: Duration) -> Result<(), ()> {
    tokio::select! {
        _ = stop.cancelled() => Err(()),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// The peer's status: pure logic, no sockets.

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Undecodable(&'static str),
    Unauthenticated(&'static str),
    Own,
    OutOfOrder,
    /// Another instance while the current one is live: too soon after the last change, an
    /// older instance replayed, or an older timestamp.
    RefusedInstance(&'static str),
    /// Updated the status; `arrived` when the peer became live or restarted.
    Accepted {
        arrived: bool,
    },
}

struct PeerTracker {
    own_source: String,
    stale_after: Duration,
    key: Option<BusKey>,
    status: PeerStatus,
    last_sequence: u64,
    /// The current instance's latest timestamp (ms).
    last_at: i64,
    last_seen: Option<Instant>,
    /// When the instance last changed.
    instance_changed: Option<Instant>,
    /// Earlier instances and their last sequence, newest last.
    previous: std::collections::VecDeque<(String, u64)>,
}

impl PeerTracker {
    fn new(own_source: String, stale_after: Duration, key: Option<BusKey>) -> Self {
        Self {
            own_source,
            stale_after,
            key,
            status: PeerStatus { state: PEER_UNKNOWN.into(), ..Default::default() },
            last_sequence: 0,
            last_at: 0,
            last_seen: None,
            instance_changed: None,
            previous: std::collections::VecDeque::new(),
        }
    }

    fn status(&self) -> &PeerStatus {
        &self.status
    }

    /// When a live peer turns unknown if nothing else arrives.
    fn stale_deadline(&self) -> Option<Instant> {
        match self.last_seen {
            Some(seen) if self.status.state == PEER_LIVE => Some(seen + self.stale_after),
            _ => None,
        }
    }

    fn on_message(&mut self, message: &[Bytes], now: Instant, now_ms: i64) -> Verdict {
        let state = match decode(message, self.key.as_ref()) {
            Ok(s) => s,
            Err(DecodeError::Undecodable(why)) => return Verdict::Undecodable(why),
            Err(DecodeError::Unauthenticated(why)) => return Verdict::Unauthenticated(why),
        };
        let at = state.at.as_ref().map_or(0, |t| t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000));
        if self.key.is_some() && at.abs_diff(now_ms) > MAX_CLOCK_SKEW.as_millis() as u64 {
            return Verdict::Unauthenticated("timestamp too far from our clock (replay?)");
        }
        if state.source == self.own_source {
            return Verdict::Own;
        }
        let new_instance = state.instance != self.status.instance;
        if !new_instance && state.sequence <= self.last_sequence {
            return Verdict::OutOfOrder;
        }
        let was_live = self.status.state == PEER_LIVE;
        if new_instance {
            if self.previous.iter().any(|(i, last)| *i == state.instance && state.sequence <= *last) {
                return Verdict::RefusedInstance("a replayed message of an earlier instance");
            }
            if was_live {
                if self.instance_changed.is_some_and(|t| now.duration_since(t) < MIN_INSTANCE_CHANGE) {
                    return Verdict::RefusedInstance("instance changes too often");
                }
                if at < self.last_at {
                    return Verdict::RefusedInstance("older than the live instance's last message");
                }
            }
            if !self.status.instance.is_empty() {
                self.status.restarts_seen += 1;
                let old = (std::mem::take(&mut self.status.instance), self.last_sequence);
                self.previous.retain(|(i, _)| *i != old.0);
                self.previous.push_back(old);
                if self.previous.len() > REMEMBERED_INSTANCES {
                    self.previous.pop_front();
                }
            }
            self.instance_changed = Some(now);
        }
        self.last_sequence = state.sequence;
        self.last_at = at;
        self.last_seen = Some(now);
        self.status.source = state.source;
        self.status.instance = state.instance;
        self.status.state = PEER_LIVE.into();
        self.status.last_seen = Some(timestamp_from_ms(now_ms));
        self.status.components = state.components;
        self.status.messages += 1;
        Verdict::Accepted { arrived: new_instance || !was_live }
    }

    /// Marks a live peer unknown once `stale_after` has passed without a message. Returns
    /// whether it changed.
    fn check_stale(&mut self, now: Instant, now_ms: i64) -> bool {
        if self.stale_deadline().is_none_or(|deadline| deadline > now) {
            return false;
        }
        let detail = format!("no heartbeat from {} for {} ms", self.status.source, self.stale_after.as_millis());
        self.mark_unknown(now_ms, &detail)
    }

    /// Marks a live peer unknown; its components stay listed, each with state "unknown" and
    /// `detail` saying why. Returns whether it changed.
    fn mark_unknown(&mut self, now_ms: i64, detail: &str) -> bool {
        if self.status.state != PEER_LIVE {
            return false;
        }
        self.status.state = PEER_UNKNOWN.into();
        for c in &mut self.status.components {
            c.state = crate::connectivity::STATE_UNKNOWN.into();
            c.since = Some(timestamp_from_ms(now_ms));
            detail.clone_into(&mut c.detail);
        }
        true
    }
}

enum DecodeError {
    Undecodable(&'static str),
    Unauthenticated(&'static str),
}

fn decode(message: &[Bytes], key: Option<&BusKey>) -> Result<ConnectivityState, DecodeError> {
    let (topic, payload) = match (message, key) {
        ([topic, payload], None) => (topic, payload),
        ([topic, payload, tag], Some(key)) => {
            if tag.len() != MAC_LEN || !key.verify(topic, payload, tag) {
                return Err(DecodeError::Unauthenticated("bad MAC"));
            }
            (topic, payload)
        }
        (_, Some(_)) => return Err(DecodeError::Unauthenticated("no MAC")),
        _ => return Err(DecodeError::Undecodable("not two frames")),
    };
    if topic[..] != *TOPIC.as_bytes() {
        return Err(DecodeError::Undecodable("wrong topic"));
    }
    let state =
        ConnectivityState::decode(&payload[..]).map_err(|_| DecodeError::Undecodable("not a ConnectivityState"))?;
    if state.source.is_empty() || state.instance.is_empty() {
        return Err(DecodeError::Undecodable("no source or instance"));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectivity::{KIND_PRINTER, STATE_ONLINE, STATE_PAPER_LOW, STATE_UNKNOWN};
    use std::future::Future;
    use zeromq::{PubSocket, Socket as _, SocketSend as _, ZmqMessage};

    const HEARTBEAT: Duration = Duration::from_millis(100);
    const STALE: Duration = Duration::from_millis(400);

    /// A localhost endpoint on a port that was free a moment ago.
    fn free_addr() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port())
    }

    fn cfg(source: &str, pub_addr: &str, peer_addr: &str) -> BusConfig {
        BusConfig { heartbeat: HEARTBEAT, stale_after: STALE, ..BusConfig::new(source, pub_addr, peer_addr) }
    }

    /// `Bus::start`, retrying while the port is briefly taken (the free-port race, or a
    /// previous socket on it still closing).
    async fn start(cfg: BusConfig, token: &CancellationToken) -> Bus {
        let mut tries = 0;
        loop {
            match Bus::start(cfg.clone(), token.clone()).await {
                Ok(bus) => return bus,
                Err(e) if format!("{e:#}").contains("in use") && tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("bus start failed: {e:#}"),
            }
        }
    }

    fn printer(name: &str, state: &str) -> Component {
        Component {
            kind: KIND_PRINTER.into(),
            name: name.into(),
            state: state.into(),
            since: Some(timestamp_from_ms(1_000)),
            detail: String::new(),
        }
    }

    /// Waits (on the watch channel, no polling) until the peer status satisfies `pred`.
    async fn wait_peer(bus: &Bus, within: Duration, pred: impl FnMut(&PeerStatus) -> bool) -> PeerStatus {
        let mut rx = bus.watch_peer();
        match tokio::time::timeout(within, rx.wait_for(pred)).await {
            Ok(Ok(status)) => status.clone(),
            Ok(Err(_)) => panic!("the bus stopped while waiting"),
            Err(_) => panic!("peer status not reached within {within:?}; last: {:?}", bus.peer()),
        }
    }

    async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
        tokio::time::timeout(limit, f).await.unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
    }

    fn live(p: &PeerStatus) -> bool {
        p.state == PEER_LIVE
    }

    fn message(state: &ConnectivityState) -> ZmqMessage {
        let mut m = ZmqMessage::from(TOPIC);
        m.push_back(state.encode_to_vec().into());
        m
    }

    fn frames(state: &ConnectivityState) -> Vec<Bytes> {
        vec![Bytes::from_static(TOPIC.as_bytes()), Bytes::from(state.encode_to_vec())]
    }

    fn peer_state(instance: &str, sequence: u64, components: Vec<Component>) -> ConnectivityState {
        ConnectivityState {
            source: "wix-print".into(),
            instance: instance.into(),
            sequence,
            at: Some(timestamp_from_ms(now_ms())),
            heartbeat_ms: 100,
            components,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_buses_see_each_other_live_with_their_components() {
        let token = CancellationToken::new();
        let b_addr = free_addr();
        // A binds port 0: local_addr reports the port actually bound, and B connects to it.
        let a_cfg = BusConfig::new("wix-ingest", "tcp://127.0.0.1:0", b_addr.clone());
        let a = Bus::start(a_cfg, token.clone()).await.unwrap();
        assert!(!a.local_addr().ends_with(":0"), "resolved port, got {}", a.local_addr());
        let b = start(BusConfig::new("wix-print", b_addr.clone(), a.local_addr()), &token).await;
        let t0 = Instant::now();
        a.publish(vec![Component {
            kind: "internet".into(),
            name: "internet".into(),
            state: STATE_ONLINE.into(),
            ..Default::default()
        }]);
        b.publish(vec![printer("kitchen", STATE_ONLINE), printer("bar", STATE_PAPER_LOW)]);

        // Default 1 s heartbeat: the re-send after a subscriber connects makes this quick.
        let seen_by_a = wait_peer(&a, Duration::from_secs(3), |p| live(p) && p.components.len() == 2).await;
        let seen_by_b = wait_peer(&b, Duration::from_secs(3), |p| live(p) && !p.components.is_empty()).await;
        eprintln!("both live after {:?}", t0.elapsed());
        assert_eq!(seen_by_a.source, "wix-print");
        assert_eq!(seen_by_a.instance, b.instance());
        assert_eq!(seen_by_a.components[1].state, STATE_PAPER_LOW);
        assert_eq!(seen_by_b.source, "wix-ingest");
        assert_eq!(seen_by_b.instance, a.instance());
        assert_eq!(seen_by_b.components[0].name, "internet");

        // publish() goes out at once, not at the next (1 s) heartbeat.
        let t1 = Instant::now();
        b.publish(vec![printer("kitchen", "cover_open")]);
        wait_peer(&a, Duration::from_millis(700), |p| p.components.len() == 1 && p.components[0].state == "cover_open")
            .await;
        eprintln!("a change published reached the peer after {:?}", t1.elapsed());

        token.cancel();
        within(Duration::from_secs(2), "shutdown", async {
            a.closed().await;
            b.closed().await;
        })
        .await;
        assert_eq!(a.peer().state, PEER_UNKNOWN, "a stopped bus knows nothing about its peer");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeats_refresh_last_seen_without_waking_watchers() {
        let token = CancellationToken::new();
        let (a_addr, b_addr) = (free_addr(), free_addr());
        let a = start(cfg("wix-ingest", &a_addr, &b_addr), &token).await;
        let b = start(cfg("wix-print", &b_addr, &a_addr), &token).await;
        b.publish(vec![printer("kitchen", STATE_ONLINE)]);
        wait_peer(&a, Duration::from_secs(2), |p| live(p) && p.components.len() == 1).await;
        let mut rx = a.watch_peer();
        let before = rx.borrow_and_update().clone();
        // Asserting that nothing is notified needs a fixed wait: six heartbeats.
        tokio::time::sleep(HEARTBEAT * 6).await;
        assert!(!rx.has_changed().unwrap(), "heartbeats with the same state must not notify");
        let after = a.peer();
        assert!(after.messages >= before.messages + 3, "messages {} -> {}", before.messages, after.messages);
        assert_ne!(after.last_seen, before.last_seen, "last_seen is refreshed");
        b.publish(vec![printer("kitchen", STATE_PAPER_LOW)]);
        within(Duration::from_secs(1), "a component change notification", rx.changed()).await.unwrap();
        assert_eq!(rx.borrow().components[0].state, STATE_PAPER_LOW);
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_peer_becomes_unknown_after_stale_after() {
        let (a_addr, b_addr) = (free_addr(), free_addr());
        let (ta, tb) = (CancellationToken::new(), CancellationToken::new());
        let a = start(cfg("wix-ingest", &a_addr, &b_addr), &ta).await;
        let b = start(cfg("wix-print", &b_addr, &a_addr), &tb).await;
        b.publish(vec![printer("kitchen", STATE_ONLINE)]);
        wait_peer(&a, Duration::from_secs(2), |p| live(p) && p.components.len() == 1).await;

        tb.cancel();
        within(Duration::from_secs(2), "peer shutdown", b.closed()).await;
        drop(b);
        let stopped = Instant::now();
        let status = wait_peer(&a, STALE + Duration::from_secs(1), |p| p.state == PEER_UNKNOWN).await;
        let took = stopped.elapsed();
        eprintln!("peer unknown {took:?} after it stopped (stale_after {STALE:?})");
        // The last heartbeat came at most one heartbeat before the stop.
        assert!(took >= STALE - HEARTBEAT - Duration::from_millis(50), "unknown too early: {took:?}");
        assert_eq!(status.source, "wix-print", "the last known source stays");
        assert_eq!(status.components.len(), 1, "components stay listed");
        assert_eq!(status.components[0].state, STATE_UNKNOWN);
        assert!(status.components[0].detail.contains("no heartbeat"));
        ta.cancel();
        within(Duration::from_secs(2), "shutdown", a.closed()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_peer_is_seen_live_again_with_a_new_instance() {
        let (a_addr, b_addr) = (free_addr(), free_addr());
        let ta = CancellationToken::new();
        let a = start(cfg("wix-ingest", &a_addr, &b_addr), &ta).await;
        let arrived = a.peer_arrived();
        let tb = CancellationToken::new();
        let b = start(cfg("wix-print", &b_addr, &a_addr), &tb).await;
        b.publish(vec![printer("kitchen", STATE_ONLINE)]);
        wait_peer(&a, Duration::from_secs(2), live).await;
        // The first arrival left a permit (nobody was waiting yet).
        within(Duration::from_secs(1), "first peer_arrived", arrived.notified()).await;
        let first_instance = b.instance().to_owned();

        tb.cancel();
        within(Duration::from_secs(2), "peer shutdown", b.closed()).await;
        drop(b);
        wait_peer(&a, STALE + Duration::from_secs(1), |p| p.state == PEER_UNKNOWN).await;
        // Stay down long enough for the crate's own reconnect backoff to grow past 3 s: only
        // the recreated SUB socket can then find the new publisher quickly.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(a.counters().resubscribes >= 1, "a silent connected SUB socket is recreated");

        let notified = arrived.notified();
        let tb2 = CancellationToken::new();
        let b2 = start(cfg("wix-print", &b_addr, &a_addr), &tb2).await;
        assert_ne!(b2.instance(), first_instance);
        b2.publish(vec![printer("kitchen", STATE_PAPER_LOW)]);
        let restarted = Instant::now();
        let status = wait_peer(&a, Duration::from_millis(1500), |p| live(p) && p.instance == b2.instance()).await;
        eprintln!("restarted peer live again after {:?}", restarted.elapsed());
        within(Duration::from_secs(1), "peer_arrived after the restart", notified).await;
        assert_eq!(status.restarts_seen, 1);
        assert_eq!(status.components.len(), 1);
        assert_eq!(status.components[0].state, STATE_PAPER_LOW);

        // A restart without a gap (no unknown in between) is an arrival too.
        let notified = arrived.notified();
        tb2.cancel();
        within(Duration::from_secs(2), "peer shutdown", b2.closed()).await;
        drop(b2);
        let tb3 = CancellationToken::new();
        let b3 = start(cfg("wix-print", &b_addr, &a_addr), &tb3).await;
        b3.publish(vec![printer("kitchen", STATE_ONLINE)]);
        let status = wait_peer(&a, Duration::from_secs(2), |p| live(p) && p.instance == b3.instance()).await;
        within(Duration::from_secs(1), "peer_arrived after a quick restart", notified).await;
        assert_eq!(status.restarts_seen, 2);
        ta.cancel();
        tb3.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_subscriber_gets_the_current_state() {
        let token = CancellationToken::new();
        let (a_addr, b_addr) = (free_addr(), free_addr());
        let b = start(cfg("wix-print", &b_addr, &a_addr), &token).await;
        b.publish(vec![printer("kitchen", STATE_ONLINE), printer("bar", STATE_ONLINE)]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let a = start(cfg("wix-ingest", &a_addr, &b_addr), &token).await;
        let t0 = Instant::now();
        let status = wait_peer(&a, Duration::from_secs(2), |p| live(p) && p.components.len() == 2).await;
        eprintln!("late subscriber got the state after {:?}", t0.elapsed());
        assert_eq!(status.instance, b.instance());
        // And the early one sees the late one.
        wait_peer(&b, Duration::from_secs(2), live).await;
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_never_starts_stays_unknown_and_start_does_not_wait() {
        let token = CancellationToken::new();
        let t0 = std::time::Instant::now();
        let a = start(cfg("wix-ingest", &free_addr(), &free_addr()), &token).await;
        let took = t0.elapsed();
        eprintln!("start returned after {took:?}");
        assert!(took < Duration::from_secs(1), "start waited {took:?}");
        let mut rx = a.watch_peer();
        rx.borrow_and_update();
        // Asserting that nothing happens needs a fixed wait: three times stale_after.
        tokio::time::sleep(STALE * 3).await;
        assert_eq!(a.peer().state, PEER_UNKNOWN);
        assert!(!rx.has_changed().unwrap());
        let c = a.counters();
        assert_eq!((c.received, c.resubscribes), (0, 0), "{c:?}");
        assert!(c.sent >= 5, "the heartbeat runs without subscribers: {c:?}");
        // Shutdown is not held up by the pending connect.
        token.cancel();
        within(Duration::from_secs(1), "shutdown", a.closed()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecodable_own_and_old_messages_do_not_break_the_bus() {
        let token = CancellationToken::new();
        let raw_addr = free_addr();
        let mut raw = PubSocket::new();
        raw.bind(&raw_addr).await.unwrap();
        let a = start(cfg("wix-ingest", &free_addr(), &raw_addr), &token).await;

        // Until A's subscription reaches the raw PUB, what it sends is dropped: repeat.
        let mut sequence = 10;
        let mut rx = a.watch_peer();
        within(Duration::from_secs(3), "first valid message", async {
            loop {
                sequence += 1;
                raw.send(message(&peer_state("i1", sequence, vec![printer("kitchen", STATE_ONLINE)]))).await.unwrap();
                if tokio::time::timeout(Duration::from_millis(50), rx.wait_for(live)).await.is_ok() {
                    break;
                }
            }
        })
        .await;
        let before = a.counters();

        let mut garbage = ZmqMessage::from(TOPIC);
        garbage.push_back(vec![0xff, 0xff, 0xff].into());
        raw.send(garbage).await.unwrap();
        raw.send(ZmqMessage::from(TOPIC)).await.unwrap();
        let mut three = message(&peer_state("i1", 999, vec![]));
        three.push_back(vec![1].into());
        raw.send(three).await.unwrap();
        let mut empty = ZmqMessage::from(TOPIC);
        empty.push_back(Vec::<u8>::new().into());
        raw.send(empty).await.unwrap();
        let mut wrong_topic = ZmqMessage::from("connectivityX");
        wrong_topic.push_back(peer_state("i1", 999, vec![]).encode_to_vec().into());
        raw.send(wrong_topic).await.unwrap();
        let own = ConnectivityState { source: "wix-ingest".into(), ..peer_state("i9", 1, vec![]) };
        raw.send(message(&own)).await.unwrap();
        raw.send(message(&peer_state("i1", 1, vec![printer("kitchen", "stale")]))).await.unwrap();
        raw.send(message(&peer_state("i1", sequence + 1, vec![printer("kitchen", STATE_PAPER_LOW)]))).await.unwrap();

        let status =
            wait_peer(&a, Duration::from_secs(2), |p| p.components.first().is_some_and(|c| c.state == STATE_PAPER_LOW))
                .await;
        assert_eq!(status.state, PEER_LIVE);
        assert_eq!(status.instance, "i1");
        let after = a.counters();
        // Messages after the subscription took effect arrive in order, none lost.
        assert_eq!(after.undecodable - before.undecodable, 5, "{after:?}");
        assert_eq!(after.own - before.own, 1, "{after:?}");
        assert_eq!(after.out_of_order - before.out_of_order, 1, "{after:?}");
        assert_eq!(after.accepted - before.accepted, 1, "{after:?}");
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_every_handle_stops_the_bus_and_frees_the_port() {
        let addr = free_addr();
        let token = CancellationToken::new();
        let bus = start(cfg("wix-ingest", &addr, &free_addr()), &token).await;
        let mut rx = bus.watch_peer();
        drop(bus);
        // The subscriber task owns the sender: its end closes the channel.
        within(Duration::from_secs(2), "tasks to stop", async { while rx.changed().await.is_ok() {} }).await;
        assert!(!token.is_cancelled(), "the caller's token is not cancelled by the bus");
        let again = start(cfg("wix-ingest", &addr, &free_addr()), &token).await;
        drop(again);
    }

    #[tokio::test]
    async fn start_refuses_a_bad_config_and_a_taken_port() {
        let token = CancellationToken::new();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = format!("tcp://127.0.0.1:{}", taken.local_addr().unwrap().port());
        let err = Bus::start(cfg("wix-ingest", &taken_addr, &free_addr()), token.clone()).await.err().unwrap();
        assert!(format!("{err:#}").contains(&taken_addr), "{err:#}");

        let err = Bus::start(cfg("wix-ingest", &free_addr(), "nonsense"), token.clone()).await.err().unwrap();
        assert!(format!("{err:#}").contains("peer_addr"), "{err:#}");

        let same = free_addr();
        assert!(Bus::start(cfg("wix-ingest", &same, &same), token.clone()).await.is_err());

        let slow = BusConfig { stale_after: HEARTBEAT, ..cfg("wix-ingest", &free_addr(), &free_addr()) };
        let err = Bus::start(slow, token.clone()).await.err().unwrap();
        assert!(format!("{err:#}").contains("stale_after"), "{err:#}");

        let nameless = cfg("", &free_addr(), &free_addr());
        assert!(Bus::start(nameless, token.clone()).await.is_err());
        drop(taken);
    }

    #[test]
    fn tracker_orders_by_sequence_per_instance_and_counts_restarts() {
        let mut t = PeerTracker::new("wix-ingest".into(), STALE, None);
        let now = Instant::now();
        assert_eq!(t.status().state, PEER_UNKNOWN);
        assert_eq!(t.on_message(&frames(&peer_state("i1", 5, vec![])), now, 1), Verdict::Accepted { arrived: true });
        assert_eq!(t.on_message(&frames(&peer_state("i1", 5, vec![])), now, 2), Verdict::OutOfOrder);
        assert_eq!(t.on_message(&frames(&peer_state("i1", 4, vec![])), now, 2), Verdict::OutOfOrder);
        assert_eq!(t.on_message(&frames(&peer_state("i1", 7, vec![])), now, 3), Verdict::Accepted { arrived: false });
        // A new instance starts its sequence again: a restart.
        let later = now + MIN_INSTANCE_CHANGE;
        assert_eq!(t.on_message(&frames(&peer_state("i2", 1, vec![])), later, 4), Verdict::Accepted { arrived: true });
        assert_eq!(t.status().restarts_seen, 1);
        assert_eq!(t.status().messages, 3);
        assert_eq!(t.status().last_seen, Some(timestamp_from_ms(4)));
        let own = ConnectivityState { source: "wix-ingest".into(), ..peer_state("x", 1, vec![]) };
        assert_eq!(t.on_message(&frames(&own), now, 5), Verdict::Own);
        let nameless = ConnectivityState { source: String::new(), ..peer_state("x", 1, vec![]) };
        assert!(matches!(t.on_message(&frames(&nameless), now, 5), Verdict::Undecodable(_)));
        assert!(matches!(t.on_message(&[Bytes::from_static(b"connectivity")], now, 5), Verdict::Undecodable(_)));
    }

    #[test]
    fn tracker_turns_unknown_after_stale_after_and_back_live_with_an_arrival() {
        let mut t = PeerTracker::new("wix-ingest".into(), STALE, None);
        let t0 = Instant::now();
        assert!(!t.check_stale(t0 + STALE * 10, 0), "never heard: nothing to turn unknown");
        t.on_message(&frames(&peer_state("i1", 1, vec![printer("kitchen", STATE_ONLINE)])), t0, 1);
        assert_eq!(t.stale_deadline(), Some(t0 + STALE));
        assert!(!t.check_stale(t0 + STALE - Duration::from_millis(1), 2));
        assert!(t.check_stale(t0 + STALE, 3));
        assert_eq!(t.status().state, PEER_UNKNOWN);
        assert_eq!(t.status().components[0].state, STATE_UNKNOWN);
        assert_eq!(t.status().components[0].since, Some(timestamp_from_ms(3)));
        assert_eq!(t.stale_deadline(), None);
        assert!(!t.check_stale(t0 + STALE * 2, 4), "already unknown");
        // Same instance back after a gap (a network hiccup): live again, an arrival, no restart.
        let v = t.on_message(&frames(&peer_state("i1", 9, vec![printer("kitchen", STATE_ONLINE)])), t0 + STALE * 3, 5);
        assert_eq!(v, Verdict::Accepted { arrived: true });
        assert_eq!(t.status().restarts_seen, 0);
        assert_eq!(t.status().components[0].state, STATE_ONLINE);
    }

    #[test]
    fn tracker_refuses_instance_floods_and_replays_of_earlier_instances() {
        let mut t = PeerTracker::new("wix-ingest".into(), STALE, None);
        let t0 = Instant::now();
        assert!(matches!(t.on_message(&frames(&peer_state("i1", 1, vec![])), t0, 1), Verdict::Accepted { .. }));
        // A flood of "restarted" instances within one interval: all refused, no arrival.
        for n in 0..1000 {
            let v = t.on_message(&frames(&peer_state(&format!("forged{n}"), 1, vec![])), t0, 2);
            assert_eq!(v, Verdict::RefusedInstance("instance changes too often"));
        }
        assert_eq!(t.status().instance, "i1");
        assert_eq!(t.status().restarts_seen, 0);
        let t1 = t0 + MIN_INSTANCE_CHANGE;
        assert_eq!(t.on_message(&frames(&peer_state("i2", 1, vec![])), t1, 3), Verdict::Accepted { arrived: true });
        // i1 replayed later (its old sequence): refused, not a "restart".
        let t2 = t1 + MIN_INSTANCE_CHANGE * 2;
        assert!(matches!(t.on_message(&frames(&peer_state("i1", 1, vec![])), t2, 4), Verdict::RefusedInstance(_)));
        // An instance whose timestamp is older than the live one's last message: refused.
        let old = ConnectivityState { at: Some(timestamp_from_ms(1)), ..peer_state("i3", 1, vec![]) };
        assert!(matches!(t.on_message(&frames(&old), t2, 5), Verdict::RefusedInstance(_)));
        assert_eq!(t.status().restarts_seen, 1);
    }

    #[test]
    fn with_a_key_only_fresh_messages_with_a_valid_mac_count() {
        let key = BusKey::new(b"0123456789abcdef0123").unwrap();
        assert!(BusKey::new(b"short").is_err());
        let mut t = PeerTracker::new("wix-ingest".into(), STALE, Some(key.clone()));
        let now = Instant::now();
        let signed = |s: &ConnectivityState, k: &BusKey| {
            let mut f = frames(s);
            let tag = k.mac(&f[0], &f[1]);
            f.push(Bytes::from(tag));
            f
        };
        let state = peer_state("i1", 1, vec![]);
        assert!(matches!(t.on_message(&frames(&state), now, now_ms()), Verdict::Unauthenticated(_)));
        let other = BusKey::new(b"another key, 16+ bytes").unwrap();
        assert!(matches!(t.on_message(&signed(&state, &other), now, now_ms()), Verdict::Unauthenticated(_)));
        let mut tampered = signed(&state, &key);
        tampered[1] = Bytes::from(peer_state("i1", 2, vec![]).encode_to_vec());
        assert!(matches!(t.on_message(&tampered, now, now_ms()), Verdict::Unauthenticated(_)));
        let stale = ConnectivityState { at: Some(timestamp_from_ms(now_ms() - 120_000)), ..state.clone() };
        assert!(matches!(t.on_message(&signed(&stale, &key), now, now_ms()), Verdict::Unauthenticated(_)));
        assert_eq!(t.on_message(&signed(&state, &key), now, now_ms()), Verdict::Accepted { arrived: true });
        assert_eq!(t.on_message(&signed(&state, &key), now, now_ms()), Verdict::OutOfOrder, "a replay");
        assert!(!format!("{key:?}").contains("0123"), "the key is not logged");
    }

    #[test]
    fn a_non_local_address_needs_a_key() {
        let c = BusConfig::new("wix-ingest", "tcp://0.0.0.0:5561", "tcp://10.0.0.2:5562");
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("BUS_KEY_FILE"));
        let keyed = BusConfig { key: Some(BusKey::new(b"0123456789abcdef").unwrap()), ..c };
        keyed.validate().unwrap();
        BusConfig::new("wix-ingest", "ipc:///run/x/a.sock", "ipc:///run/x/b.sock").validate().unwrap();
    }

    #[test]
    fn default_addresses_are_unix_sockets_in_the_runtime_directory() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(
            default_addr(env(&[("RUNTIME_DIRECTORY", "/run/wix-printer")]), INGEST_SOCKET),
            "ipc:///run/wix-printer/ingest-bus.sock"
        );
        assert_eq!(
            default_addr(env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]), PRINT_SOCKET),
            "ipc:///run/user/1000/wix-printer/print-bus.sock"
        );
        assert_eq!(default_addr(env(&[]), PRINT_SOCKET), "ipc:///run/wix-printer/print-bus.sock");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_zeromq_crate_subscriber_receives_our_state() {
        use zeromq::{SocketRecv as _, SubSocket};
        let token = CancellationToken::new();
        let b = start(cfg("wix-print", &free_addr(), &free_addr()), &token).await;
        b.publish(vec![printer("kitchen", STATE_ONLINE)]);
        let mut sub = SubSocket::new();
        sub.subscribe(TOPIC).await.unwrap();
        sub.connect(b.local_addr()).await.unwrap();
        let m = within(Duration::from_secs(2), "a message from our PUB", sub.recv()).await.unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(&m.get(0).unwrap()[..], TOPIC.as_bytes());
        let state = ConnectivityState::decode(&m.get(1).unwrap()[..]).unwrap();
        assert_eq!((state.source.as_str(), state.components.len()), ("wix-print", 1));
        token.cancel();
    }
}
