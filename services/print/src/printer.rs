//! The printer driver: one TCP connection per job to an ESC/POS printer (Epson TM-m30III
//! class), real-time status (`DLE EOT`), sending, and waiting for the printer's own word that
//! the ticket is on paper (`GS ( H` process-ID response, or a `GS r` read-back).
//!
//! Must never: decide job states (the dispatcher does), or report success because a socket
//! write returned: a TCP ACK only means the printer's network board buffered the bytes.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use wixprint_shared::time::now_ms;

/// Where the printer is: `tcp://host[:port]` (Ethernet, port 9100) or `file:///dev/usb/lp0`
/// (a USB printer through the kernel's usblp device, written and read like the socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrinterUrl {
    Tcp { host: String, port: u16 },
    File { path: std::path::PathBuf },
}

impl FromStr for PrinterUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let rest = rest.trim_end_matches('/');
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() => (
                    h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    p.parse::<u16>().map_err(|_| format!("invalid port {p:?} in {s:?}"))?,
                ),
                Some(_) => return Err(format!("missing host in {s:?}")),
                None if !rest.is_empty() => (rest.to_owned(), 9100),
                None => return Err(format!("missing host in {s:?}")),
            };
            if port == 0 {
                return Err(format!("port 0 is not a printer port in {s:?}"));
            }
            return Ok(PrinterUrl::Tcp { host, port });
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(format!("{s:?}: a device URL needs an absolute path, e.g. file:///dev/usb/lp0"));
            }
            return Ok(PrinterUrl::File { path: path.into() });
        }
        Err(format!("{s:?} is not a printer URL: expected tcp://host:port or file:///dev/usb/lp0"))
    }
}

impl fmt::Display for PrinterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrinterUrl::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            PrinterUrl::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            PrinterUrl::File { path } => write!(f, "file://{}", path.display()),
        }
    }
}

/// Decoded `DLE EOT` 1, 2 and 4 replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterStatus {
    pub printer: u8,
    pub offline_cause: u8,
    pub paper: u8,
}

impl PrinterStatus {
    pub fn offline(&self) -> bool {
        self.printer & 0x08 != 0
    }
    pub fn cover_open(&self) -> bool {
        self.offline_cause & 0x04 != 0
    }
    pub fn paper_out(&self) -> bool {
        self.paper & 0x60 == 0x60 || self.offline_cause & 0x20 != 0
    }
    pub fn paper_low(&self) -> bool {
        self.paper & 0x0C == 0x0C
    }
    pub fn error(&self) -> bool {
        self.offline_cause & 0x40 != 0
    }
    /// Ready to take a ticket.
    pub fn ready(&self) -> bool {
        !self.offline() && !self.cover_open() && !self.paper_out() && !self.error()
    }
    /// The state name operators see: online / paper_low / paper_out / cover_open / error / offline.
    pub fn state(&self) -> State {
        if self.cover_open() {
            State::CoverOpen
        } else if self.paper_out() {
            State::PaperOut
        } else if self.error() {
            State::Error
        } else if self.offline() {
            State::Offline
        } else if self.paper_low() {
            State::PaperLow
        } else {
            State::Online
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unknown,
    Online,
    PaperLow,
    PaperOut,
    CoverOpen,
    Error,
    Offline,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Online => "online",
            State::PaperLow => "paper_low",
            State::PaperOut => "paper_out",
            State::CoverOpen => "cover_open",
            State::Error => "error",
            State::Offline => "offline",
        }
    }
}

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
}

/// The printer's last known state, shared with the admin API.
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub url: String,
    /// The confirmed (debounced) state: what status, events and failover go by.
    pub state: State,
    pub detail: String,
    pub since_ms: i64,
    pub last_checked_ms: i64,
    pub checks: u64,
    /// The last raw observation (may not be confirmed yet).
    pub raw: State,
}

/// A confirmed change of a printer's state.
#[derive(Debug, Clone)]
pub struct Change {
    pub printer: String,
    pub from: State,
    pub to: State,
    pub detail: String,
    pub at_ms: i64,
}

