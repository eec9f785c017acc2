//! The internet monitor: is Wix reachable from here? Probes a few TCP targets every interval
//! and turns the raw results into a debounced state: "online" when every probe connects,
//! "degraded" when some do, "offline" when none does.
//!
//! Owns: the probes (a TCP connect with a timeout, then the connection is dropped), the
//! [`Debouncer`] over their results, the confirmed internet [`Component`] (shown through a
//! watch channel, see [`InternetHandle`]), its `connectivity_events` rows (one per confirmed
//! change, written through the store) and their pruning (at start and then daily).
//!
//! At start-up the open row is read back: when the first probe round confirms the same state,
//! that row simply continues (its `since` stays); otherwise the change is recorded from it.
//! The first round always decides (the debouncer accepts its first observation at once); until
//! it has run the state is "unknown".
//!
//! [`InternetHandle::check_now`] probes at once and answers with what that round saw,
//! bypassing the debounce for its answer only: the round also counts as one ordinary
//! observation, so the recorded state still changes only after `debounce` agreeing rounds.
//!
//! Must never: send anything but a TCP handshake to a probe target, hold up start-up, talk to
//! the bus, or decide what the state means for orders (see `reactions`).

use std::fmt;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use wixprint_shared::connectivity::{
    Debouncer, KIND_INTERNET, STATE_DEGRADED, STATE_OFFLINE, STATE_ONLINE, STATE_UNKNOWN,
};
use wixprint_shared::proto::events::Component;
use wixprint_shared::time::{now_ms, timestamp_from_ms};

use crate::store::Store;

/// `Component.name` (and `connectivity_events.name`) of the internet.
pub const NAME: &str = "internet";

/// How often closed rows older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// Check requests waiting at once; more callers wait for a free slot.
const MAX_PENDING_CHECKS: usize = 16;

/// The monitor's settings (see `config.rs` for keys and defaults).
#[derive(Debug, Clone)]
pub struct InternetSettings {
    pub probes: Vec<ProbeTarget>,
    /// Time between probe rounds.
    pub interval: Duration,
    /// A probe that has not connected within this fails.
    pub timeout: Duration,
    /// Consecutive rounds that must agree on a new state before it is confirmed.
    pub debounce: u32,
    /// Closed `connectivity_events` rows older than this are deleted.
    pub retention: Duration,
}

/// One probe: a TCP connect to `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl ProbeTarget {
    /// `host:port`, `tcp://host:port` or `[v6 address]:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let rest = match t.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tcp") => rest,
            Some((scheme, _)) => return Err(format!("{t:?}: only tcp:// probes are supported, not {scheme}://")),
            None => t,
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or_else(|| format!("{t:?} is not [address]:port"))?;
            (host, port)
        } else {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("{t:?} has no port (host:port)"))?;
            if host.contains(':') {
                return Err(format!("{t:?}: write an IPv6 address as [address]:port"));
            }
            (host, port)
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("{t:?} has no valid host"));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Self { host: host.to_owned(), port }),
            _ => Err(format!("{t:?}: {port:?} is not a port (1-65535)")),
        }
    }
}

/// Comma-separated probe targets; at least one.
pub fn parse_probes(text: &str) -> Result<Vec<ProbeTarget>, String> {
    let probes = text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(ProbeTarget::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if probes.is_empty() {
        return Err("no probe targets (comma-separated host:port)".into());
    }
    Ok(probes)
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub target: String,
    /// `None` when it connected, else why not.
    pub error: Option<String>,
}

/// One probe round, classified.
#[derive(Debug, Clone)]
pub struct Observation {
    /// online / degraded / offline
    pub state: &'static str,
    /// How many probes connected, and which failed and why.
    pub detail: String,
    pub outcomes: Vec<ProbeOutcome>,
    pub at_ms: i64,
}

/// Connects to `target` (DNS included) within `timeout`; the connection is dropped at once.
pub async fn probe(target: &ProbeTarget, timeout: Duration) -> ProbeOutcome {
    let connect = TcpStream::connect((target.host.as_str(), target.port));
    let error = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_stream)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no connection within {} ms", timeout.as_millis())),
    };
    ProbeOutcome { target: target.to_string(), error }
}

