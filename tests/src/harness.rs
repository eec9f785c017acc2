//! Starts the real `wix-ingest` and `wix-print` binaries on 127.0.0.1 with temporary state,
//! the printer simulator, and a generated webhook key, and gives tests typed handles.
//!
//! Readiness is the services' own `READY=1` systemd notification, received on a socket the
//! harness passes as `NOTIFY_SOCKET`: no sleeping, no guessing.
//!
//! Each stack has its own connectivity bus ports (so parallel tests never hear each other)
//! and its own "internet": a local TCP listener that wix-ingest's internet monitor probes,
//! which a test can cut and restore ([`Stack::cut_internet`], [`Stack::restore_internet`]).
//!
//! Tokens: by default both services run with their bearer tokens (`INGEST_ADMIN_TOKEN_FILE`,
//! `PRINT_ADMIN_TOKEN_FILE`, `PRINT_SUBMIT_TOKEN_FILE`, files in the stack's directory), and the
//! harness's admin clients send them; [`StackOptions::without_tokens`] runs both open (loopback).
//!
//! A moveable wall clock: [`StackOptions::fake_clock`] starts the named services under
//! libfaketime (Debian package `faketime`, installed by `scripts/install-deps.sh`) with the
//! monotonic clock left real, and [`Stack::step_clock`] steps their wall clock at run time, as
//! a Raspberry Pi without a real-time clock does at boot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::{TcpListener, UnixDatagram};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use wixprint_shared::auth::{ClientAuth, Secret};
use wixprint_shared::proto::print::print_service_client::PrintServiceClient;

use wixprint_shared::proto::ingest::ingest_admin_client::IngestAdminClient;
use wixprint_shared::proto::print::print_admin_client::PrintAdminClient;
use wixprint_shared::proto::print::{self as papi, JobState};

use crate::sim::PrinterSim;
use crate::webhook::KeyPair;

/// Directory holding the workspace binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

pub fn bin_path(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A free TCP port on 127.0.0.1 (bound and released; the services bind it right after).
/// Picked below Linux's ephemeral range (32768+), where the many short client connections
/// of a test run (one per printed ticket) cannot take it in the meantime.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = 20_000 + (rand::random::<u16>() % 12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// `n` distinct free ports (two calls to [`free_port`] may pick the same one).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut ports = [0u16; N];
    let mut chosen = 0;
    while chosen < N {
        let p = free_port();
        if !ports[..chosen].contains(&p) {
            ports[chosen] = p;
            chosen += 1;
        }
    }
    ports
}

/// "The internet" of one stack: a local TCP listener that accepts (and drops) every
/// connection, which wix-ingest's internet monitor probes. Cutting it closes the listener, so
/// probes are refused; restoring binds the same port again.
pub struct FakeInternet {
    addr: SocketAddr,
    up: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl FakeInternet {
    /// Binds a free port below the ephemeral range and starts accepting.
    pub async fn start() -> anyhow::Result<FakeInternet> {
        let mut internet = FakeInternet { addr: SocketAddr::from(([127, 0, 0, 1], free_port())), up: None };
        internet.restore().await?;
        Ok(internet)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The probe target for `INGEST_INTERNET_PROBES`.
    pub fn probe(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    pub fn is_up(&self) -> bool {
        self.up.is_some()
    }

    /// Closes the listener: from now on every probe is refused. Returns once it is closed.
    pub async fn cut(&mut self) {
        if let Some((stop, task)) = self.up.take() {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// Binds the same port again and accepts; retries for a few seconds while the port is
    /// briefly unavailable.
    pub async fn restore(&mut self) -> anyhow::Result<()> {
        if self.up.is_some() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, addr = %self.addr, "fake internet: re-binding, retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("binding the fake internet on {}", self.addr)),
            }
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            drop(stream);
                        }
                    }
                }
            }
            // The listener is dropped here: the port is closed when `cut` returns.
        });
        self.up = Some((stop, task));
        Ok(())
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.up {
            stop.cancel();
        }
    }
}