struct MonitorInner {
    observed: Observed,
    /// A not-ready state seen this many times in a row, not yet confirmed.
    pending: Option<(State, u32)>,
}

/// One printer's state, fed by the dispatcher's and the poller's observations. A printer
/// coming back (online) is believed at once: printing resumes and recovery starts without
/// delay. A printer going away (offline, paper out, ...) is confirmed only after `confirm`
/// observations in a row, so one lost status reply does not raise an alarm.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Mutex<MonitorInner>>,
    confirm: u32,
    changes: tokio::sync::broadcast::Sender<Change>,
}

impl Monitor {
    pub fn new(name: &str, url: &PrinterUrl) -> Self {
        Self::with_changes(name, url, 1, tokio::sync::broadcast::Sender::new(64))
    }

    /// A monitor confirming not-ready states after `confirm` observations, announcing
    /// confirmed changes on `changes`.
    pub fn with_changes(
        name: &str,
        url: &PrinterUrl,
        confirm: u32,
        changes: tokio::sync::broadcast::Sender<Change>,
    ) -> Self {
        let observed = Observed {
            name: name.to_owned(),
            url: url.to_string(),
            state: State::Unknown,
            detail: String::new(),
            since_ms: now_ms(),
            last_checked_ms: 0,
            checks: 0,
            raw: State::Unknown,
        };
        Self { inner: Arc::new(Mutex::new(MonitorInner { observed, pending: None })), confirm: confirm.max(1), changes }
    }

    pub fn get(&self) -> Observed {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).observed.clone()
    }

    /// Records one observation; a confirmed change is logged and announced.
    pub fn set(&self, state: State, detail: impl Into<String>) {
        let detail = detail.into();
        let change = {
            let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let inner = &mut *guard;
            let o = &mut inner.observed;
            o.checks += 1;
            o.last_checked_ms = now_ms();
            o.raw = state;
            if o.state == state {
                inner.pending = None;
                o.detail = detail;
                return;
            }
            let seen = match inner.pending {
                Some((s, n)) if s == state => n + 1,
                _ => 1,
            };
            if state != State::Online && seen < self.confirm {
                inner.pending = Some((state, seen));
                return;
            }
            inner.pending = None;
            let change =
                Change { printer: o.name.clone(), from: o.state, to: state, detail: detail.clone(), at_ms: now_ms() };
            if state == State::Online {
                tracing::info!(printer = %o.name, from = o.state.as_str(), "printer online");
            } else {
                tracing::warn!(printer = %o.name, from = o.state.as_str(), to = state.as_str(), %detail, "printer not ready; queue waits");
            }
            o.state = state;
            o.since_ms = change.at_ms;
            o.detail = detail;
            change
        };
        // No receiver is fine: nobody is interested yet.
        let _ = self.changes.send(change);
    }
}

/// Reads the printer's status on a short connection of its own (`DLE EOT` 1, 2, 4): the
/// state and a detail for the monitor. Nothing is printed.
pub async fn probe(url: &PrinterUrl, timeouts: Timeouts) -> (State, String) {
    let result = match Connection::open(url, timeouts).await {
        Ok(mut conn) => conn.status().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(s) if s.state() == State::Online => (State::Online, String::new()),
        Ok(s) => (s.state(), format!("status bytes {:02X} {:02X} {:02X}", s.printer, s.offline_cause, s.paper)),
        Err(e) => (State::Offline, e.to_string()),
    }
}

/// Replies a printer sends on the TCP stream, told apart by Epson's identification rules.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// `DLE EOT n` reply: `(b & 0x93) == 0x12`.
    RealTime(u8),
    /// Automatic Status Back block (4 bytes, first `(b & 0x93) == 0x10`).
    Asb([u8; 4]),
    /// Header-to-NUL block (`37 22 d1 d2 d3 d4 00` for GS ( H), header byte included.
    Block(Vec<u8>),
    /// One-byte non-real-time reply (`GS r`): `(b & 0x90) == 0`.
    Byte(u8),
}

