//! One connection to a printer: status reads, sending a job and waiting for the printer's own
//! word that it is on paper; and the [`Link`], the one persistent connection per printer that
//! status polls and jobs share (Epson TM printers serve one TCP connection at a time).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use wixprint_shared::breaker::{Admission, Breaker, BreakerConfig};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use wixprint_shared::backoff::Backoff;

use super::device::{Device, Io};
use super::monitor::Monitor;
use super::reply::{Reply, ReplyParser, process_id_request};
use super::status::{PrinterStatus, State, asb_state};
use super::url::PrinterUrl;

/// Why a print did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrintError {
    /// Nothing was sent: connection refused or timed out.
    #[error("printer unreachable: {0}")]
    Unreachable(String),
    /// Nothing was sent: the printer answered but cannot print now.
    #[error("printer not ready: {}", .0.state().as_str())]
    NotReady(PrinterStatus),
    /// Nothing was sent: the printer accepted the connection but did not answer status.
    #[error("printer does not answer status requests: {0}")]
    Silent(String),
    /// Bytes went out and the outcome is unknown: the ticket may or may not be on paper.
    #[error("print outcome unknown: {0}")]
    Interrupted(String),
    /// The printer stopped while holding the ticket and the caller gave up waiting (failover):
    /// its buffer was cleared when the printer allowed it (`cleared`); the outcome is unknown.
    #[error("printer stopped while holding the ticket; gave up waiting ({detail})")]
    Abandoned { detail: String, cleared: bool },
    /// Nothing was tried: the printer's circuit breaker is open for this much longer.
    #[error("circuit breaker open for {} ms more (last failure: {reason})", .retry_in.as_millis())]
    BreakerOpen { retry_in: Duration, reason: String },
}

impl PrintError {
    /// The failure class (issue 11): nothing sent is waiting; bytes out and no word back is
    /// transient (retried with backoff, counted by the breaker).
    pub fn class(&self) -> wixprint_shared::failure::FailureClass {
        use wixprint_shared::failure::FailureClass;
        match self {
            PrintError::Interrupted(_) => FailureClass::Transient,
            PrintError::Unreachable(_)
            | PrintError::NotReady(_)
            | PrintError::Silent(_)
            | PrintError::Abandoned { .. }
            | PrintError::BreakerOpen { .. } => FailureClass::Waiting,
        }
    }
}

/// How the printer confirms that a ticket is on paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// `GS ( H` process-ID response (Epson TM).
    ProcessId,
    /// `GS r 1` read-back after the cut, then `DLE EOT` (clones and emulators without `GS ( H`).
    Status,
}

impl Confirmation {
    pub fn as_str(self) -> &'static str {
        match self {
            Confirmation::ProcessId => "process_id",
            Confirmation::Status => "status",
        }
    }
}

/// The state and monitor detail a status read gives.
pub fn describe(result: Result<PrinterStatus, PrintError>) -> (State, String) {
    match result {
        Ok(s) if s.state() == State::Online => (State::Online, String::new()),
        Ok(s) => (s.state(), format!("status bytes {:02X} {:02X} {:02X}", s.printer, s.offline_cause, s.paper)),
        // Not asked: what the printer is now is not known.
        Err(e @ PrintError::BreakerOpen { .. }) => (State::Unknown, e.to_string()),
        Err(e) => (State::Offline, e.to_string()),
    }
}

/// Reads the printer's status on a short connection of its own (`DLE EOT` 1, 2, 4): the
/// state and a detail for the monitor. Nothing is printed. The service itself goes through
/// the printer's [`Link`]; this is for tools and tests.
pub async fn probe(url: &PrinterUrl, timeouts: Timeouts) -> (State, String) {
    let result = match Connection::open(url, timeouts).await {
        Ok(mut conn) => conn.status().await,
        Err(e) => Err(e),
    };
    describe(result)
}

/// Timeouts the connection uses.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub status: Duration,
    pub confirm: Duration,
    pub poll: Duration,
}

/// `DLE DC4 fn 8`: clears the receive and print buffers (Epson; answered with `37 25 00`).
pub const DLE_DC4_CLEAR: [u8; 10] = [0x10, 0x14, 0x08, 0x01, 0x03, 0x14, 0x01, 0x06, 0x02, 0x08];

/// The process id of the `GS ( H` support probe (lower case: never a job's id).
const PROBE_ID: [u8; 4] = *b"prb0";

/// One connection to the printer.
pub struct Connection {
    stream: Box<dyn Io>,
    parser: ReplyParser,
    pending: VecDeque<Reply>,
    /// `DLE EOT n` requests sent whose replies have not been read yet, oldest first: replies
    /// come in request order, so a late reply is never taken for a newer request's.
    realtime_sent: VecDeque<u8>,
    timeouts: Timeouts,
}

/// Bound of unanswered real-time requests kept (a hostile or broken printer cannot grow it).
const MAX_REALTIME_SENT: usize = 16;