/// Where libfaketime is: `FAKETIME_LIB` if set, else Debian's path for this architecture.
pub fn libfaketime() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("FAKETIME_LIB") {
        return Ok(PathBuf::from(p));
    }
    let candidates = [
        format!("/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1", std::env::consts::ARCH),
        "/usr/lib/faketime/libfaketime.so.1".to_owned(),
    ];
    candidates.iter().map(PathBuf::from).find(|p| p.exists()).with_context(|| {
        format!(
            "libfaketime not found ({candidates:?}): install it with scripts/install-deps.sh (apt-get install faketime)"
        )
    })
}

/// A wall clock the test can step: the offset libfaketime reads (`FAKETIME_TIMESTAMP_FILE`,
/// re-read on every call with `FAKETIME_NO_CACHE=1`). Monotonic clocks stay real
/// (`FAKETIME_DONT_FAKE_MONOTONIC=1`), so a service's timers keep running while its wall
/// clock jumps.
pub struct FakeClock {
    file: PathBuf,
    offset_secs: i64,
}

/// Which way [`Stack::step_clock`] moves the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Forward,
    Back,
}

impl FakeClock {
    pub fn new(dir: &Path) -> anyhow::Result<FakeClock> {
        let clock = FakeClock { file: dir.join("faketime.rc"), offset_secs: 0 };
        clock.write()?;
        Ok(clock)
    }

    /// The environment that starts a process under this clock.
    pub fn env(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(vec![
            ("LD_PRELOAD".into(), libfaketime()?.display().to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), self.file.display().to_string()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
        ])
    }

    /// The offset from the real wall clock now.
    pub fn offset(&self) -> Duration {
        Duration::from_secs(self.offset_secs.unsigned_abs())
    }

    /// Steps the faked wall clock by `by` (whole seconds) in `dir`; every faked process sees
    /// the new time on its next clock read.
    pub fn step(&mut self, by: Duration, dir: Step) -> anyhow::Result<()> {
        let secs = i64::try_from(by.as_secs())?;
        self.offset_secs += if dir == Step::Forward { secs } else { -secs };
        self.write()
    }

    fn write(&self) -> anyhow::Result<()> {
        // Written aside and renamed, so a process never reads half a line.
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{:+}\n", self.offset_secs))?;
        std::fs::rename(&tmp, &self.file)?;
        Ok(())
    }
}