#[derive(Default)]
struct ReplyParser {
    block: Option<Vec<u8>>,
    asb: Vec<u8>,
}

impl ReplyParser {
    fn feed(&mut self, b: u8, out: &mut Vec<Reply>) {
        if let Some(block) = self.block.as_mut() {
            if b == 0 {
                let block = self.block.take().unwrap_or_default();
                out.push(Reply::Block(block));
            } else if block.len() < 256 {
                block.push(b);
            }
            return;
        }
        if !self.asb.is_empty() {
            self.asb.push(b);
            if self.asb.len() == 4 {
                let a = std::mem::take(&mut self.asb);
                out.push(Reply::Asb([a[0], a[1], a[2], a[3]]));
            }
            return;
        }
        match b {
            0x35 | 0x37 | 0x3B | 0x3D | 0x5F => self.block = Some(vec![b]),
            _ if b & 0x93 == 0x12 => out.push(Reply::RealTime(b)),
            _ if b & 0x93 == 0x10 => self.asb.push(b),
            _ if b & 0x90 == 0 => out.push(Reply::Byte(b)),
            _ => {}
        }
    }
}

pub const GS_R_PAPER: [u8; 3] = [0x1D, 0x72, 0x01];

/// `GS a n`: Automatic Status Back on for online/offline, errors and the paper sensor, so a
/// printer that stops while it holds a ticket says so at once (sent with each job).
pub const GS_A_ASB: [u8; 3] = [0x1D, 0x61, 0x0E];

/// The state an Automatic Status Back block reports (Epson: byte 1 offline 0x08, cover 0x20;
/// byte 2 errors 0x08 / 0x20 / 0x40; byte 3 paper end 0x0C, near end 0x03).
fn asb_state(a: [u8; 4]) -> State {
    if a[2] & 0x0C != 0 {
        State::PaperOut
    } else if a[0] & 0x20 != 0 {
        State::CoverOpen
    } else if a[1] & 0x68 != 0 {
        State::Error
    } else if a[0] & 0x08 != 0 {
        State::Offline
    } else if a[2] & 0x03 != 0 {
        State::PaperLow
    } else {
        State::Online
    }
}

/// The `GS ( H` fn 48 request for process id `id`.
pub fn process_id_request(id: [u8; 4]) -> [u8; 11] {
    [0x1D, 0x28, 0x48, 0x06, 0x00, 0x30, 0x30, id[0], id[1], id[2], id[3]]
}

/// A 4-character printable process id (base 36) from a number.
pub fn process_id(n: u64) -> [u8; 4] {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut n = n % 36u64.pow(4);
    let mut id = [b'0'; 4];
    for slot in id.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    id
}

/// Timeouts the connection uses.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub status: Duration,
    pub confirm: Duration,
    pub poll: Duration,
}

/// The byte stream to a printer: a TCP socket or a device file.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A character device (usblp, a tty) opened non-blocking and driven by the reactor: a status
/// request the device never answers times out without leaving a thread blocked in `read`
/// (a blocking-pool read would hold its thread, and the device, until the printer spoke).
struct Device(tokio::io::unix::AsyncFd<std::fs::File>);

impl Device {
    fn open(path: &std::path::Path) -> std::io::Result<Device> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc_nonblock()).open(path)?;
        // `AsyncFd::new` is deprecated for types that may not own their descriptor; a
        // `std::fs::File` owns it, and the replacement `register` is `unsafe`, which this crate
        // forbids. (usblp allows one open at a time, so a FIFO-style reader + writer pair of
        // `tokio::net::unix::pipe` is not an option.)
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::new(file)?;
        Ok(Device(fd))
    }
}

/// `O_NONBLOCK | O_NOCTTY` (Linux values; the device must not become our terminal).
fn libc_nonblock() -> i32 {
    0o4000 | 0o400
}