impl Connection {
    pub async fn open(url: &PrinterUrl, timeouts: Timeouts) -> Result<Self, PrintError> {
        let stream: Box<dyn Io> = match url {
            PrinterUrl::Tcp { host, port } => {
                let stream =
                    match tokio::time::timeout(timeouts.connect, TcpStream::connect((host.as_str(), *port))).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return Err(PrintError::Unreachable(format!("{url}: {e}"))),
                        Err(_) => {
                            return Err(PrintError::Unreachable(format!(
                                "{url}: connect timed out after {:?}",
                                timeouts.connect
                            )));
                        }
                    };
                let _ = stream.set_nodelay(true);
                Box::new(stream)
            }
            // An unplugged printer has no device file: unreachable, like a refused connection.
            PrinterUrl::File { path } => {
                Box::new(Device::open(path).map_err(|e| PrintError::Unreachable(format!("{url}: {e}")))?)
            }
        };
        Ok(Self {
            stream,
            parser: ReplyParser::default(),
            pending: Default::default(),
            realtime_sent: Default::default(),
            timeouts,
        })
    }

    async fn read_reply(&mut self, deadline: Instant) -> Result<Option<Reply>, std::io::Error> {
        let mut buf = [0u8; 256];
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(Some(r));
            }
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(r) => r?,
            };
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "printer closed the connection"));
            }
            let mut out = Vec::new();
            for &b in &buf[..n] {
                self.parser.feed(b, &mut out);
            }
            self.pending.extend(out);
        }
    }

    /// Sends `DLE EOT n` for each of `ns`, remembering them to pair the replies.
    async fn request_realtime(&mut self, ns: &[u8]) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(ns.len() * 3);
        for &n in ns {
            bytes.extend_from_slice(&[0x10, 0x04, n]);
        }
        if self.realtime_sent.len() + ns.len() > MAX_REALTIME_SENT {
            return Err(std::io::Error::other("too many unanswered status requests"));
        }
        self.stream.write_all(&bytes).await?;
        self.realtime_sent.extend(ns);
        Ok(())
    }

    /// Pairs a real-time reply with its request: `(n, byte)`, or `None` for a byte nobody asked for.
    fn realtime_reply(&mut self, b: u8) -> Option<(u8, u8)> {
        self.realtime_sent.pop_front().map(|n| (n, b))
    }

    /// Reads `DLE EOT` 1, 2 and 4. Nothing is printed by this.
    pub async fn status(&mut self) -> Result<PrinterStatus, PrintError> {
        self.request_realtime(&[1, 2, 4])
            .await
            .map_err(|e| PrintError::Unreachable(format!("sending DLE EOT: {e}")))?;
        let deadline = Instant::now() + self.timeouts.status;
        let mut status = PrinterStatus { printer: 0x12, offline_cause: 0x12, paper: 0x12 };
        loop {
            match self.read_reply(deadline).await {
                Ok(Some(Reply::RealTime(b))) => {
                    match self.realtime_reply(b) {
                        Some((1, b)) => status.printer = b,
                        Some((2, b)) => status.offline_cause = b,
                        Some((_, b)) => status.paper = b,
                        None => {}
                    }
                    if self.realtime_sent.is_empty() {
                        return Ok(status);
                    }
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    let n = self.realtime_sent.front().copied().unwrap_or(1);
                    return Err(PrintError::Silent(format!(
                        "no reply to DLE EOT {n} within {:?}",
                        self.timeouts.status
                    )));
                }
                Err(e) => return Err(PrintError::Unreachable(format!("reading DLE EOT: {e}"))),
            }
        }
    }

    /// Whether the printer answers `GS ( H`: sends a probe id while nothing is printing and
    /// waits the status timeout for its reply. `Err` when the connection failed.
    pub async fn supports_process_id(&mut self) -> Result<bool, PrintError> {
        self.stream
            .write_all(&process_id_request(PROBE_ID))
            .await
            .map_err(|e| PrintError::Unreachable(format!("sending the GS ( H probe: {e}")))?;
        let deadline = Instant::now() + self.timeouts.status;
        loop {
            match self.read_reply(deadline).await {
                Ok(Some(Reply::Block(b))) if b.len() >= 6 && b[0] == 0x37 && b[1] == 0x22 && b[2..6] == PROBE_ID => {
                    return Ok(true);
                }
                Ok(Some(Reply::RealTime(b))) => {
                    self.realtime_reply(b);
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                Err(e) => return Err(PrintError::Unreachable(format!("reading the GS ( H probe reply: {e}"))),
            }
        }
    }

    /// Writes a job. Any error here leaves the outcome unknown.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), PrintError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeouts.confirm, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PrintError::Interrupted(format!("connection lost while sending: {e}"))),
            Err(_) => Err(PrintError::Interrupted("printer stopped reading while we were sending".into())),
        }
    }

    /// Waits for the `GS ( H` reply carrying `id`, reading the printer's status (`DLE EOT` 1,
    /// 2, 4) every poll interval. While the printer reports itself stopped (paper out, cover
    /// open, offline with or without a cause) the wait goes on: the printer still holds the
    /// ticket and prints it once it is fixed. The confirm timeout only runs while the printer
    /// says it is fine, and a printer that stops answering makes the outcome unknown.
    /// `give_up` is asked while the printer is stopped: true ends the wait (failover), after
    /// clearing the printer's buffers so the held ticket does not print later.
    pub async fn await_process_id(
        &mut self,
        id: [u8; 4],
        monitor: &Monitor,
        give_up: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), PrintError> {
        self.await_confirmation(
            monitor,
            give_up,
            |r| matches!(r, Reply::Block(b) if b.len() >= 6 && b[0] == 0x37 && b[1] == 0x22 && b[2..6] == id),
        )
        .await
    }

    /// Waits for the `GS r 1` reply sent after the cut (any byte: everything before it was
    /// processed), then reads `DLE EOT` 1, 2 and 4: printed when the printer is online with paper.
    pub async fn await_status_readback(
        &mut self,
        monitor: &Monitor,
        give_up: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), PrintError> {
        // Any `GS r` byte is the barrier (some emulators set paper bits oddly, e.g. `08`); the
        // status read that follows decides whether the printer is fine.
        self.await_confirmation(monitor, give_up, |r| matches!(r, Reply::Byte(_))).await?;
        let status = self.status().await.map_err(|e| PrintError::Interrupted(format!("status after print: {e}")))?;
        if status.offline() || status.paper_out() {
            return Err(PrintError::Interrupted(format!(
                "printer reported {} right after the ticket",
                status.state().as_str()
            )));
        }
        Ok(())
    }

    async fn await_confirmation(
        &mut self,
        monitor: &Monitor,
        give_up: &(dyn Fn() -> bool + Sync),
        is_confirmation: impl Fn(&Reply) -> bool,
    ) -> Result<(), PrintError> {
        let mut confirm_deadline = Instant::now() + self.timeouts.confirm;
        let mut probe_sent_at: Option<Instant> = None;
        let mut next_probe = Instant::now() + self.timeouts.poll;
        // The status being assembled from the replies to one probe (DLE EOT 1, 2, 4).
        let mut probe = PrinterStatus { printer: 0x12, offline_cause: 0x12, paper: 0x12 };
        let mut stopped_seen = false;
        loop {
            let wake = next_probe.min(confirm_deadline);
            let stopped = match self.read_reply(wake).await {
                Ok(Some(r)) if is_confirmation(&r) => {
                    if stopped_seen {
                        // It stopped during the wait and is printing again: say what it is now.
                        let (state, detail) = describe(self.status().await);
                        monitor.set(state, detail);
                    }
                    return Ok(());
                }
                Ok(Some(Reply::RealTime(b))) => match self.realtime_reply(b) {
                    Some((1, b)) => {
                        probe.printer = b;
                        None
                    }
                    Some((2, b)) => {
                        probe.offline_cause = b;
                        None
                    }
                    Some((_, b)) if self.realtime_sent.is_empty() => {
                        probe.paper = b;
                        probe_sent_at = None;
                        // The whole status, so offline without a cause is still offline, and
                        // paper near its end is still paper_low (never flapping to online).
                        let state = probe.state();
                        if probe.ready() {
                            monitor.set(state, "");
                            None
                        } else {
                            Some((
                                state,
                                format!(
                                    "status bytes {:02X} {:02X} {:02X}",
                                    probe.printer, probe.offline_cause, probe.paper
                                ),
                            ))
                        }
                    }
                    _ => None,
                },
                Ok(Some(Reply::Asb(a))) => match asb_state(a) {
                    state if state.is_ready() => {
                        monitor.set(state, "");
                        None
                    }
                    state => Some((state, format!("automatic status back {a:02X?}"))),
                },
                Ok(Some(_)) => None,
                Ok(None) => {
                    let now = Instant::now();
                    if let Some(sent) = probe_sent_at
                        && now >= sent + self.timeouts.status
                    {
                        monitor.set(State::Offline, "printer stopped answering while printing");
                        return Err(PrintError::Interrupted("printer stopped answering before confirming".into()));
                    }
                    if now >= confirm_deadline {
                        return Err(PrintError::Interrupted(format!(
                            "no confirmation within {:?}",
                            self.timeouts.confirm
                        )));
                    }
                    if now >= next_probe {
                        if probe_sent_at.is_none() {
                            if let Err(e) = self.request_realtime(&[1, 2, 4]).await {
                                return Err(PrintError::Interrupted(format!("connection lost while waiting: {e}")));
                            }
                            probe_sent_at = Some(now);
                        }
                        next_probe = now + self.timeouts.poll.min(self.timeouts.status);
                    }
                    None
                }
                Err(e) => {
                    return Err(PrintError::Interrupted(format!("connection lost before confirmation: {e}")));
                }
            };
            if let Some((state, detail)) = stopped {
                stopped_seen = true;
                monitor.set(state, format!("{detail}: stopped while holding a ticket; waiting"));
                // Waiting is not failing: restart the clock once it is fixed.
                confirm_deadline = Instant::now() + self.timeouts.confirm;
                if give_up() {
                    let cleared = self.clear_buffers().await;
                    return Err(PrintError::Abandoned {
                        detail: format!("{} while holding the ticket", state.as_str()),
                        cleared,
                    });
                }
            }
        }
    }

    /// `DLE DC4 fn 8`: discards what the printer holds. True when the printer confirmed it
    /// (`37 25 00`) within the status timeout; printers without the command do not answer.
    pub async fn clear_buffers(&mut self) -> bool {
        if self.stream.write_all(&DLE_DC4_CLEAR).await.is_err() {
            return false;
        }
        let deadline = Instant::now() + self.timeouts.status;
        loop {
            match self.read_reply(deadline).await {
                Ok(Some(Reply::Block(b))) if b.len() >= 2 && b[0] == 0x37 && b[1] == 0x25 => return true,
                Ok(Some(Reply::RealTime(b))) => {
                    self.realtime_reply(b);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }
}

/// The one connection to a printer, shared by status polls and jobs, kept open between them
/// and reopened after an error (with backoff while the printer cannot be reached). Also
/// remembers how the printer confirms tickets: in auto mode `GS ( H` support is probed once
/// per connection, before its first ticket.
#[derive(Clone)]
pub struct Link(Arc<LinkInner>);

struct LinkInner {
    url: PrinterUrl,
    timeouts: Timeouts,
    name: String,
    /// `None`: auto (probe).
    fixed: Option<Confirmation>,
    backoff: Backoff,
    slot: tokio::sync::Mutex<Slot>,
    /// What GetStatus shows: the fixed mode, the detected one, or "auto" before the first probe.
    confirm_mode: std::sync::Mutex<&'static str>,
    opened: std::sync::atomic::AtomicU64,
    /// The printer transport's circuit breaker: transient failures of tickets (reported by the
    /// dispatcher) open it; while open, nothing connects; half-open, the probe is a status read.
    breaker: Arc<Breaker>,
    /// When the printer last answered a status read or confirmed a ticket on this link.
    last_reply: std::sync::Mutex<Option<Instant>>,
    /// Set by [`Link::reconnect`] while the connection was in use: closed at its next use.
    reset: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    /// Consecutive failed connects, and when the next attempt may be made.
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<PrintError>,
    /// The probed confirmation of the current connection.
    detected: Option<Confirmation>,
    /// The last one logged (a change is logged once).
    logged: Option<Confirmation>,
}

/// Exclusive use of a printer's connection (a status read, a job).
pub struct Session<'a> {
    link: &'a LinkInner,
    slot: tokio::sync::MutexGuard<'a, Slot>,
}

impl Link {
    /// `confirm` `None` = auto: probe `GS ( H` support once per connection. With a breaker of
    /// its own that nobody records (tools, tests); the service uses [`Link::with_breaker`].
    pub fn new(name: &str, url: &PrinterUrl, timeouts: Timeouts, confirm: Option<Confirmation>) -> Link {
        let breaker = Arc::new(Breaker::standalone(format!("printer:{name}"), BreakerConfig::PRINTER));
        Link::with_breaker(name, url, timeouts, confirm, breaker)
    }

    pub fn with_breaker(
        name: &str,
        url: &PrinterUrl,
        timeouts: Timeouts,
        confirm: Option<Confirmation>,
        breaker: Arc<Breaker>,
    ) -> Link {
        // Between half the not-ready poll interval and the interval itself: no connect attempt
        // on every read while the printer is away (polls, jobs and admin checks share it), yet
        // a printer that returns is noticed within one poll interval, as the recovery latency
        // goal (BENCHMARKS.md) assumes.
        let max = timeouts.poll.max(Duration::from_millis(50));
        let min = (max / 2).max(Duration::from_millis(50)).min(max);
        let backoff = Backoff::new(min, max, 0.2).unwrap_or_else(|_| {
            Backoff::new(Duration::from_millis(50), Duration::from_millis(500), 0.2).expect("valid constant backoff")
        });
        Link(Arc::new(LinkInner {
            url: url.clone(),
            timeouts,
            name: name.to_owned(),
            fixed: confirm,
            backoff,
            slot: tokio::sync::Mutex::new(Slot::default()),
            confirm_mode: std::sync::Mutex::new(confirm.map_or("auto", Confirmation::as_str)),
            opened: Default::default(),
            breaker,
            last_reply: std::sync::Mutex::new(None),
            reset: Default::default(),
        }))
    }

    /// The printer transport's breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.0.breaker
    }

    /// "process_id", "status", or "auto" while not probed yet.
    pub fn confirm_mode(&self) -> &'static str {
        *self.0.confirm_mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.0.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long since the printer last answered on this link (a status read or a
    /// confirmation); `None` before its first answer.
    pub fn since_last_reply(&self) -> Option<Duration> {
        self.0.last_reply.lock().unwrap_or_else(|e| e.into_inner()).map(|at| at.elapsed())
    }

    /// Closes the connection (the health monitor, when it looks stuck); the next use opens a
    /// new one. A connection in use is closed at its next use. True when closed now.
    pub fn reconnect(&self) -> bool {
        match self.0.slot.try_lock() {
            Ok(mut slot) => {
                slot.conn = None;
                slot.retry_at = None;
                true
            }
            Err(_) => {
                self.0.reset.store(true, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    }

    /// Waits for the connection (a job may be using it) and opens it if needed.
    pub async fn session(&self) -> Result<Session<'_>, PrintError> {
        let slot = self.0.slot.lock().await;
        self.open_in(slot).await
    }

    async fn open_in<'a>(&'a self, mut slot: tokio::sync::MutexGuard<'a, Slot>) -> Result<Session<'a>, PrintError> {
        let probing = match self.0.breaker.admit() {
            Admission::Go => false,
            Admission::Probe => true,
            Admission::Wait(retry_in) => {
                // Open: no connection is made or kept, whoever asks (jobs, polls, admin checks).
                slot.conn = None;
                return Err(PrintError::BreakerOpen { retry_in, reason: self.0.breaker.snapshot().reason });
            }
        };
        if self.0.reset.swap(false, std::sync::atomic::Ordering::Relaxed) {
            slot.conn = None;
        }
        if slot.conn.is_none() {
            if let Some(at) = slot.retry_at
                && Instant::now() < at
            {
                return Err(slot.last_error.clone().unwrap_or_else(|| PrintError::Unreachable("reconnecting".into())));
            }
            match Connection::open(&self.0.url, self.0.timeouts).await {
                Ok(conn) => {
                    self.0.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(printer = %self.0.name, "printer connection opened");
                    slot.conn = Some(conn);
                    slot.failures = 0;
                    slot.retry_at = None;
                    slot.detected = None;
                }
                Err(e) => {
                    slot.failures = slot.failures.saturating_add(1);
                    slot.retry_at = Some(Instant::now() + self.0.backoff.delay(slot.failures));
                    slot.last_error = Some(e.clone());
                    return Err(e);
                }
            }
        }
        let mut session = Session { link: &self.0, slot };
        if probing {
            // Half-open: the probe is a status read, never a ticket. A ready printer lets
            // tickets through again; not ready (or no answer) counts neither way.
            if let Ok(s) = session.status().await
                && s.ready()
            {
                tracing::info!(printer = %self.0.name, "circuit breaker probe: printer answers and is ready");
                self.0.breaker.probe_ok();
            }
            if session.slot.conn.is_none() {
                return Err(PrintError::Unreachable("the probe's status read failed".into()));
            }
        }
        Ok(session)
    }

    /// A status read for the monitor (on the shared connection).
    pub async fn probe(&self) -> (State, String) {
        match self.session().await {
            Ok(mut s) => describe(s.status().await),
            Err(e) => describe(Err(e)),
        }
    }

    /// Like [`Link::probe`] but `None` at once when a job holds the connection (then the
    /// dispatcher is reading the printer anyway).
    pub async fn probe_if_idle(&self) -> Option<(State, String)> {
        let slot = self.0.slot.try_lock().ok()?;
        Some(match self.open_in(slot).await {
            Ok(mut s) => describe(s.status().await),
            Err(e) => describe(Err(e)),
        })
    }
}

impl Session<'_> {
    fn conn(&mut self) -> Result<&mut Connection, PrintError> {
        self.slot.conn.as_mut().ok_or_else(|| PrintError::Unreachable("the connection was closed".into()))
    }

    /// Closes the connection (after an error or a doubtful outcome); the next use reopens it.
    pub fn close(mut self) {
        self.slot.conn = None;
    }

    /// Reads `DLE EOT` 1, 2, 4; an error closes the connection.
    pub async fn status(&mut self) -> Result<PrinterStatus, PrintError> {
        let result = self.conn()?.status().await;
        if result.is_err() {
            self.slot.conn = None;
        } else {
            self.replied();
        }
        result
    }

    fn replied(&self) {
        *self.link.last_reply.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// How this printer confirms tickets: the configured mode, or in auto mode the result of
    /// the `GS ( H` probe (made once per connection, while nothing is printing).
    pub async fn confirmation(&mut self) -> Result<Confirmation, PrintError> {
        if let Some(fixed) = self.link.fixed {
            return Ok(fixed);
        }
        if let Some(known) = self.slot.detected {
            return Ok(known);
        }
        let supported = match self.conn()?.supports_process_id().await {
            Ok(s) => s,
            Err(e) => {
                self.slot.conn = None;
                return Err(e);
            }
        };
        let detected = if supported { Confirmation::ProcessId } else { Confirmation::Status };
        self.slot.detected = Some(detected);
        *self.link.confirm_mode.lock().unwrap_or_else(|e| e.into_inner()) = detected.as_str();
        if self.slot.logged != Some(detected) {
            self.slot.logged = Some(detected);
            match detected {
                Confirmation::ProcessId => {
                    tracing::info!(printer = %self.link.name, "printer answers GS ( H: tickets are confirmed by process id")
                }
                Confirmation::Status => tracing::warn!(
                    printer = %self.link.name,
                    "printer does not answer GS ( H within the status timeout: tickets are confirmed by GS r status read-back"
                ),
            }
        }
        Ok(detected)
    }

    /// Writes a job; an error closes the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), PrintError> {
        let result = match self.conn() {
            Ok(c) => c.send(bytes).await,
            Err(e) => Err(PrintError::Interrupted(e.to_string())),
        };
        if result.is_err() {
            self.slot.conn = None;
        }
        result
    }

    /// Waits for the printer's word that the job is on paper (see
    /// [`Connection::await_process_id`]); any failure closes the connection, so nothing late
    /// from this job is taken for the next one's reply.
    pub async fn await_confirmation(
        &mut self,
        how: Confirmation,
        id: [u8; 4],
        monitor: &Monitor,
        give_up: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), PrintError> {
        let conn = match self.conn() {
            Ok(c) => c,
            Err(e) => return Err(PrintError::Interrupted(e.to_string())),
        };
        let result = match how {
            Confirmation::ProcessId => conn.await_process_id(id, monitor, give_up).await,
            Confirmation::Status => conn.await_status_readback(monitor, give_up).await,
        };
        if result.is_err() {
            self.slot.conn = None;
        } else {
            self.replied();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::reply::{process_id, process_id_request};
    use std::sync::Mutex;

    /// A pseudo-terminal in raw mode standing in for `/dev/usb/lp0`; with `answer`, a thread
    /// on the master side plays the printer (DLE EOT → online, GS ( H → its process id).
    fn fake_device(answer: bool) -> (std::path::PathBuf, std::os::fd::OwnedFd, std::sync::Arc<Mutex<Vec<u8>>>) {
        use nix::sys::termios;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let mut t = termios::tcgetattr(&pty.slave).expect("tcgetattr");
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &t).expect("tcsetattr");
        let path = nix::unistd::ttyname(&pty.slave).expect("ttyname");
        let received = std::sync::Arc::new(Mutex::new(Vec::new()));
        if answer {
            let seen = received.clone();
            let master = std::fs::File::from(pty.master);
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut r, mut w) = (master.try_clone().expect("clone"), master);
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut all = seen.lock().unwrap();
                    all.extend_from_slice(&buf[..n]);
                    // Answer everything not answered yet: scan the whole stream each time.
                    let mut replies = Vec::new();
                    let mut i = all.len() - n;
                    while i < all.len() {
                        if all[i..].starts_with(&[0x10, 0x04]) && i + 2 < all.len() {
                            replies.push(0x12);
                            i += 3;
                        } else if all[i..].starts_with(&[0x1D, 0x28, 0x48, 0x06, 0x00, 0x30, 0x30])
                            && i + 11 <= all.len()
                        {
                            replies.extend_from_slice(&[0x37, 0x22]);
                            replies.extend_from_slice(&all[i + 7..i + 11]);
                            replies.push(0x00);
                            i += 11;
                        } else {
                            i += 1;
                        }
                    }
                    drop(all);
                    if w.write_all(&replies).is_err() {
                        break;
                    }
                }
            });
            (path, pty.slave, received)
        } else {
            // A device that never answers: the master stays open and unread.
            std::mem::forget(pty.master);
            (path, pty.slave, received)
        }
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(500),
            status: Duration::from_millis(300),
            confirm: Duration::from_secs(5),
            poll: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn prints_and_confirms_through_a_device_file() {
        let (path, _slave, received) = fake_device(true);
        let url = PrinterUrl::File { path };
        let mut conn = Connection::open(&url, timeouts()).await.unwrap();
        assert_eq!(conn.status().await.unwrap().state(), State::Online);
        let id = process_id(42);
        let mut job = b"\x1b@Hallo Kueche\n\x1dVB\x00".to_vec();
        job.extend_from_slice(&process_id_request(id));
        conn.send(&job).await.unwrap();
        let monitor = Monitor::new("usb", &url);
        conn.await_process_id(id, &monitor, &|| false).await.expect("confirmed over the device");
        let all = received.lock().unwrap().clone();
        assert!(all.windows(12).any(|w| w == b"Hallo Kueche"), "the ticket reached the device");
        assert_eq!(probe(&url, timeouts()).await.0, State::Online);
    }

    #[tokio::test]
    async fn a_device_that_never_answers_is_silent_and_a_missing_one_unreachable() {
        let (path, _slave, _) = fake_device(false);
        let url = PrinterUrl::File { path };
        let mut conn = Connection::open(&url, timeouts()).await.unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(conn.status().await, Err(PrintError::Silent(_))));
        assert!(started.elapsed() < Duration::from_secs(2), "the status timeout bounds the wait");
        drop(conn);
        // Nothing stays blocked on the device: it opens and times out again at once.
        let mut again = Connection::open(&url, timeouts()).await.unwrap();
        assert!(matches!(again.status().await, Err(PrintError::Silent(_))));

        let missing = PrinterUrl::File { path: "/dev/usb/lp9-missing".into() };
        match Connection::open(&missing, timeouts()).await {
            Err(PrintError::Unreachable(e)) => assert!(e.contains("lp9-missing") && e.contains("No such file"), "{e}"),
            other => panic!("expected unreachable, got {:?}", other.map(|_| ())),
        }
        assert_eq!(probe(&missing, timeouts()).await.0, State::Offline);
    }

    /// A scripted network printer for the link tests: answers `DLE EOT n` with `status[n]`
    /// (shared, so a test can change it), `GS r` with `status[0]`, `GS ( H` when `gs_h`,
    /// `DLE DC4 8` with `37 25 00`;
    /// counts connections and records everything received.
    struct FakePrinter {
        url: PrinterUrl,
        status: std::sync::Arc<Mutex<[u8; 5]>>,
        connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        received: std::sync::Arc<Mutex<Vec<u8>>>,
    }

    async fn fake_printer(gs_h: bool) -> FakePrinter {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let p = FakePrinter {
            url: format!("tcp://{addr}").parse().unwrap(),
            status: std::sync::Arc::new(Mutex::new([0x12; 5])),
            connections: Default::default(),
            received: Default::default(),
        };
        let (status, connections, received) = (p.status.clone(), p.connections.clone(), p.received.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::Relaxed);
                let (status, received) = (status.clone(), received.clone());
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    let mut done = 0;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        all.extend_from_slice(&buf[..n]);
                        received.lock().unwrap().extend_from_slice(&buf[..n]);
                        let mut replies = Vec::new();
                        while done < all.len() {
                            let rest = &all[done..];
                            if rest.starts_with(&[0x10, 0x04]) && rest.len() >= 3 {
                                replies.push(status.lock().unwrap()[usize::from(rest[2].min(4))]);
                                done += 3;
                            } else if rest.starts_with(&[0x1D, 0x28, 0x48]) && rest.len() >= 11 {
                                if gs_h {
                                    replies.extend_from_slice(&[0x37, 0x22]);
                                    replies.extend_from_slice(&rest[7..11]);
                                    replies.push(0);
                                }
                                done += 11;
                            } else if rest.starts_with(&[0x1D, 0x72]) && rest.len() >= 3 {
                                replies.push(status.lock().unwrap()[0]);
                                done += 3;
                            } else if rest.starts_with(&DLE_DC4_CLEAR) {
                                replies.extend_from_slice(&[0x37, 0x25, 0x00]);
                                done += DLE_DC4_CLEAR.len();
                            } else if rest.len() < 11 && [0x10, 0x1D].contains(&rest[0]) {
                                break; // wait for the rest of the command
                            } else {
                                done += 1;
                            }
                        }
                        if s.write_all(&replies).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        p
    }

    #[tokio::test]
    async fn a_link_keeps_one_connection_for_polls_and_jobs_and_reopens_after_close() {
        let p = fake_printer(true).await;
        let link = Link::new("front", &p.url, timeouts(), None);
        for _ in 0..5 {
            assert_eq!(link.probe().await.0, State::Online);
        }
        {
            let mut s = link.session().await.unwrap();
            assert_eq!(s.status().await.unwrap().state(), State::Online);
            s.send(b"\x1b@Hallo\n").await.unwrap();
        }
        assert_eq!(link.probe_if_idle().await.map(|r| r.0), Some(State::Online));
        assert_eq!(p.connections.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(link.connections_opened(), 1);
        // Busy: an admin check does not wait for a job.
        let held = link.session().await.unwrap();
        assert!(link.probe_if_idle().await.is_none());
        held.close();
        assert_eq!(link.probe().await.0, State::Online);
        assert_eq!(p.connections.load(std::sync::atomic::Ordering::Relaxed), 2, "reopened after close");
    }

    #[tokio::test]
    async fn an_unreachable_printer_is_retried_with_backoff_not_on_every_poll() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: PrinterUrl = format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
        drop(listener);
        let link = Link::new("front", &url, timeouts(), None);
        let (state, first) = link.probe().await;
        assert_eq!(state, State::Offline);
        // Within the backoff the last error is reported without a new attempt.
        let (state, again) = link.probe().await;
        assert_eq!((state, again), (State::Offline, first));
        assert_eq!(link.connections_opened(), 0);
    }

    #[tokio::test]
    async fn auto_mode_probes_gs_h_once_per_connection() {
        for (gs_h, want) in [(true, Confirmation::ProcessId), (false, Confirmation::Status)] {
            let p = fake_printer(gs_h).await;
            let link = Link::new("front", &p.url, timeouts(), None);
            assert_eq!(link.confirm_mode(), "auto");
            let mut s = link.session().await.unwrap();
            assert_eq!(s.confirmation().await.unwrap(), want);
            assert_eq!(s.confirmation().await.unwrap(), want);
            drop(s);
            assert_eq!(link.confirm_mode(), want.as_str());
            let probes = p.received.lock().unwrap().windows(4).filter(|w| w == b"prb0").count();
            assert_eq!(probes, 1, "probed once per connection");
        }
        // A fixed mode never probes.
        let p = fake_printer(true).await;
        let link = Link::new("front", &p.url, timeouts(), Some(Confirmation::Status));
        assert_eq!(link.session().await.unwrap().confirmation().await.unwrap(), Confirmation::Status);
        assert!(p.received.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn offline_without_a_cause_during_confirmation_is_a_stop_and_can_be_given_up() {
        let p = fake_printer(false).await;
        // DLE EOT 1 offline, DLE EOT 2 names no cause.
        *p.status.lock().unwrap() = [0x12, 0x1A, 0x12, 0x12, 0x12];
        let mut conn = Connection::open(&p.url, timeouts()).await.unwrap();
        let monitor = Monitor::new("front", &p.url);
        let stops = std::sync::atomic::AtomicU32::new(0);
        let give_up = || stops.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= 2;
        match conn.await_process_id(*b"0001", &monitor, &give_up).await {
            Err(PrintError::Abandoned { cleared, .. }) => assert!(cleared, "the held ticket was cleared"),
            other => panic!("expected abandoned, got {other:?}"),
        }
        assert_eq!(monitor.get().state, State::Offline);
        assert!(p.received.lock().unwrap().ends_with(&DLE_DC4_CLEAR));
    }

    #[tokio::test]
    async fn paper_near_end_during_confirmation_stays_paper_low() {
        let p = fake_printer(true).await;
        *p.status.lock().unwrap() = [0x12, 0x12, 0x12, 0x12, 0x1E];
        let tx = tokio::sync::broadcast::Sender::new(16);
        let mut rx = tx.subscribe();
        let monitor = Monitor::with_changes("front", &p.url, 1, tx);
        let link = Link::new("front", &p.url, timeouts(), None);
        let mut s = link.session().await.unwrap();
        for n in 0..3u64 {
            let (state, _) = describe(s.status().await);
            monitor.set(state, "");
            let how = s.confirmation().await.unwrap();
            let id = process_id(n);
            let mut job = b"\x1b@Ticket\n".to_vec();
            job.extend_from_slice(&process_id_request(id));
            s.send(&job).await.unwrap();
            s.await_confirmation(how, id, &monitor, &|| false).await.unwrap();
        }
        let changes: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).map(|c| (c.from, c.to)).collect();
        assert_eq!(changes, [(State::Unknown, State::PaperLow)], "no flapping to online per ticket");
    }

    #[tokio::test]
    async fn status_read_back_takes_any_gs_r_byte_as_the_barrier_and_decides_by_dle_eot() {
        let p = fake_printer(false).await;
        // An emulator answering GS r 1 with 08 (escpresso): still a barrier.
        p.status.lock().unwrap()[0] = 0x08;
        let link = Link::new("front", &p.url, timeouts(), None);
        let monitor = Monitor::new("front", &p.url);
        let mut s = link.session().await.unwrap();
        let how = s.confirmation().await.unwrap();
        assert_eq!(how, Confirmation::Status);
        let started = std::time::Instant::now();
        let mut job = b"\x1b@Ticket\n".to_vec();
        job.extend_from_slice(&crate::printer::GS_R_PAPER);
        s.send(&job).await.unwrap();
        s.await_confirmation(how, *b"0001", &monitor, &|| false).await.expect("confirmed by read-back");
        assert!(started.elapsed() < Duration::from_secs(2), "no wait for a confirmation timeout");
        // Paper out after the barrier: not printed.
        *p.status.lock().unwrap() = [0x0C, 0x1A, 0x32, 0x12, 0x7E];
        s.send(&job).await.unwrap();
        assert!(matches!(
            s.await_confirmation(how, *b"0002", &monitor, &|| false).await,
            Err(PrintError::Interrupted(_))
        ));
    }

    #[tokio::test]
    async fn hostile_replies_neither_panic_nor_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: PrinterUrl = format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // An endless block (no NUL), ASB fragments and stray status-looking bytes.
            let mut junk = vec![0x37u8; 64 * 1024];
            junk.extend([0x10, 0x00, 0x10, 0x92, 0xFF, 0x00].repeat(1000));
            let _ = s.write_all(&junk).await;
            let mut buf = [0u8; 256];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let mut conn = Connection::open(&url, timeouts()).await.unwrap();
        let started = std::time::Instant::now();
        let _ = conn.status().await;
        let _ = conn.supports_process_id().await;
        assert!(started.elapsed() < Duration::from_secs(3), "bounded by the status timeout");
        assert!(conn.pending.len() <= 256 * 4);
    }
}