/// One service process with its environment, restartable.
pub struct Service {
    pub name: &'static str,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Soft `RLIMIT_NOFILE` for the process (`ulimit -n`), if set.
    nofile: Option<u64>,
    /// The notifications received after READY=1 (each datagram with when it arrived), and the
    /// task that receives them, for the current start.
    notifications: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, String)>>>,
    notify_task: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    pub fn new(name: &'static str, dir: &Path, env: BTreeMap<String, String>) -> Self {
        // WIXPRINT_SERVICE_DIR: run the services from another build (the Pi's aarch64 release
        // binaries in scripts/pi-smoke.sh), with WIXPRINT_SERVICE_WRAPPER in front (e.g.
        // "qemu-aarch64-static -L /usr/aarch64-linux-gnu").
        let binary = std::env::var_os("WIXPRINT_SERVICE_DIR")
            .map(|d| PathBuf::from(d).join(name))
            .unwrap_or_else(|| bin_path(name));
        Self {
            name,
            binary,
            env,
            dir: dir.to_owned(),
            child: None,
            starts: 0,
            nofile: None,
            notifications: Default::default(),
            notify_task: None,
        }
    }

    pub fn set_env(&mut self, k: &str, v: impl Into<String>) {
        self.env.insert(k.to_owned(), v.into());
    }

    /// Starts the process with this soft descriptor limit (as `ulimit -n` would).
    pub fn set_nofile(&mut self, soft: u64) {
        self.nofile = Some(soft);
    }

    /// The process's resident memory (VmRSS) in KiB, from `/proc`.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
        Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// The service's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the process to exit on its own; its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let c = self.child.as_mut().context("not running")?;
        let status = tokio::time::timeout(timeout, c.wait())
            .await
            .with_context(|| format!("{} still running after {timeout:?}", self.name))??;
        self.child = None;
        Ok(status)
    }

    /// Starts the process and waits for its READY=1.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.binary.exists(),
            "{} not found: build the workspace binaries first (cargo build --workspace)",
            self.binary.display()
        );
        self.starts += 1;
        let sock_path = self.dir.join(format!("{}-notify-{}.sock", self.name, self.starts));
        let _ = std::fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path).context("binding the notify socket")?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let wrapper: Vec<String> = std::env::var("WIXPRINT_SERVICE_WRAPPER")
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        cmd.envs(&self.env)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", self.env.get("RUST_LOG").cloned().unwrap_or_else(|| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(soft) = self.nofile {
            // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe and
            // the closure allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    use nix::sys::resource::{Resource, getrlimit, setrlimit};
                    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
                    setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard)?;
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().with_context(|| format!("spawning {}", self.binary.display()))?;
        let mut buf = vec![0u8; 4096];
        let ready = async {
            loop {
                let n = sock.recv(&mut buf).await?;
                if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                    return anyhow::Ok(());
                }
            }
        };
        tokio::select! {
            r = ready => r?,
            status = child.wait() => bail!("{} exited before it was ready ({:?}):\n{}", self.name, status?, self.log()),
            _ = tokio::time::sleep(Duration::from_secs(60)) => bail!("{} not ready within 60 s:\n{}", self.name, self.log()),
        }
        // Every later datagram (WATCHDOG=1, STATUS=, STOPPING=1) is kept for the test.
        if let Some(t) = self.notify_task.take() {
            t.abort();
        }
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        self.notifications = received.clone();
        self.notify_task = Some(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                received.lock().unwrap().push((std::time::Instant::now(), text));
            }
        }));
        self.child = Some(child);
        Ok(())
    }

    /// The notifications (datagrams, with their arrival) received since READY=1 of the current start.
    pub fn notifications(&self) -> Vec<(std::time::Instant, String)> {
        self.notifications.lock().unwrap().clone()
    }

    /// When each `WATCHDOG=1` of the current start arrived.
    pub fn watchdog_pings(&self) -> Vec<std::time::Instant> {
        self.notifications()
            .into_iter()
            .filter(|(_, text)| text.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(at, _)| at)
            .collect()
    }

    /// SIGKILL: no drain, no goodbye (a crash or power loss of the process).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// SIGTERM, then waits for the exit; returns how long it took and the exit status.
    pub async fn terminate(&mut self) -> anyhow::Result<(Duration, std::process::ExitStatus)> {
        let mut c = self.child.take().context("not running")?;
        let pid = c.id().context("no pid")?;
        let started = std::time::Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)?;
        let status =
            tokio::time::timeout(Duration::from_secs(30), c.wait()).await.context("did not exit within 30 s")??;
        Ok((started.elapsed(), status))
    }
}

/// An admin or submit client of the stack, sending its token when the stack has tokens.
pub type IngestAdmin = IngestAdminClient<InterceptedService<Channel, ClientAuth>>;
pub type PrintAdmin = PrintAdminClient<InterceptedService<Channel, ClientAuth>>;
pub type PrintSubmit = PrintServiceClient<InterceptedService<Channel, ClientAuth>>;

/// The three bearer tokens of a stack (each also in a file in the stack's directory).
#[derive(Clone, Debug)]
pub struct Tokens {
    pub ingest_admin: String,
    pub print_admin: String,
    pub submit: String,
}

impl Tokens {
    fn generate() -> Tokens {
        let token = |what: &str| format!("{what}-{:032x}", rand::random::<u128>());
        Tokens { ingest_admin: token("ingest-admin"), print_admin: token("print-admin"), submit: token("submit") }
    }
}