impl tokio::io::AsyncRead for Device {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read;
        loop {
            let mut guard = std::task::ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl tokio::io::AsyncWrite for Device {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::io::Write;
        loop {
            let mut guard = std::task::ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(data)) {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// One connection to the printer, used for one job.
pub struct Connection {
    stream: Box<dyn Io>,
    parser: ReplyParser,
    pending: std::collections::VecDeque<Reply>,
    timeouts: Timeouts,
}

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
        Ok(Self { stream, parser: ReplyParser::default(), pending: Default::default(), timeouts })
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

    async fn real_time(&mut self, n: u8) -> Result<u8, PrintError> {
        self.stream
            .write_all(&[0x10, 0x04, n])
            .await
            .map_err(|e| PrintError::Unreachable(format!("sending DLE EOT {n}: {e}")))?;
        let deadline = Instant::now() + self.timeouts.status;
        loop {
            match self.read_reply(deadline).await {
                Ok(Some(Reply::RealTime(b))) => return Ok(b),
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(PrintError::Silent(format!(
                        "no reply to DLE EOT {n} within {:?}",
                        self.timeouts.status
                    )));
                }
                Err(e) => return Err(PrintError::Unreachable(format!("reading DLE EOT {n}: {e}"))),
            }
        }
    }

    /// Reads `DLE EOT` 1, 2 and 4. Nothing is printed by this.
    pub async fn status(&mut self) -> Result<PrinterStatus, PrintError> {
        Ok(PrinterStatus {
            printer: self.real_time(1).await?,
            offline_cause: self.real_time(2).await?,
            paper: self.real_time(4).await?,
        })
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

    /// Waits for the `GS ( H` reply carrying `id`, probing `DLE EOT 2` every poll interval.
    /// While the printer reports itself stopped (paper out, cover open) the wait goes on:
    /// the printer still holds the ticket and prints it once it is fixed. The confirm timeout
    /// only runs while the printer says it is fine, and a printer that stops answering makes
    /// the outcome unknown.
    pub async fn await_process_id(&mut self, id: [u8; 4], monitor: &Monitor) -> Result<(), PrintError> {
        self.await_confirmation(
            monitor,
            |r| matches!(r, Reply::Block(b) if b.len() >= 6 && b[0] == 0x37 && b[1] == 0x22 && b[2..6] == id),
        )
        .await
    }

    /// Waits for the `GS r 1` reply sent after the cut, then reads `DLE EOT` 1 and 4: printed
    /// when the printer is online with paper.
    pub async fn await_status_readback(&mut self, monitor: &Monitor) -> Result<(), PrintError> {
        self.await_confirmation(monitor, |r| matches!(r, Reply::Byte(b) if b & 0x0C == 0)).await?;
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
        is_confirmation: impl Fn(&Reply) -> bool,
    ) -> Result<(), PrintError> {
        let mut confirm_deadline = Instant::now() + self.timeouts.confirm;
        let mut probe_sent_at: Option<Instant> = None;
        let mut next_probe = Instant::now() + self.timeouts.poll;
        loop {
            let wake = next_probe.min(confirm_deadline);
            match self.read_reply(wake).await {
                Ok(Some(r)) if is_confirmation(&r) => {
                    monitor.set(State::Online, "");
                    return Ok(());
                }
                Ok(Some(Reply::RealTime(b))) => {
                    probe_sent_at = None;
                    // Reply to DLE EOT 2: offline cause.
                    let stopped = if b & 0x04 != 0 {
                        Some(State::CoverOpen)
                    } else if b & 0x20 != 0 {
                        Some(State::PaperOut)
                    } else if b & 0x40 != 0 {
                        Some(State::Error)
                    } else {
                        None
                    };
                    match stopped {
                        Some(state) => {
                            monitor.set(state, "printer stopped while holding a ticket; waiting");
                            // Waiting is not failing: restart the clock once it is fixed.
                            confirm_deadline = Instant::now() + self.timeouts.confirm;
                        }
                        None => monitor.set(State::Online, ""),
                    }
                }
                Ok(Some(Reply::Asb(a))) => match asb_state(a) {
                    state @ (State::Online | State::PaperLow) => monitor.set(state, ""),
                    state => {
                        monitor.set(state, format!("automatic status back {a:02X?}: stopped while holding a ticket"));
                        confirm_deadline = Instant::now() + self.timeouts.confirm;
                    }
                },
                Ok(Some(_)) => {}
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
                            if let Err(e) = self.stream.write_all(&[0x10, 0x04, 0x02]).await {
                                return Err(PrintError::Interrupted(format!("connection lost while waiting: {e}")));
                            }
                            probe_sent_at = Some(now);
                        }
                        next_probe = now + self.timeouts.poll.min(self.timeouts.status);
                    }
                }
                Err(e) => {
                    return Err(PrintError::Interrupted(format!("connection lost before confirmation: {e}")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_printer_urls() {
        assert_eq!("tcp://192.168.1.50:9100".parse(), Ok(PrinterUrl::Tcp { host: "192.168.1.50".into(), port: 9100 }));
        assert_eq!("tcp://printer".parse(), Ok(PrinterUrl::Tcp { host: "printer".into(), port: 9100 }));
        assert!("http://x".parse::<PrinterUrl>().is_err());
        assert!("tcp://:9100".parse::<PrinterUrl>().is_err());
        assert!("tcp://x:99999".parse::<PrinterUrl>().is_err());
    }

    #[test]
    fn tells_replies_apart() {
        let mut p = ReplyParser::default();
        let mut out = Vec::new();
        for b in [0x12, 0x37, 0x22, b'0', b'0', b'1', b'Z', 0x00, 0x10, 0, 0, 0x0C, 0x0C] {
            p.feed(b, &mut out);
        }
        assert_eq!(
            out,
            vec![
                Reply::RealTime(0x12),
                Reply::Block(vec![0x37, 0x22, b'0', b'0', b'1', b'Z']),
                Reply::Asb([0x10, 0, 0, 0x0C]),
                Reply::Byte(0x0C)
            ]
        );
    }

    #[test]
    fn automatic_status_back_maps_to_states() {
        assert_eq!(asb_state([0x10, 0, 0, 0]), State::Online);
        assert_eq!(asb_state([0x18, 0, 0, 0]), State::Offline);
        assert_eq!(asb_state([0x18, 0, 0x0C, 0]), State::PaperOut);
        assert_eq!(asb_state([0x38, 0, 0, 0]), State::CoverOpen);
        assert_eq!(asb_state([0x10, 0x08, 0, 0]), State::Error);
        assert_eq!(asb_state([0x10, 0, 0x03, 0]), State::PaperLow);
    }

    #[test]
    fn status_bytes_map_to_states() {
        let s = |a, b, c| PrinterStatus { printer: a, offline_cause: b, paper: c }.state();
        assert_eq!(s(0x12, 0x12, 0x12), State::Online);
        assert_eq!(s(0x1A, 0x32, 0x7E), State::PaperOut);
        assert_eq!(s(0x1A, 0x16, 0x12), State::CoverOpen);
        assert_eq!(s(0x12, 0x12, 0x1E), State::PaperLow);
        assert!(!PrinterStatus { printer: 0x1A, offline_cause: 0x12, paper: 0x12 }.ready());
    }

    #[test]
    fn process_ids_are_four_printable_chars() {
        assert_eq!(&process_id(0), b"0000");
        assert_eq!(&process_id(35), b"000Z");
        assert!(process_id(u64::MAX).iter().all(|b| (0x20..0x7F).contains(b)));
    }

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

    #[test]
    fn parses_device_urls() {
        let url: PrinterUrl = "file:///dev/usb/lp0".parse().unwrap();
        assert_eq!(url, PrinterUrl::File { path: "/dev/usb/lp0".into() });
        assert_eq!(url.to_string(), "file:///dev/usb/lp0");
        for bad in ["file://dev/usb/lp0", "file://", "file:///"] {
            assert!(bad.parse::<PrinterUrl>().unwrap_err().contains("absolute path"), "{bad}");
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
        conn.await_process_id(id, &monitor).await.expect("confirmed over the device");
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
}