/// Runs every probe at once (a round takes at most `timeout`) and classifies the results.
pub async fn observe(probes: &[ProbeTarget], timeout: Duration) -> Observation {
    let mut set = JoinSet::new();
    for (i, target) in probes.iter().cloned().enumerate() {
        set.spawn(async move { (i, probe(&target, timeout).await) });
    }
    let mut outcomes: Vec<Option<ProbeOutcome>> = vec![None; probes.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, outcome)) = joined {
            outcomes[i] = Some(outcome);
        }
    }
    // A probe task can only be missing if it panicked: count it as a failed probe.
    let outcomes: Vec<ProbeOutcome> = outcomes
        .into_iter()
        .zip(probes)
        .map(|(o, t)| o.unwrap_or_else(|| ProbeOutcome { target: t.to_string(), error: Some("probe failed".into()) }))
        .collect();
    let (state, detail) = classify(&outcomes);
    Observation { state, detail, outcomes, at_ms: now_ms() }
}

/// online: every probe connected; degraded: some; offline: none (or no probes at all).
pub fn classify(outcomes: &[ProbeOutcome]) -> (&'static str, String) {
    let ok = outcomes.iter().filter(|o| o.error.is_none()).count();
    let total = outcomes.len();
    let state = match ok {
        0 => STATE_OFFLINE,
        n if n == total => STATE_ONLINE,
        _ => STATE_DEGRADED,
    };
    let failed: Vec<String> =
        outcomes.iter().filter_map(|o| o.error.as_ref().map(|e| format!("{} ({e})", o.target))).collect();
    let mut detail = format!("{ok} of {total} probes connected");
    if !failed.is_empty() {
        detail.push_str("; failed: ");
        detail.push_str(&failed.join(", "));
    }
    (state, detail)
}

fn component(state: &str, since_ms: i64, detail: String) -> Component {
    Component {
        kind: KIND_INTERNET.into(),
        name: NAME.into(),
        state: state.into(),
        since: Some(timestamp_from_ms(since_ms)),
        detail,
    }
}

type CheckRequest = oneshot::Sender<Component>;

/// What the rest of ingest holds: the confirmed state and the "probe now" button. Cheap to
/// clone.
#[derive(Clone)]
pub struct InternetHandle {
    state: watch::Receiver<Component>,
    checks: mpsc::Sender<CheckRequest>,
}

impl InternetHandle {
    /// The confirmed internet state ("unknown" until the first round has run).
    pub fn component(&self) -> Component {
        self.state.borrow().clone()
    }

    /// Notifies on every confirmed change (and when the detail of the confirmed state changes).
    pub fn watch(&self) -> watch::Receiver<Component> {
        self.state.clone()
    }

    /// Probes now (after a round already under way, if any) and answers with what this round
    /// saw. When it differs from the confirmed state, `since` is now and the detail says that
    /// the recorded state has not changed (yet). The round counts as one observation.
    pub async fn check_now(&self) -> anyhow::Result<Component> {
        let (tx, rx) = oneshot::channel();
        self.checks.send(tx).await.map_err(|_| anyhow::anyhow!("the internet monitor is not running"))?;
        rx.await.map_err(|_| anyhow::anyhow!("the internet monitor stopped before answering"))
    }
}

/// The probing loop; see the module docs.
pub struct InternetMonitor {
    settings: InternetSettings,
    store: Store,
    debouncer: Debouncer,
    /// State and start of the open `connectivity_events` row, as far as this process knows.
    recorded: Option<(String, i64)>,
    state: watch::Sender<Component>,
    checks: mpsc::Receiver<CheckRequest>,
}