/// A client that sends `authorization: Bearer <token>` (none when `token` is `None`).
pub fn client_auth(token: Option<&str>) -> ClientAuth {
    ClientAuth::new(token.map(|t| Secret::new(t).expect("a valid test token")).as_ref())
}

/// Options for [`Stack::start`].
#[derive(Default, Clone)]
pub struct StackOptions {
    /// Run both services without tokens (open gRPC on loopback).
    pub no_tokens: bool,
    /// Extra environment for wix-print.
    pub print_env: Vec<(String, String)>,
    /// Extra environment for wix-ingest.
    pub ingest_env: Vec<(String, String)>,
    /// Leave wix-print stopped (start it later with `stack.print.start()`).
    pub print_stopped: bool,
    /// Turn the order sync on against this Wix API: (base URL, API key, site id).
    pub wix_api: Option<(String, String, String)>,
    /// Services ("wix-ingest", "wix-print") started under a wall clock the test can step
    /// ([`Stack::step_clock`]); all of them share one clock.
    pub fake_clock: Vec<&'static str>,
    /// wix-ingest's soft descriptor limit (`ulimit -n`), if set.
    pub ingest_nofile: Option<u64>,
}

impl StackOptions {
    pub fn print_env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.print_env.push((k.into(), v.into()));
        self
    }
    pub fn ingest_env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.ingest_env.push((k.into(), v.into()));
        self
    }
    /// Both services without tokens: their gRPC services are open (loopback only).
    pub fn without_tokens(mut self) -> Self {
        self.no_tokens = true;
        self
    }
    pub fn print_stopped(mut self) -> Self {
        self.print_stopped = true;
        self
    }
    /// Starts `service` ("wix-ingest" or "wix-print") under libfaketime: see [`Stack::step_clock`].
    pub fn fake_clock(mut self, service: &'static str) -> Self {
        self.fake_clock.push(service);
        self
    }
    /// Starts wix-ingest with this soft `RLIMIT_NOFILE` (as under `ulimit -n`).
    pub fn ingest_nofile(mut self, soft: u64) -> Self {
        self.ingest_nofile = Some(soft);
        self
    }
    /// Turns the order sync on against `base_url` with this key and site id.
    pub fn wix_api(mut self, base_url: &str, api_key: &str, site_id: &str) -> Self {
        self.wix_api = Some((base_url.into(), api_key.into(), site_id.into()));
        self
    }
}

/// Both services, the simulator and a webhook key, in one temp dir.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub sim: PrinterSim,
    pub keys: &'static KeyPair,
    pub ingest: Service,
    pub print: Service,
    pub http_url: String,
    pub ingest_grpc: String,
    pub print_grpc: String,
    /// Connectivity bus endpoints: wix-ingest's PUB (`INGEST_PUB_ADDR`) and wix-print's
    /// (`PRINT_PUB_ADDR`); both services get both.
    pub ingest_pub_addr: String,
    pub print_pub_addr: String,
    /// What wix-ingest's internet monitor probes (`INGEST_INTERNET_PROBES`).
    pub internet: FakeInternet,
    /// The wall clock of the services in [`StackOptions::fake_clock`], if any.
    pub clock: Option<FakeClock>,
    /// The bearer tokens both services run with (`None` with [`StackOptions::without_tokens`]).
    pub tokens: Option<Tokens>,
    http: reqwest::Client,
}