impl InternetMonitor {
    pub fn new(settings: InternetSettings, store: Store) -> (Self, InternetHandle) {
        let (state_tx, state_rx) = watch::channel(component(STATE_UNKNOWN, now_ms(), "not probed yet".into()));
        let (check_tx, check_rx) = mpsc::channel(MAX_PENDING_CHECKS);
        let monitor = Self {
            debouncer: Debouncer::new(settings.debounce),
            settings,
            store,
            recorded: None,
            state: state_tx,
            checks: check_rx,
        };
        (monitor, InternetHandle { state: state_rx, checks: check_tx })
    }

    /// Probes every interval (the first round at once) until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.restore().await;
        self.prune().await;
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval_at(Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
        // False once every handle is gone: a closed channel must not be polled again (it would
        // answer `None` at once, forever).
        let mut checks_open = true;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                request = self.checks.recv(), if checks_open => {
                    let Some(first) = request else {
                        checks_open = false;
                        continue;
                    };
                    // Callers that asked meanwhile share this round.
                    let mut waiting = vec![first];
                    while let Ok(more) = self.checks.try_recv() {
                        waiting.push(more);
                    }
                    let Some(obs) = self.round(&shutdown).await else { break };
                    self.apply(&obs).await;
                    let answer = self.answer(&obs);
                    for w in waiting {
                        let _ = w.send(answer.clone());
                    }
                    tick.reset();
                }
                _ = tick.tick() => {
                    let Some(obs) = self.round(&shutdown).await else { break };
                    self.apply(&obs).await;
                }
                _ = prune.tick() => self.prune().await,
            }
        }
        tracing::debug!("internet monitor stopped");
    }

    async fn round(&self, shutdown: &CancellationToken) -> Option<Observation> {
        tokio::select! {
            obs = observe(&self.settings.probes, self.settings.timeout) => Some(obs),
            _ = shutdown.cancelled() => None,
        }
    }

    /// Reads the open row back, so an unchanged state continues it instead of adding a row.
    async fn restore(&mut self) {
        match self.store.connectivity_current(KIND_INTERNET, NAME.into()).await {
            Ok(Some(row)) => {
                let since = row.started_at.as_ref().map(wixprint_shared::time::ms_from_timestamp).unwrap_or(0);
                tracing::info!(state = %row.to_state, since_ms = since, "last recorded internet state; the first probe round decides");
                self.recorded = Some((row.to_state, since));
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = format!("{e:#}"), "reading the last internet state failed"),
        }
    }

    async fn prune(&self) {
        let cutoff = now_ms().saturating_sub(i64::try_from(self.settings.retention.as_millis()).unwrap_or(i64::MAX));
        match self.store.prune_connectivity(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned old connectivity events"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "pruning connectivity events failed"),
        }
    }

    /// Feeds one round to the debouncer; a confirmed change is recorded and shown.
    async fn apply(&mut self, obs: &Observation) {
        let Some(confirmed) = self.debouncer.observe(obs.state) else {
            if self.debouncer.current() == Some(obs.state) {
                // Same state, maybe other reasons (another probe failing now): keep the detail current.
                self.state.send_if_modified(|c| {
                    let changed = c.detail != obs.detail;
                    if changed {
                        c.detail.clone_from(&obs.detail);
                    }
                    changed
                });
            } else {
                tracing::debug!(observed = obs.state, detail = %obs.detail, "internet probe disagrees; not confirmed yet");
            }
            return;
        };
        let since = match &self.recorded {
            Some((state, since)) if *state == confirmed => *since,
            previous => {
                let from = previous.as_ref().map_or(STATE_UNKNOWN, |(s, _)| s.as_str()).to_owned();
                if confirmed == STATE_ONLINE {
                    tracing::info!(from = %from, detail = %obs.detail, "internet is online");
                } else {
                    tracing::warn!(from = %from, state = %confirmed, detail = %obs.detail, "internet is {confirmed}");
                }
                let recorded = self
                    .store
                    .record_connectivity_change(
                        KIND_INTERNET,
                        NAME.into(),
                        from,
                        confirmed.clone(),
                        obs.detail.clone(),
                        obs.at_ms,
                    )
                    .await;
                if let Err(e) = recorded {
                    // The live state still changes; the next change closes whatever row is open.
                    tracing::error!(error = format!("{e:#}"), "recording the internet state change failed");
                }
                obs.at_ms
            }
        };
        self.recorded = Some((confirmed.clone(), since));
        self.state.send_replace(component(&confirmed, since, obs.detail.clone()));
    }

    /// What `check_now` answers for this round.
    fn answer(&self, obs: &Observation) -> Component {
        let confirmed = self.state.borrow().clone();
        if confirmed.state == obs.state {
            return Component { detail: obs.detail.clone(), ..confirmed };
        }
        let detail = format!(
            "{} (not confirmed: the recorded state stays {} until {} probe rounds in a row agree)",
            obs.detail, confirmed.state, self.settings.debounce
        );
        component(obs.state, obs.at_ms, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_millis(500);

    /// A listener that accepts (and drops) connections until dropped.
    struct Up {
        addr: SocketAddr,
        task: tokio::task::JoinHandle<()>,
    }

    impl Up {
        async fn bind(addr: &str) -> Up {
            let listener = TcpListener::bind(addr).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                }
            });
            Up { addr, task }
        }

        fn target(&self) -> ProbeTarget {
            ProbeTarget { host: "127.0.0.1".into(), port: self.addr.port() }
        }

        /// Closes the listener: connects are refused from now on.
        async fn close(self) -> SocketAddr {
            self.task.abort();
            let _ = self.task.await;
            self.addr
        }
    }

    /// A port nobody listens on: connects are refused.
    async fn closed_target() -> ProbeTarget {
        let port = Up::bind("127.0.0.1:0").await.close().await.port();
        ProbeTarget { host: "127.0.0.1".into(), port }
    }

    fn settings(probes: Vec<ProbeTarget>, debounce: u32) -> InternetSettings {
        InternetSettings {
            probes,
            // Only check_now drives rounds after the first, so every observation is counted.
            interval: Duration::from_secs(3600),
            timeout: T,
            debounce,
            retention: Duration::from_secs(86_400),
        }
    }

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("ingest.db"), Duration::from_secs(5)).unwrap()
    }

    /// Starts a monitor and waits (on its watch channel) for the first round to be applied.
    async fn start(settings: InternetSettings, store: Store) -> (InternetHandle, CancellationToken) {
        let (monitor, handle) = InternetMonitor::new(settings, store);
        let token = CancellationToken::new();
        tokio::spawn(monitor.run(token.clone()));
        let mut rx = handle.watch();
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|c| c.state != STATE_UNKNOWN))
            .await
            .expect("first round within 5 s")
            .unwrap();
        (handle, token)
    }

    #[test]
    fn probe_targets_parse_and_bad_ones_say_why() {
        let p = parse_probes("www.wixapis.com:443, tcp://1.1.1.1:443,[::1]:80,").unwrap();
        assert_eq!(p[0], ProbeTarget { host: "www.wixapis.com".into(), port: 443 });
        assert_eq!(p[1], ProbeTarget { host: "1.1.1.1".into(), port: 443 });
        assert_eq!(p[2], ProbeTarget { host: "::1".into(), port: 80 });
        assert_eq!(p[2].to_string(), "[::1]:80");
        for (bad, why) in [
            ("", "no probe targets"),
            ("example.com", "no port"),
            ("example.com:0", "not a port"),
            ("example.com:http", "not a port"),
            ("https://example.com:443", "only tcp://"),
            ("::1:443", "[address]:port"),
            (":443", "no valid host"),
        ] {
            let err = parse_probes(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[tokio::test]
    async fn all_probes_up_is_online() {
        let (a, b) = (Up::bind("127.0.0.1:0").await, Up::bind("127.0.0.1:0").await);
        let obs = observe(&[a.target(), b.target()], T).await;
        assert_eq!(obs.state, STATE_ONLINE, "{obs:?}");
        assert_eq!(obs.detail, "2 of 2 probes connected");
        assert!(obs.outcomes.iter().all(|o| o.error.is_none()));
    }

    #[tokio::test]
    async fn one_of_two_is_degraded_and_names_the_failed_probe() {
        let up = Up::bind("127.0.0.1:0").await;
        let down = closed_target().await;
        let obs = observe(&[up.target(), down.clone()], T).await;
        assert_eq!(obs.state, STATE_DEGRADED, "{obs:?}");
        assert!(obs.detail.starts_with("1 of 2 probes connected; failed: "), "{}", obs.detail);
        assert!(obs.detail.contains(&down.to_string()), "{}", obs.detail);
        assert!(obs.detail.to_lowercase().contains("refused"), "{}", obs.detail);
        assert!(!obs.detail.contains(&up.target().to_string()), "{}", obs.detail);
    }

    #[tokio::test]
    async fn none_up_is_offline() {
        let obs = observe(&[closed_target().await, closed_target().await], T).await;
        assert_eq!(obs.state, STATE_OFFLINE, "{obs:?}");
        assert!(obs.detail.starts_with("0 of 2 probes connected"), "{}", obs.detail);
        assert_eq!(obs.outcomes.iter().filter(|o| o.error.is_some()).count(), 2);
    }

    #[tokio::test]
    async fn a_probe_that_gets_no_answer_fails_after_the_timeout() {
        // This sandbox (and some networks) answer every outbound connect, so a "non-routable"
        // address is not a reliable blackhole. A listener whose accept queue is full is: the
        // kernel drops further SYNs and the connect hangs until the probe gives up.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                _ => break,
            }
        }
        let target = ProbeTarget { host: "127.0.0.1".into(), port: addr.port() };
        let timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let obs = observe(&[target.clone(), target.clone(), target], timeout).await;
        let took = started.elapsed();
        assert_eq!(obs.state, STATE_OFFLINE, "{obs:?}");
        assert!(obs.detail.starts_with("0 of 3 probes connected"), "{}", obs.detail);
        assert_eq!(obs.detail.matches("no connection within 200 ms").count(), 3, "{}", obs.detail);
        // The probes run at once: the round takes one timeout, not three.
        assert!(took >= timeout && took < Duration::from_millis(550), "round took {took:?}");
        drop(listener);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_needs_debounce_rounds_in_a_row_and_each_is_one_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let up = Up::bind("127.0.0.1:0").await;
        let (handle, token) = start(settings(vec![up.target()], 3), store.clone()).await;
        let first = handle.component();
        assert_eq!(first.state, STATE_ONLINE, "the first round is accepted at once");

        let addr = up.close().await;
        for n in 1..3 {
            let seen = handle.check_now().await.unwrap();
            assert_eq!(seen.state, STATE_OFFLINE, "check_now answers what it saw");
            assert!(seen.detail.contains("not confirmed"), "{}", seen.detail);
            assert_eq!(handle.component().state, STATE_ONLINE, "not confirmed after {n} round(s)");
        }
        let seen = handle.check_now().await.unwrap();
        assert_eq!(seen.state, STATE_OFFLINE);
        assert!(!seen.detail.contains("not confirmed"), "{}", seen.detail);
        let now = handle.component();
        assert_eq!(now.state, STATE_OFFLINE, "confirmed on the third round in a row");
        assert!(now.detail.contains(&addr.port().to_string()), "{}", now.detail);

        // One round back online then offline again resets the count.
        let up = Up::bind(&addr.to_string()).await;
        assert_eq!(handle.check_now().await.unwrap().state, STATE_ONLINE);
        let addr = up.close().await;
        assert_eq!(handle.check_now().await.unwrap().state, STATE_OFFLINE);
        assert_eq!(handle.component().state, STATE_OFFLINE);

        let rows = store.list_connectivity(Some(KIND_INTERNET.into()), None, 0).await.unwrap();
        let changes: Vec<_> = rows.iter().map(|r| (r.from_state.as_str(), r.to_state.as_str())).collect();
        assert_eq!(changes, [(STATE_ONLINE, STATE_OFFLINE), (STATE_UNKNOWN, STATE_ONLINE)], "newest first");
        assert!(rows[0].ended_at.is_none() && rows[1].ended_at.is_some());
        assert!(rows[0].detail.contains(&addr.port().to_string()), "{}", rows[0].detail);
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_continues_the_open_row_or_records_what_the_first_round_saw() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let up = Up::bind("127.0.0.1:0").await;
        let (handle, token) = start(settings(vec![up.target()], 3), store.clone()).await;
        let before = handle.component();
        token.cancel();

        // Same state after the restart: the row continues, `since` is the original one.
        let (handle, token) = start(settings(vec![up.target()], 3), store.clone()).await;
        let after = handle.component();
        assert_eq!(after.state, STATE_ONLINE);
        assert_eq!(after.since, before.since);
        assert_eq!(store.list_connectivity(None, None, 0).await.unwrap().len(), 1);
        token.cancel();

        // Down at the restart: the first round decides at once, despite debounce 3.
        let addr = up.close().await;
        let target = ProbeTarget { host: "127.0.0.1".into(), port: addr.port() };
        let (handle, token) = start(settings(vec![target], 3), store.clone()).await;
        assert_eq!(handle.component().state, STATE_OFFLINE);
        let rows = store.list_connectivity(None, None, 0).await.unwrap();
        assert_eq!((rows[0].from_state.as_str(), rows[0].to_state.as_str()), (STATE_ONLINE, STATE_OFFLINE));
        assert_eq!(rows.len(), 2);
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn old_closed_rows_are_pruned_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let day = 86_400_000;
        let old = now_ms() - 40 * day;
        store
            .record_connectivity_change(
                KIND_INTERNET,
                NAME.into(),
                "unknown".into(),
                "online".into(),
                String::new(),
                old,
            )
            .await
            .unwrap();
        store
            .record_connectivity_change(
                KIND_INTERNET,
                NAME.into(),
                "online".into(),
                "offline".into(),
                String::new(),
                old + 1000,
            )
            .await
            .unwrap();
        store
            .record_connectivity_change(
                KIND_INTERNET,
                NAME.into(),
                "offline".into(),
                "online".into(),
                String::new(),
                now_ms() - day,
            )
            .await
            .unwrap();
        let up = Up::bind("127.0.0.1:0").await;
        let mut s = settings(vec![up.target()], 2);
        s.retention = Duration::from_secs(30 * 86_400);
        let (handle, token) = start(s, store.clone()).await;
        let rows = store.list_connectivity(None, None, 0).await.unwrap();
        let kept: Vec<_> = rows.iter().map(|r| r.to_state.as_str()).collect();
        // The two rows that ended 40 days ago went; the one that ended yesterday and the open one stay.
        assert_eq!(kept, [STATE_ONLINE, STATE_OFFLINE], "newest first: the open row, then yesterday's");
        assert_eq!(handle.component().state, STATE_ONLINE);
        token.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_monitor_keeps_probing_and_recording_after_every_handle_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let up = Up::bind("127.0.0.1:0").await;
        let fast = InternetSettings { interval: Duration::from_millis(20), ..settings(vec![up.target()], 1) };
        let (monitor, handle) = InternetMonitor::new(fast, store.clone());
        let mut rx = handle.watch();
        drop(handle);
        let token = CancellationToken::new();
        let task = tokio::spawn(monitor.run(token.clone()));
        let within = Duration::from_secs(5);
        tokio::time::timeout(within, rx.wait_for(|c| c.state == STATE_ONLINE)).await.unwrap().unwrap();
        up.close().await;
        tokio::time::timeout(within, rx.wait_for(|c| c.state == STATE_OFFLINE)).await.unwrap().unwrap();
        assert_eq!(store.list_connectivity(None, None, 0).await.unwrap().len(), 2);
        token.cancel();
        tokio::time::timeout(within, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn check_now_fails_clearly_when_the_monitor_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let (monitor, handle) = InternetMonitor::new(settings(vec![closed_target().await], 2), store(&dir));
        drop(monitor);
        let err = handle.check_now().await.unwrap_err();
        assert!(format!("{err:#}").contains("not running"), "{err:#}");
        assert_eq!(handle.component().state, STATE_UNKNOWN);
    }
}