impl Stack {
    /// Starts the stack; retried (with new ports) when another process took a port between
    /// choosing and binding it.
    pub async fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(opts.clone()).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => continue,
                other => return other,
            }
        }
    }

    async fn start_once(opts: StackOptions) -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let keys = KeyPair::shared();
        let key_file = dir.path().join("wix-public.pem");
        std::fs::write(&key_file, &keys.public_pem)?;
        let sim = PrinterSim::start("127.0.0.1:0").await?;
        let [http_port, ingest_port, print_port, ingest_pub_port, print_pub_port] = free_ports::<5>();
        let print_grpc = format!("127.0.0.1:{print_port}");
        let ingest_grpc = format!("127.0.0.1:{ingest_port}");
        let ingest_pub_addr = format!("tcp://127.0.0.1:{ingest_pub_port}");
        let print_pub_addr = format!("tcp://127.0.0.1:{print_pub_port}");
        let internet = FakeInternet::start().await?;
        // Both services read both bus endpoints (each binds its own and connects to the other).
        let bus_env = [
            ("INGEST_PUB_ADDR", ingest_pub_addr.clone()),
            ("PRINT_PUB_ADDR", print_pub_addr.clone()),
            ("BUS_HEARTBEAT_MS", "200".to_owned()),
            ("BUS_STALE_MS", "1000".to_owned()),
        ];

        let mut penv = BTreeMap::new();
        penv.insert("PRINT_GRPC_ADDR".into(), print_grpc.clone());
        penv.insert("PRINT_DB_PATH".into(), dir.path().join("print.db").display().to_string());
        penv.insert("PRINTER_URL".into(), sim.url());
        penv.insert("PRINT_TIME_ZONE".into(), "Europe/Zurich".into());
        penv.insert("PRINT_OFFLINE_POLL_MS".into(), "100".into());
        penv.insert("PRINT_STATUS_TIMEOUT_MS".into(), "500".into());
        penv.insert("PRINT_RETRY_BACKOFF_MIN_MS".into(), "50".into());
        penv.insert("PRINT_RETRY_BACKOFF_MAX_MS".into(), "500".into());
        // The test machine's own disk is not what a test is about (a full CI disk would make
        // the disk check critical: NOT_SERVING, a health alert); tests/health.rs sets its own.
        for level in ["WARN", "CRIT", "EMERGENCY"] {
            penv.insert(format!("PRINT_HEALTH_DISK_{level}_PCT"), "0".into());
        }
        penv.extend(bus_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        penv.extend(opts.print_env);
        let mut ienv = BTreeMap::new();
        ienv.insert("INGEST_HTTP_ADDR".into(), format!("127.0.0.1:{http_port}"));
        ienv.insert("INGEST_GRPC_ADDR".into(), ingest_grpc.clone());
        ienv.insert("INGEST_DB_PATH".into(), dir.path().join("ingest.db").display().to_string());
        ienv.insert("WIX_WEBHOOK_PUBLIC_KEY_FILE".into(), key_file.display().to_string());
        ienv.insert("PRINT_SERVICE_URL".into(), format!("http://{print_grpc}"));
        ienv.insert("INGEST_OUTBOX_BACKOFF_MIN_MS".into(), "50".into());
        ienv.insert("INGEST_OUTBOX_BACKOFF_MAX_MS".into(), "500".into());
        for level in ["WARN", "CRIT", "EMERGENCY"] {
            ienv.insert(format!("INGEST_HEALTH_DISK_{level}_PCT"), "0".into());
        }
        ienv.extend(bus_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        ienv.insert("INGEST_INTERNET_PROBES".into(), internet.probe());
        ienv.insert("INGEST_INTERNET_INTERVAL_MS".into(), "100".into());
        if let Some((url, key, site)) = &opts.wix_api {
            let key_file = dir.path().join("wix-api-key");
            std::fs::write(&key_file, key)?;
            ienv.insert("WIX_API_BASE_URL".into(), url.clone());
            ienv.insert("WIX_API_KEY_FILE".into(), key_file.display().to_string());
            ienv.insert("WIX_SITE_ID".into(), site.clone());
            // Quick Wix retries and a short breaker window; tests override them.
            ienv.insert("INGEST_WIX_RETRY_FIRST_MS".into(), "20".into());
            ienv.insert("INGEST_WIX_RETRY_MAX_MS".into(), "200".into());
            ienv.insert("INGEST_WIX_BREAKER_OPEN_MS".into(), "500".into());
        }
        ienv.extend(opts.ingest_env);

        let tokens = (!opts.no_tokens).then(Tokens::generate);
        if let Some(t) = &tokens {
            let write = |name: &str, token: &str| -> anyhow::Result<String> {
                let path = dir.path().join(name);
                // Trailing newline on purpose: token files are trimmed.
                std::fs::write(&path, format!("{token}\n"))?;
                Ok(path.display().to_string())
            };
            let (ingest_admin, print_admin, submit) = (
                write("ingest-admin.token", &t.ingest_admin)?,
                write("print-admin.token", &t.print_admin)?,
                write("print-submit.token", &t.submit)?,
            );
            // Explicit test settings win (`or_insert`).
            ienv.entry("INGEST_ADMIN_TOKEN_FILE".into()).or_insert(ingest_admin);
            ienv.entry("PRINT_SUBMIT_TOKEN_FILE".into()).or_insert(submit.clone());
            penv.entry("PRINT_ADMIN_TOKEN_FILE".into()).or_insert(print_admin);
            penv.entry("PRINT_SUBMIT_TOKEN_FILE".into()).or_insert(submit);
        }
        let clock = if opts.fake_clock.is_empty() { None } else { Some(FakeClock::new(dir.path())?) };
        if let Some(clock) = &clock {
            for (name, env) in [("wix-print", &mut penv), ("wix-ingest", &mut ienv)] {
                if opts.fake_clock.contains(&name) {
                    env.extend(clock.env()?);
                }
            }
        }
        let mut print = Service::new("wix-print", dir.path(), penv);
        let mut ingest = Service::new("wix-ingest", dir.path(), ienv);
        if let Some(n) = opts.ingest_nofile {
            ingest.set_nofile(n);
        }
        if !opts.print_stopped {
            print.start().await?;
        }
        ingest.start().await?;
        Ok(Stack {
            dir,
            sim,
            keys,
            ingest,
            print,
            http_url: format!("http://127.0.0.1:{http_port}"),
            ingest_grpc,
            print_grpc,
            ingest_pub_addr,
            print_pub_addr,
            internet,
            clock,
            tokens,
            http: reqwest::Client::new(),
        })
    }

    /// Steps the wall clock of the services started with [`StackOptions::fake_clock`] by `by`
    /// (whole seconds) in `dir`; their monotonic clocks keep running unchanged.
    pub fn step_clock(&mut self, by: Duration, dir: Step) -> anyhow::Result<()> {
        self.clock.as_mut().context("no service runs under a fake clock (StackOptions::fake_clock)")?.step(by, dir)
    }

    /// Cuts "the internet": wix-ingest's probes are refused from now on.
    pub async fn cut_internet(&mut self) {
        self.internet.cut().await;
    }

    /// Restores "the internet" on the same address.
    pub async fn restore_internet(&mut self) -> anyhow::Result<()> {
        self.internet.restore().await
    }

    /// POSTs a raw body to the webhook endpoint; returns the status code and body text.
    pub async fn post_webhook(&self, body: impl Into<reqwest::Body>) -> anyhow::Result<(u16, String)> {
        self.poster().post(body).await
    }

    /// A cheap, cloneable, `'static` handle for posting webhooks from spawned tasks.
    pub fn poster(&self) -> WebhookPoster {
        WebhookPoster { client: self.http.clone(), url: format!("{}/webhooks/wix", self.http_url) }
    }

    /// Signs an inner event with the stack's key and posts it; fails unless Wix would get 200.
    pub async fn send_event(&self, event: &serde_json::Value) -> anyhow::Result<String> {
        let (status, body) = self.post_webhook(self.keys.sign_event(event)).await?;
        anyhow::ensure!(status == 200, "webhook answered {status}: {body}");
        Ok(body)
    }

    /// A connected channel to `addr` (`host:port`).
    pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://{addr}"))?.connect().await?)
    }

    /// wix-print's admin service, with the stack's admin token.
    pub async fn print_admin(&self) -> anyhow::Result<PrintAdmin> {
        let token = self.tokens.as_ref().map(|t| t.print_admin.as_str());
        Ok(PrintAdminClient::with_interceptor(Self::channel(&self.print_grpc).await?, client_auth(token)))
    }

    /// wix-ingest's admin service, with the stack's admin token.
    pub async fn ingest_admin(&self) -> anyhow::Result<IngestAdmin> {
        let token = self.tokens.as_ref().map(|t| t.ingest_admin.as_str());
        Ok(IngestAdminClient::with_interceptor(Self::channel(&self.ingest_grpc).await?, client_auth(token)))
    }

    /// wix-print's `PrintService` as wix-ingest calls it, with the submit token.
    pub async fn print_submit(&self) -> anyhow::Result<PrintSubmit> {
        let token = self.tokens.as_ref().map(|t| t.submit.as_str());
        Ok(PrintServiceClient::with_interceptor(Self::channel(&self.print_grpc).await?, client_auth(token)))
    }

    /// grpcurl's `-H` arguments for `service` ("ingest" or "print" admin), empty without tokens.
    pub fn grpcurl_auth(&self, service: &str) -> Vec<String> {
        match (&self.tokens, service) {
            (Some(t), "ingest") => vec!["-H".into(), format!("authorization: Bearer {}", t.ingest_admin)],
            (Some(t), _) => vec!["-H".into(), format!("authorization: Bearer {}", t.print_admin)],
            (None, _) => Vec::new(),
        }
    }

    /// Jobs in wix-print (all states).
    pub async fn jobs(&self) -> anyhow::Result<Vec<papi::Job>> {
        let mut c = self.print_admin().await?;
        Ok(c.list_jobs(papi::ListJobsRequest { limit: 1000, ..Default::default() }).await?.into_inner().jobs)
    }

    /// Waits until every job is printed and ingest's outbox is empty: the pipeline is quiet.
    pub async fn wait_quiet(&self, timeout: Duration) -> anyhow::Result<()> {
        let ingest = self.ingest_admin().await?;
        let print = self.print_admin().await?;
        wait_until(timeout, "pipeline quiet", || {
            let (mut ingest, mut print) = (ingest.clone(), print.clone());
            async move {
                let st = ingest.get_status(wixprint_shared::proto::ingest::GetStatusRequest {}).await?.into_inner();
                if st.outbox_pending > 0 || st.held_events > 0 {
                    return Ok(false);
                }
                let ps = print.get_status(papi::GetStatusRequest {}).await?.into_inner();
                Ok(ps.jobs.iter().all(|c| {
                    c.count == 0
                        || matches!(
                            JobState::try_from(c.state),
                            Ok(JobState::Printed | JobState::Dead | JobState::Cancelled)
                        )
                }))
            }
        })
        .await
    }

    /// Dumps both services' logs (for a failing assertion's message).
    pub fn logs(&self) -> String {
        format!("--- wix-ingest ---\n{}\n--- wix-print ---\n{}", self.ingest.log(), self.print.log())
    }
}

/// Posts webhook bodies to one wix-ingest.
#[derive(Clone)]
pub struct WebhookPoster {
    client: reqwest::Client,
    pub url: String,
}

impl WebhookPoster {
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> anyhow::Result<(u16, String)> {
        let resp = self.client.post(&self.url).header("content-type", "text/plain").body(body).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }
}

/// Raises this process's soft descriptor limit to its hard limit (tests that open many
/// connections); returns the new soft limit.
pub fn raise_nofile_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// Polls `check` every 20 ms until it returns true, or fails after `timeout`. For conditions
/// only visible through the admin API (state in another process); the services' own
/// readiness is awaited on their notifications instead.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
