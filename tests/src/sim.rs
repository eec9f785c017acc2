//! ESC/POS printer simulator: a stand-in for an Epson TM-m30III on TCP (port 9100 style), used by
//! the black-box tests and the demo.
//!
//! Owns: the listening socket and its "power" (`Mode::Unreachable` really closes it and switching
//! back re-binds the same address), the per-connection protocol handling and the record of
//! printed tickets. Real-time commands (`DLE EOT`, `DLE ENQ`, `DLE DC4`) are answered as soon as
//! they arrive, like the real device; everything else is interpreted in order and only while the
//! simulated printer is online, so a client that does not wait for the printer sees what it
//! would see in a kitchen.
//!
//! Must never: panic or hang on any input bytes, block a runtime thread, print (or confirm)
//! held data while the printer is not online, or know anything about orders or the print
//! service. It is a printer, not a test oracle: assertions belong to the tests.

use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use wixprint_shared::codepage::CodePage;

const HT: u8 = 0x09;
const LF: u8 = 0x0A;
const DLE: u8 = 0x10;
const EOT: u8 = 0x04;
const ENQ: u8 = 0x05;
const DC4: u8 = 0x14;
const ESC: u8 = 0x1B;
const FS: u8 = 0x1C;
const GS: u8 = 0x1D;

/// `DLE DC4 8` only clears the buffers when followed by exactly these bytes (Epson range).
const CLEAR_MAGIC: [u8; 7] = [1, 3, 20, 1, 6, 2, 8];
/// Reply to `DLE DC4 8`.
const CLEAR_RESPONSE: [u8; 3] = [0x37, 0x25, 0x00];

/// What the simulated printer is doing. Every mode except `Unreachable` accepts connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Prints, answers everything.
    Online,
    /// Accepts connections, `DLE EOT` says offline without naming a cause (`DLE EOT 1` bit 3,
    /// `DLE EOT 2` no cause bit), holds print data.
    Offline,
    /// `DLE EOT` says paper end, holds print data.
    PaperOut,
    /// `DLE EOT` says cover open, holds print data.
    CoverOpen,
    /// Accepts and reads everything, never answers anything, holds print data (a hung printer).
    Silent,
    /// Prints normally, answers `DLE EOT` and `GS r`, but never sends `GS ( H` replies.
    WithholdConfirm,
    /// A clone or emulator without `GS ( H` (like emupos): prints, answers `DLE EOT` and `GS r`,
    /// ignores `GS ( H` (no reply, not counted as an unknown command).
    NoProcessId,
    /// Prints, but the paper is near its end: `DLE EOT 4` `1E`, ASB byte 3 `03`, `GS r 1` `03`.
    PaperNearEnd,
    /// One-shot: online until the next ticket's first text arrives, then offline without a
    /// cause (as [`Mode::Offline`]) before printing any of it, holding it.
    OfflineAtTicket,
    /// One-shot: online until the next ticket's first text arrives, then out of paper (as
    /// [`Mode::PaperOut`]) before printing any of it, holding it.
    PaperOutAtTicket,
    /// One-shot: the next ticket is cut off after about half of its print data (recorded as a
    /// partial ticket), the connection is dropped, and the mode reverts to `Online`.
    DropMidTicket,
    /// Powered off: not listening, every open connection reset.
    Unreachable,
}

impl Mode {
    pub const ALL: [Mode; 12] = [
        Mode::Online,
        Mode::Offline,
        Mode::PaperOut,
        Mode::CoverOpen,
        Mode::Silent,
        Mode::WithholdConfirm,
        Mode::NoProcessId,
        Mode::PaperNearEnd,
        Mode::OfflineAtTicket,
        Mode::PaperOutAtTicket,
        Mode::DropMidTicket,
        Mode::Unreachable,
    ];

    /// The snake_case name used by the `printer-sim` control port.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
            Mode::PaperOut => "paper_out",
            Mode::CoverOpen => "cover_open",
            Mode::Silent => "silent",
            Mode::WithholdConfirm => "withhold_confirm",
            Mode::NoProcessId => "no_process_id",
            Mode::PaperNearEnd => "paper_near_end",
            Mode::OfflineAtTicket => "offline_at_ticket",
            Mode::PaperOutAtTicket => "paper_out_at_ticket",
            Mode::DropMidTicket => "drop_mid_ticket",
            Mode::Unreachable => "unreachable",
        }
    }

    /// Whether print data is processed (not held).
    fn prints(self) -> bool {
        matches!(
            self,
            Mode::Online
                | Mode::WithholdConfirm
                | Mode::DropMidTicket
                | Mode::NoProcessId
                | Mode::PaperNearEnd
                | Mode::OfflineAtTicket
                | Mode::PaperOutAtTicket
        )
    }

    /// The mode a one-shot "stops at the next ticket" mode switches to.
    fn stops_at_ticket(self) -> Option<Mode> {
        match self {
            Mode::OfflineAtTicket => Some(Mode::Offline),
            Mode::PaperOutAtTicket => Some(Mode::PaperOut),
            _ => None,
        }
    }

    /// Whether anything at all is sent back to the host.
    fn answers(self) -> bool {
        !matches!(self, Mode::Silent | Mode::Unreachable)
    }

    /// The byte `DLE EOT n` is answered with, or `None` when there is no answer.
    fn realtime_status(self, n: u8) -> Option<u8> {
        // Bits 1 and 4 are fixed to 1 in every real-time status byte, hence the 0x12 base.
        let [s1, s2, s3, s4] = match self {
            Mode::Online
            | Mode::WithholdConfirm
            | Mode::DropMidTicket
            | Mode::NoProcessId
            | Mode::OfflineAtTicket
            | Mode::PaperOutAtTicket => [0x12; 4],
            Mode::PaperNearEnd => [0x12, 0x12, 0x12, 0x1E],
            // Plain offline (e.g. waiting for online recovery): n=1 bit 3, no more specific cause.
            Mode::Offline => [0x1A, 0x12, 0x12, 0x12],
            Mode::PaperOut => [0x1A, 0x32, 0x12, 0x7E],
            Mode::CoverOpen => [0x1A, 0x16, 0x12, 0x12],
            Mode::Silent | Mode::Unreachable => return None,
        };
        match n {
            1 => Some(s1),
            2 => Some(s2),
            3 => Some(s3),
            4 => Some(s4),
            _ => None,
        }
    }

    /// The four Automatic Status Back bytes for this state.
    fn asb_status(self) -> Option<[u8; 4]> {
        match self {
            Mode::Online
            | Mode::WithholdConfirm
            | Mode::DropMidTicket
            | Mode::NoProcessId
            | Mode::OfflineAtTicket
            | Mode::PaperOutAtTicket => Some([0x10, 0, 0, 0]),
            Mode::PaperNearEnd => Some([0x10, 0, 0x03, 0]),
            Mode::Offline => Some([0x18, 0, 0, 0]),
            Mode::PaperOut => Some([0x18, 0, 0x0C, 0]),
            Mode::CoverOpen => Some([0x38, 0, 0, 0]),
            Mode::Silent | Mode::Unreachable => None,
        }
    }

    /// `GS r 1`: paper sensor status.
    fn paper_sensor(self) -> u8 {
        match self {
            Mode::PaperOut => 0x0C,
            Mode::PaperNearEnd => 0x03,
            _ => 0x00,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = anyhow::Error;

    /// Accepts the snake_case names of [`Mode::as_str`], case-insensitively, `-` for `_` too.
    fn from_str(s: &str) -> anyhow::Result<Mode> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        match Mode::ALL.into_iter().find(|m| m.as_str() == wanted) {
            Some(mode) => Ok(mode),
            None => bail!("unknown printer mode {s:?} (one of: {})", Mode::ALL.map(Mode::as_str).join(", ")),
        }
    }
}

/// One printed (or partially printed) ticket.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// 1, 2, 3 … in the order the tickets were printed.
    pub seq: u64,
    /// Decoded text without the commands, lines joined with '\n', nothing trimmed.
    pub text: String,
    /// The same text line by line, with style.
    pub lines: Vec<TicketLine>,
    /// Every byte of this ticket as received, commands included.
    pub raw: Vec<u8>,
    /// True when ended by a cut; false for a partial ticket (connection closed or dropped
    /// mid-ticket, or the printer powered off).
    pub complete: bool,
    /// The last `ESC t n` seen in this ticket.
    pub code_table: Option<u8>,
    /// Commands the simulator did not recognise (or that were malformed, such as a QR print
    /// with no stored data); tests may require zero.
    pub unknown_commands: u32,
    /// The data of every QR code printed (`GS ( k` cn 49, fn 81), in order, decoded as UTF-8
    /// (lossy). Each one is also a line `[QR <data>]` in `lines`.
    pub qr_codes: Vec<String>,
    /// Every raster image printed (`GS v 0`), in order. Each one is also a line
    /// `[IMAGE <width>x<height>]` in `lines`.
    pub images: Vec<RasterImage>,
    /// Buzzer commands (`ESC ( A` fn 48 and `ESC B`), in order. Like everything else they belong
    /// to the ticket in progress, so a beep sent after a cut is on the next ticket; if no text
    /// follows before the connection closes that ticket is never recorded, and only
    /// [`PrinterSim::beeps`] counts it.
    pub buzzer: Vec<Buzzer>,
    /// Drawer kicks (`ESC p m t1 t2`); attributed like `buzzer` (see [`PrinterSim::drawer_kicks`]).
    pub drawer_kicks: u32,
    pub printed_at: SystemTime,
}

/// A raster bit image as sent with `GS v 0 m xL xH yL yH d1…dk`: `height` rows of
/// `width / 8` bytes, MSB = leftmost dot, 1 = black. The scale mode `m` is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RasterImage {
    /// Dots: bytes per row × 8.
    pub width: usize,
    /// Rows (dots).
    pub height: usize,
    /// The image data exactly as received, `width / 8 * height` bytes.
    pub data: Vec<u8>,
}

impl RasterImage {
    /// Whether the dot at column `x`, row `y` is black; false outside the image.
    pub fn get(&self, x: usize, y: usize) -> bool {
        if x >= self.width || y >= self.height {
            return false;
        }
        self.data.get(y * (self.width / 8) + x / 8).is_some_and(|b| b & (0x80 >> (x % 8)) != 0)
    }

    /// Number of black dots.
    pub fn ink(&self) -> usize {
        self.data.iter().map(|b| b.count_ones() as usize).sum()
    }
}

/// One buzzer command. The two kinds are kept apart because their parameters mean different
/// things; [`Ticket::buzzer`]`.len()` counts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buzzer {
    /// Epson `ESC ( A pL pH fn n c t` with pL=4, pH=0, fn=48: sound pattern `n`, `c` cycles,
    /// `t` the pause/duration parameter, as sent.
    Epson { n: u8, c: u8, t: u8 },
    /// `ESC B n t` (clone printers, not Epson): `n` beeps, each `t` × 50 ms, as sent.
    EscB { n: u8, t: u8 },
}

/// One printed line. When a line mixes styles, `width_mult`/`height_mult` are the largest used
/// by any visible character and `bold`/`reverse` are set when any visible character had them,
/// so width checks err on the side of "too wide". `font_b` is the font of the first visible
/// character (of the style in effect at the end of the line when there is none). QR codes and
/// raster images are lines of their own (`[QR …]`, `[IMAGE WxH]`) with the default style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketLine {
    pub text: String,
    pub width_mult: u8,
    pub height_mult: u8,
    pub bold: bool,
    pub reverse: bool,
    /// Font B (`ESC M 1`, or bit 0 of `ESC ! n`) rather than Font A.
    pub font_b: bool,
}

impl TicketLine {
    /// Columns this line occupies in Font A units: chars × width_mult. For a Font B line
    /// (`font_b`) the same number counts Font B columns instead (64 per 80 mm line rather
    /// than Font A's 48).
    pub fn columns(&self) -> usize {
        self.text.chars().count() * usize::from(self.width_mult)
    }
}

/// Handle to a running simulator. Cheap to clone; all clones control the same printer.
#[derive(Clone)]
pub struct PrinterSim {
    inner: Arc<Inner>,
}

impl fmt::Debug for PrinterSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrinterSim")
            .field("addr", &self.inner.addr)
            .field("mode", &self.mode())
            .field("tickets", &lock(&self.inner.tickets).len())
            .finish()
    }
}

impl PrinterSim {
    /// Starts listening on `addr` ("127.0.0.1:0" picks a free port, kept for re-binding).
    pub async fn start(addr: &str) -> anyhow::Result<PrinterSim> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("printer sim: binding {addr}"))?;
        let local = listener.local_addr().context("printer sim: reading the bound address")?;
        let inner = Arc::new(Inner {
            addr: local,
            handle: Handle::current(),
            mode_tx: watch::Sender::new(Mode::Online),
            count_tx: watch::Sender::new(0),
            tickets: Mutex::new(Vec::new()),
            power: Mutex::new(Power::default()),
            shutdown: CancellationToken::new(),
            confirmations: AtomicU64::new(0),
            status_queries: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            beeps: AtomicU64::new(0),
            drawer_kicks: AtomicU64::new(0),
            status_delay_ms: AtomicU64::new(0),
            more_drops: AtomicU64::new(0),
        });
        {
            let mut power = lock(&inner.power);
            inner.power_on(&mut power, listener);
        }
        tracing::debug!(addr = %local, "printer sim listening");
        Ok(PrinterSim { inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `tcp://IP:PORT`, the form the print service's printer config takes.
    pub fn url(&self) -> String {
        format!("tcp://{}", self.inner.addr)
    }

    /// Takes effect at once. Leaving a holding mode lets held data print; `Unreachable` closes
    /// the listener and every connection; leaving it re-binds the same address.
    pub fn set_mode(&self, mode: Mode) {
        let inner = &self.inner;
        // The power lock orders mode changes with listener changes, so a concurrent
        // set_mode cannot leave the printer listening while the mode says Unreachable.
        let mut power = lock(&inner.power);
        inner.mode_tx.send_replace(mode);
        if mode == Mode::Unreachable {
            if let Some(cycle) = power.cycle.take() {
                cycle.power_off();
            }
        } else if !inner.try_power_on(&mut power) {
            // set_mode cannot fail; if the port is momentarily taken, keep trying.
            inner.handle.spawn(retry_power_on(Arc::clone(inner)));
        }
    }

    pub fn mode(&self) -> Mode {
        *self.inner.mode_tx.borrow()
    }

    /// All tickets so far, complete and partial, in print order.
    pub fn tickets(&self) -> Vec<Ticket> {
        lock(&self.inner.tickets).clone()
    }

    /// Resolves as soon as at least `n` tickets exist, with all tickets so far.
    pub async fn wait_for_tickets(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Ticket>> {
        let mut count = self.inner.count_tx.subscribe();
        // Drop the watch's read guard before taking the ticket lock: `record` takes them in
        // the other order (ticket lock, then the watch's write lock).
        let waited = tokio::time::timeout(timeout, count.wait_for(|&c| c >= n)).await.map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => Ok(self.tickets()),
            Ok(Err(_)) => bail!("printer sim is gone while waiting for {n} ticket(s)"),
            Err(_) => {
                let tickets = self.tickets();
                let summary: Vec<String> = tickets
                    .iter()
                    .map(|t| {
                        let first = t.lines.iter().find(|l| !l.text.trim().is_empty());
                        format!(
                            "#{} ({}): {:?}",
                            t.seq,
                            if t.complete { "complete" } else { "partial" },
                            first.map_or("", |l| l.text.as_str())
                        )
                    })
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {n} ticket(s): {} arrived{}{} (mode {})",
                    tickets.len(),
                    if summary.is_empty() { "" } else { ": " },
                    summary.join("; "),
                    self.mode()
                )
            }
        }
    }

    /// `GS ( H` replies sent.
    pub fn confirmations_sent(&self) -> u64 {
        self.inner.confirmations.load(Ordering::Relaxed)
    }

    /// `DLE EOT` requests answered.
    pub fn status_queries(&self) -> u64 {
        self.inner.status_queries.load(Ordering::Relaxed)
    }

    /// Connections accepted.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Buzzer commands executed (both kinds), whether or not their ticket was ever recorded.
    pub fn beeps(&self) -> u64 {
        self.inner.beeps.load(Ordering::Relaxed)
    }

    /// Drawer kicks executed, whether or not their ticket was ever recorded.
    pub fn drawer_kicks(&self) -> u64 {
        self.inner.drawer_kicks.load(Ordering::Relaxed)
    }

    /// Answers to `DLE EOT` wait this long before they go out (a busy or slow network board);
    /// zero (the default) answers at once.
    pub fn set_status_delay(&self, delay: Duration) {
        self.inner.status_delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// The next `n` tickets (n ≥ 1) are each cut off mid-ticket with the connection dropped
    /// (as [`Mode::DropMidTicket`] `n` times over); then the printer is `Online`.
    pub fn drop_tickets(&self, n: u64) {
        self.inner.more_drops.store(n.saturating_sub(1), Ordering::Relaxed);
        self.set_mode(Mode::DropMidTicket);
    }

    /// Stops listening and closes everything; later `set_mode` calls only change the mode.
    pub fn shutdown(&self) {
        let mut power = lock(&self.inner.power);
        power.shut = true;
        if let Some(cycle) = power.cycle.take() {
            cycle.power_off();
        }
        self.inner.shutdown.cancel();
    }
}

struct Inner {
    /// Fixed at start: every power-on binds exactly this address.
    addr: SocketAddr,
    /// Lets the synchronous `set_mode` re-bind and spawn from any thread.
    handle: Handle,
    mode_tx: watch::Sender<Mode>,
    /// Number of tickets recorded, for `wait_for_tickets`.
    count_tx: watch::Sender<usize>,
    tickets: Mutex<Vec<Ticket>>,
    power: Mutex<Power>,
    shutdown: CancellationToken,
    confirmations: AtomicU64,
    status_queries: AtomicU64,
    connections: AtomicU64,
    beeps: AtomicU64,
    drawer_kicks: AtomicU64,
    /// See [`PrinterSim::set_status_delay`].
    status_delay_ms: AtomicU64,
    /// Further tickets `drop_tickets` drops after the current one.
    more_drops: AtomicU64,
}

#[derive(Default)]
struct Power {
    /// `None` while powered off (Unreachable) or shut down.
    cycle: Option<PowerCycle>,
    shut: bool,
}

/// One powered-on period: the listener and the token every connection of the period hangs off.
struct PowerCycle {
    /// Shared with the accept loop, which polls it under the lock; taking it out closes the
    /// socket synchronously so the port is free (and refusing) the moment `set_mode` returns.
    listener: Arc<Mutex<Option<TcpListener>>>,
    token: CancellationToken,
}

impl PowerCycle {
    fn power_off(self) {
        drop(lock(&self.listener).take());
        self.token.cancel();
    }
}

impl Inner {
    fn power_on(self: &Arc<Self>, power: &mut Power, listener: TcpListener) {
        let cycle = PowerCycle { listener: Arc::new(Mutex::new(Some(listener))), token: self.shutdown.child_token() };
        self.handle.spawn(accept_loop(Arc::clone(self), Arc::clone(&cycle.listener), cycle.token.clone()));
        power.cycle = Some(cycle);
    }

    /// Binds and starts listening unless that is not wanted; false when binding failed.
    fn try_power_on(self: &Arc<Self>, power: &mut Power) -> bool {
        if power.shut || power.cycle.is_some() || *self.mode_tx.borrow() == Mode::Unreachable {
            return true;
        }
        match self.bind() {
            Ok(listener) => {
                self.power_on(power, listener);
                true
            }
            Err(e) => {
                tracing::warn!(addr = %self.addr, error = %e, "printer sim: re-binding failed, retrying");
                false
            }
        }
    }

    /// Synchronous bind, so the port is listening again when `set_mode` returns.
    fn bind(&self) -> std::io::Result<TcpListener> {
        let listener = std::net::TcpListener::bind(self.addr)?;
        listener.set_nonblocking(true)?;
        let _runtime = self.handle.enter();
        TcpListener::from_std(listener)
    }

    fn record(&self, t: TicketBuilder, complete: bool) -> u64 {
        let text = t.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n");
        let mut tickets = lock(&self.tickets);
        let seq = tickets.len() as u64 + 1;
        tickets.push(Ticket {
            seq,
            text,
            lines: t.lines,
            raw: t.raw,
            complete,
            code_table: t.code_table,
            unknown_commands: t.unknown,
            qr_codes: t.qr_codes,
            images: t.images,
            buzzer: t.buzzer,
            drawer_kicks: t.drawer_kicks,
            printed_at: SystemTime::now(),
        });
        // Sent under the lock so concurrent recorders cannot publish counts out of order.
        self.count_tx.send_replace(tickets.len());
        tracing::debug!(seq, complete, "printer sim: ticket printed");
        seq
    }
}

async fn retry_power_on(inner: Arc<Inner>) {
    loop {
        // No readiness signal exists for "the port became free", so this one waits by time.
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let mut power = lock(&inner.power);
        if inner.try_power_on(&mut power) {
            return;
        }
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: Arc<Mutex<Option<TcpListener>>>, power: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = power.cancelled() => return,
            accepted = poll_fn(|cx| match lock(&listener).as_ref() {
                Some(l) => l.poll_accept(cx).map(Some),
                None => Poll::Ready(None),
            }) => accepted,
        };
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                inner.connections.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "printer sim: connection accepted");
                inner.handle.spawn(serve_connection(Arc::clone(&inner), stream, peer, power.child_token()));
            }
            Some(Err(e)) => {
                // E.g. out of file descriptors: back off instead of spinning on the error.
                tracing::warn!(error = %e, "printer sim: accept failed");
                tokio::select! {
                    _ = power.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

/// Reads one connection: answers real-time commands at once, hands every byte to the
/// interpreter task, and writes the interpreter's replies and ASB updates.
async fn serve_connection(inner: Arc<Inner>, mut stream: TcpStream, peer: SocketAddr, cancel: CancellationToken) {
    // Replies are one to seven bytes; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    let feed = Arc::new(Feed::default());
    let asb = Arc::new(AtomicBool::new(false));
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let driver = Driver {
        inner: Arc::clone(&inner),
        feed: Arc::clone(&feed),
        replies: reply_tx,
        asb: Arc::clone(&asb),
        mode_rx: inner.mode_tx.subscribe(),
        cancel: cancel.clone(),
        buf: Vec::new(),
        pos: 0,
        eof: false,
        generation: 0,
        drop_at: None,
        core: Core::default(),
    };
    inner.handle.spawn(driver.run());

    let mut mode_rx = inner.mode_tx.subscribe();
    let mut last_mode = *mode_rx.borrow_and_update();
    let mut scanner = RtScanner::default();
    let mut rbuf = vec![0u8; 16 * 1024];
    let mut reading = true;
    let mut watching = true;
    let abort = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break true,
            read = stream.read(&mut rbuf), if reading => match read {
                Ok(0) => {
                    reading = false;
                    feed.set_eof();
                }
                Ok(n) => {
                    let mode = *mode_rx.borrow();
                    let (data, answer) = scan_realtime(&inner, &feed, &mut scanner, &rbuf[..n], mode);
                    feed.push(data);
                    let delay = inner.status_delay_ms.load(Ordering::Relaxed);
                    if !answer.is_empty() && delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if !answer.is_empty()
                        && let Err(e) = stream.write_all(&answer).await
                    {
                        tracing::debug!(%peer, error = %e, "printer sim: write failed, closing");
                        break false;
                    }
                }
                Err(e) => {
                    // What arrived before the error is still in the buffer and still prints.
                    tracing::debug!(%peer, error = %e, "printer sim: read failed");
                    reading = false;
                    feed.set_eof();
                }
            },
            reply = reply_rx.recv() => match reply {
                Some(bytes) => {
                    if let Err(e) = stream.write_all(&bytes).await {
                        tracing::debug!(%peer, error = %e, "printer sim: write failed, closing");
                        break false;
                    }
                }
                // The interpreter is done: the client closed its side and everything printed.
                None => break false,
            },
            changed = mode_rx.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let mode = *mode_rx.borrow_and_update();
                let previous = std::mem::replace(&mut last_mode, mode);
                if asb.load(Ordering::Acquire)
                    && let Some(status) = mode.asb_status()
                    && Some(status) != previous.asb_status()
                    && let Err(e) = stream.write_all(&status).await
                {
                    tracing::debug!(%peer, error = %e, "printer sim: write failed, closing");
                    break false;
                }
            }
        }
    };
    // Whatever the reason, no more data comes; the interpreter may still print what it holds.
    feed.set_eof();
    if abort {
        // Power off / dropped mid-ticket: a reset, not a polite close.
        let _ = stream.set_zero_linger();
    }
    tracing::debug!(%peer, abort, "printer sim: connection closed");
}

/// Runs one read chunk through the real-time scanner: returns the bytes for the interpreter
/// and the immediate answers.
fn scan_realtime(inner: &Inner, feed: &Feed, scanner: &mut RtScanner, chunk: &[u8], mode: Mode) -> (Vec<u8>, Vec<u8>) {
    let mut data = Vec::with_capacity(chunk.len());
    let mut answer = Vec::new();
    for &b in chunk {
        data.push(b);
        match scanner.push(b) {
            Some(Realtime::Status(n)) => {
                if let Some(status) = mode.realtime_status(n) {
                    answer.push(status);
                    inner.status_queries.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Realtime::ClearBuffers) if mode.answers() => {
                // Everything received before (this command included) is discarded.
                data.clear();
                feed.clear();
                answer.extend_from_slice(&CLEAR_RESPONSE);
            }
            _ => {}
        }
    }
    (data, answer)
}

/// Bytes received but not yet interpreted (the printer's receive buffer).
#[derive(Default)]
struct Feed {
    state: Mutex<FeedState>,
    /// Bumped (under the `state` lock) by `DLE DC4 8`: bytes the interpreter took out before
    /// the bump must be discarded too.
    generation: AtomicU64,
    notify: Notify,
}

#[derive(Default)]
struct FeedState {
    data: Vec<u8>,
    eof: bool,
}

impl Feed {
    fn push(&self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        lock(&self.state).data.extend_from_slice(&bytes);
        self.notify.notify_one();
    }

    fn set_eof(&self) {
        lock(&self.state).eof = true;
        self.notify.notify_one();
    }

    fn clear(&self) {
        let mut state = lock(&self.state);
        state.data.clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(state);
        self.notify.notify_one();
    }
}

enum Realtime {
    Status(u8),
    ClearBuffers,
}

/// Finds real-time commands in the raw stream, across read boundaries. Like the real printer
/// it does not know about command parameters, so a `10 04 n` inside image data is answered too.
#[derive(Default)]
struct RtScanner {
    state: RtState,
}

#[derive(Default)]
enum RtState {
    #[default]
    Idle,
    Dle,
    Eot,
    Enq,
    Dc4,
    Dc4Args {
        func: u8,
        got: [u8; 7],
        len: usize,
        need: usize,
    },
}

impl RtScanner {
    fn push(&mut self, b: u8) -> Option<Realtime> {
        let (next, event) = match std::mem::take(&mut self.state) {
            RtState::Idle => (if b == DLE { RtState::Dle } else { RtState::Idle }, None),
            RtState::Dle => {
                let next = match b {
                    EOT => RtState::Eot,
                    ENQ => RtState::Enq,
                    DC4 => RtState::Dc4,
                    DLE => RtState::Dle,
                    _ => RtState::Idle,
                };
                (next, None)
            }
            RtState::Eot => (RtState::Idle, Some(Realtime::Status(b))),
            RtState::Enq => (RtState::Idle, None),
            RtState::Dc4 => match dc4_args(b) {
                0 => (RtState::Idle, None),
                need => (RtState::Dc4Args { func: b, got: [0; 7], len: 0, need }, None),
            },
            RtState::Dc4Args { func, mut got, len, need } => {
                if let Some(slot) = got.get_mut(len) {
                    *slot = b;
                }
                let len = len + 1;
                if len < need {
                    (RtState::Dc4Args { func, got, len, need }, None)
                } else {
                    let clear = func == 8 && got == CLEAR_MAGIC;
                    (RtState::Idle, clear.then_some(Realtime::ClearBuffers))
                }
            }
        };
        self.state = next;
        event
    }
}

/// Parameter bytes after `DLE DC4 fn`.
fn dc4_args(func: u8) -> usize {
    match func {
        1 | 2 => 2,
        7 => 1,
        8 => 7,
        _ => 0,
    }
}

enum Ended {
    Eof,
    Cancelled,
    Dropped,
}

enum Fetched {
    Data,
    Eof,
    Cancelled,
}

/// The interpreter task of one connection: feeds the `Core` token by token, but only while the
/// printer is online, and carries out what the tokens ask for (replies, cuts, ASB).
struct Driver {
    inner: Arc<Inner>,
    feed: Arc<Feed>,
    replies: mpsc::UnboundedSender<Vec<u8>>,
    asb: Arc<AtomicBool>,
    mode_rx: watch::Receiver<Mode>,
    cancel: CancellationToken,
    /// Bytes taken from the feed; `buf[pos..]` is not interpreted yet.
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    generation: u64,
    /// DropMidTicket: the `buf` index at which the connection is dropped.
    drop_at: Option<usize>,
    core: Core,
}

impl Driver {
    async fn run(mut self) {
        let ended = self.process().await;
        if !matches!(ended, Ended::Dropped) && self.core.ticket.has_text() {
            // Lines already printed are on the paper even though no cut followed.
            let ticket = self.core.take_ticket();
            self.inner.record(ticket, false);
        }
        // Dropping `self` closes the reply channel, which tells the connection we are done.
    }

    async fn process(&mut self) -> Ended {
        loop {
            let Some(mode) = self.wait_printing().await else {
                return Ended::Cancelled;
            };
            self.sync_clear();
            if self.core.skip == 0 && self.drop_at.is_some_and(|at| self.pos >= at) {
                self.drop_connection();
                return Ended::Dropped;
            }
            if let Some(stopped) = mode.stops_at_ticket()
                && self.core.starts_text(&self.buf[self.pos..])
            {
                // The printer stops before the ticket's first line: everything of it is held.
                self.inner.mode_tx.send_if_modified(|m| {
                    if *m == mode {
                        *m = stopped;
                        true
                    } else {
                        false
                    }
                });
                continue;
            }
            if self.drop_at.is_none() && mode == Mode::DropMidTicket && self.core.starts_text(&self.buf[self.pos..]) {
                if !self.plan_drop().await {
                    return Ended::Cancelled;
                }
                continue;
            }
            match self.core.step(&self.buf[self.pos..], mode) {
                Step::Done(n, action) => {
                    self.pos += n;
                    if let Some(action) = action {
                        self.act(action, mode);
                    }
                }
                Step::Need => match self.fetch().await {
                    Fetched::Data => {}
                    Fetched::Eof => {
                        // An incomplete command at the end: kept in raw, never executed.
                        let rest = &self.buf[self.pos..];
                        self.core.ticket.raw.extend_from_slice(rest);
                        self.pos = self.buf.len();
                        return Ended::Eof;
                    }
                    Fetched::Cancelled => return Ended::Cancelled,
                },
            }
        }
    }

    /// Waits until the mode prints; `None` when the connection is being torn down.
    async fn wait_printing(&mut self) -> Option<Mode> {
        loop {
            if self.cancel.is_cancelled() {
                return None;
            }
            let mode = *self.mode_rx.borrow_and_update();
            if mode.prints() {
                return Some(mode);
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                changed = self.mode_rx.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Takes more bytes from the feed, waiting for them if needed.
    async fn fetch(&mut self) -> Fetched {
        let feed = Arc::clone(&self.feed);
        loop {
            {
                let mut state = lock(&feed.state);
                let generation = feed.generation.load(Ordering::Acquire);
                if generation != self.generation {
                    self.apply_clear(generation);
                }
                if !state.data.is_empty() {
                    if self.pos > 0 {
                        self.buf.drain(..self.pos);
                        if let Some(at) = &mut self.drop_at {
                            *at = at.saturating_sub(self.pos);
                        }
                        self.pos = 0;
                    }
                    self.buf.append(&mut state.data);
                    return Fetched::Data;
                }
                if state.eof {
                    self.eof = true;
                    return Fetched::Eof;
                }
            }
            // notify_one keeps a permit, so a push between the check and here is not lost.
            tokio::select! {
                _ = feed.notify.notified() => {}
                _ = self.cancel.cancelled() => return Fetched::Cancelled,
            }
        }
    }

    fn sync_clear(&mut self) {
        let generation = self.feed.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.apply_clear(generation);
        }
    }

    /// `DLE DC4 8` arrived: drop what was received before it, including the print buffer.
    fn apply_clear(&mut self, generation: u64) {
        self.buf.clear();
        self.pos = 0;
        self.drop_at = None;
        self.core.clear_buffers();
        self.generation = generation;
    }

    /// DropMidTicket: "about half of its print data" needs the ticket's length, so wait until
    /// the cut (or the end of the connection) has arrived and drop at the midpoint. Commands
    /// before the first text are processed normally, so a status preamble still gets answers.
    async fn plan_drop(&mut self) -> bool {
        loop {
            let pending = &self.buf[self.pos..];
            let end = match find_cut_end(pending) {
                Some(end) => Some(end),
                None if self.eof => Some(pending.len()),
                None => None,
            };
            if let Some(end) = end {
                self.drop_at = Some(self.pos + (end / 2).max(1));
                return true;
            }
            if let Fetched::Cancelled = self.fetch().await {
                return false;
            }
        }
    }

    fn drop_connection(&mut self) {
        let ticket = self.core.take_ticket();
        let seq = self.inner.record(ticket, false);
        tracing::debug!(seq, "printer sim: dropping the connection mid-ticket");
        let more =
            self.inner.more_drops.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        self.inner.mode_tx.send_if_modified(|mode| {
            if *mode == Mode::DropMidTicket && !more {
                *mode = Mode::Online;
                true
            } else {
                false
            }
        });
        self.cancel.cancel();
    }

    fn act(&mut self, action: Action, mode: Mode) {
        match action {
            Action::Reply(bytes) => {
                self.reply(bytes, mode);
            }
            Action::Confirm(id) => {
                if !matches!(mode, Mode::WithholdConfirm | Mode::NoProcessId)
                    && self.reply(vec![0x37, 0x22, id[0], id[1], id[2], id[3], 0x00], mode)
                {
                    self.inner.confirmations.fetch_add(1, Ordering::Relaxed);
                }
            }
            Action::Cut => {
                let ticket = self.core.take_ticket();
                self.inner.record(ticket, true);
            }
            Action::Asb(on) => {
                self.asb.store(on, Ordering::Release);
                if on && let Some(status) = mode.asb_status() {
                    self.reply(status.to_vec(), mode);
                }
            }
            Action::Beep => {
                self.inner.beeps.fetch_add(1, Ordering::Relaxed);
            }
            Action::DrawerKick => {
                self.inner.drawer_kicks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn reply(&self, bytes: Vec<u8>, mode: Mode) -> bool {
        mode.answers() && self.replies.send(bytes).is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Style {
    width: u8,
    height: u8,
    bold: bool,
    reverse: bool,
    font_b: bool,
}

impl Default for Style {
    fn default() -> Self {
        Style { width: 1, height: 1, bold: false, reverse: false, font_b: false }
    }
}

impl Style {
    /// `self` is the style so far: sizes and flags accumulate, the font stays the first one.
    fn merge(self, other: Style) -> Style {
        Style {
            width: self.width.max(other.width),
            height: self.height.max(other.height),
            bold: self.bold || other.bold,
            reverse: self.reverse || other.reverse,
            font_b: self.font_b,
        }
    }
}

/// The line being composed (the printer's print buffer).
#[derive(Default)]
struct LineBuf {
    text: String,
    /// Merged style of the visible characters so far.
    style: Option<Style>,
}

impl LineBuf {
    fn push(&mut self, c: char, style: Style) {
        self.text.push(c);
        if !c.is_whitespace() {
            self.style = Some(self.style.map_or(style, |s| s.merge(style)));
        }
    }

    fn finish(self, fallback: Style) -> TicketLine {
        let s = self.style.unwrap_or(fallback);
        TicketLine {
            text: self.text,
            width_mult: s.width,
            height_mult: s.height,
            bold: s.bold,
            reverse: s.reverse,
            font_b: s.font_b,
        }
    }
}

#[derive(Default)]
struct TicketBuilder {
    raw: Vec<u8>,
    lines: Vec<TicketLine>,
    line: LineBuf,
    code_table: Option<u8>,
    unknown: u32,
    qr_codes: Vec<String>,
    images: Vec<RasterImage>,
    buzzer: Vec<Buzzer>,
    drawer_kicks: u32,
}

impl TicketBuilder {
    fn has_text(&self) -> bool {
        !self.line.text.is_empty() || self.lines.iter().any(|l| !l.text.is_empty())
    }

    fn end_line(&mut self, style: Style) {
        let line = std::mem::take(&mut self.line);
        self.lines.push(line.finish(style));
    }

    /// Something printed as a band of its own (an image, a QR code): pending text is printed
    /// first, as its own line, then `text` stands for the band.
    fn push_band(&mut self, text: String, style: Style) {
        if !self.line.text.is_empty() {
            self.end_line(style);
        }
        self.lines.push(TicketLine { text, width_mult: 1, height_mult: 1, bold: false, reverse: false, font_b: false });
    }
}

enum Step {
    /// The bytes do not hold a whole token yet.
    Need,
    /// This many bytes were consumed, maybe with something to do.
    Done(usize, Option<Action>),
}

enum Action {
    Reply(Vec<u8>),
    Confirm([u8; 4]),
    Cut,
    Asb(bool),
    Beep,
    DrawerKick,
}

/// The data bytes of a known-length command that are kept, not just skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    Raster { bytes_per_row: usize, height: usize },
    QrData,
}

/// A kept block being received: `Core::skip` data bytes are still to come.
struct Block {
    kind: Kept,
    data: Vec<u8>,
}

/// Printer state and the ticket in progress; synchronous so it can be fuzzed directly.
#[derive(Default)]
struct Core {
    /// Code table selected since the last `ESC @`.
    table: Option<u8>,
    style: Style,
    ticket: TicketBuilder,
    /// Parameter bytes of the current command still to skip (images, QR data …). They are
    /// data, never commands, whatever they look like.
    skip: usize,
    /// Where the skipped bytes go when the command's data is kept (raster image, QR data).
    block: Option<Block>,
    /// QR symbol data stored with `GS ( k` fn 80, printed by fn 81; cleared by `ESC @`.
    qr: Option<Vec<u8>>,
}

impl Core {
    fn step(&mut self, bytes: &[u8], mode: Mode) -> Step {
        if self.skip > 0 {
            if bytes.is_empty() {
                return Step::Need;
            }
            let n = self.skip.min(bytes.len());
            self.ticket.raw.extend_from_slice(&bytes[..n]);
            if let Some(block) = &mut self.block {
                block.data.extend_from_slice(&bytes[..n]);
            }
            self.skip -= n;
            if self.skip == 0 {
                self.finish_block();
            }
            return Step::Done(n, None);
        }
        let Parsed::Tok(tok, len) = parse_token(bytes) else {
            return Step::Need;
        };
        self.ticket.raw.extend_from_slice(&bytes[..len]);
        Step::Done(len, self.apply(tok, mode))
    }

    /// Whether the next token would put the first visible output on a fresh ticket.
    fn starts_text(&self, bytes: &[u8]) -> bool {
        self.skip == 0 && !self.ticket.has_text() && matches!(parse_token(bytes), Parsed::Tok(tok, _) if tok.prints())
    }

    fn apply(&mut self, tok: Tok, mode: Mode) -> Option<Action> {
        match tok {
            Tok::Text(b) => {
                let c = decode(self.table, b);
                self.ticket.line.push(c, self.style);
            }
            Tok::Tab => self.ticket.line.push(' ', self.style),
            Tok::Lf => self.ticket.end_line(self.style),
            Tok::Feed(0) => {
                // ESC d 0 prints the buffer without feeding.
                if !self.ticket.line.text.is_empty() {
                    self.ticket.end_line(self.style);
                }
            }
            Tok::Feed(n) => {
                for _ in 0..n {
                    self.ticket.end_line(self.style);
                }
            }
            Tok::Nop => {}
            Tok::Init => {
                // ESC @ also clears the print buffer: unterminated text before it is lost, as
                // on the real printer.
                self.table = None;
                self.style = Style::default();
                self.qr = None;
                self.ticket.line = LineBuf::default();
                return Some(Action::Asb(false));
            }
            Tok::CodeTable(n) => {
                self.table = Some(n);
                self.ticket.code_table = Some(n);
            }
            Tok::Bold(on) => self.style.bold = on,
            Tok::PrintMode(n) => {
                self.style.font_b = n & 0x01 != 0;
                self.style.bold = n & 0x08 != 0;
                self.style.height = if n & 0x10 != 0 { 2 } else { 1 };
                self.style.width = if n & 0x20 != 0 { 2 } else { 1 };
            }
            Tok::Size(n) => {
                self.style.width = ((n >> 4) & 0x07) + 1;
                self.style.height = (n & 0x07) + 1;
            }
            Tok::Reverse(on) => self.style.reverse = on,
            Tok::Cut => return Some(Action::Cut),
            Tok::Skip { data, image, unknown } => {
                self.skip = data;
                if unknown {
                    self.ticket.unknown += 1;
                }
                if image {
                    self.ticket.push_band("[image]".to_string(), self.style);
                }
            }
            Tok::Raster { bytes_per_row, height } => {
                // Nothing to print: malformed.
                if bytes_per_row == 0 || height == 0 {
                    self.ticket.unknown += 1;
                } else {
                    self.start_block(Kept::Raster { bytes_per_row, height }, tok.data_len());
                }
            }
            Tok::QrStore { len, valid } => {
                if !valid || len == 0 {
                    self.ticket.unknown += 1;
                }
                self.qr = None;
                self.start_block(Kept::QrData, len);
            }
            Tok::QrPrint { valid } => match &self.qr {
                Some(data) => {
                    if !valid {
                        self.ticket.unknown += 1;
                    }
                    let text = String::from_utf8_lossy(data).into_owned();
                    self.ticket.push_band(format!("[QR {text}]"), self.style);
                    self.ticket.qr_codes.push(text);
                }
                None => self.ticket.unknown += 1,
            },
            Tok::Font(font_b) => self.style.font_b = font_b,
            Tok::Buzzer(buzzer) => {
                self.ticket.buzzer.push(buzzer);
                return Some(Action::Beep);
            }
            Tok::DrawerKick => {
                self.ticket.drawer_kicks += 1;
                return Some(Action::DrawerKick);
            }
            Tok::PaperStatus(1 | 49) => return Some(Action::Reply(vec![mode.paper_sensor()])),
            Tok::PaperStatus(2 | 50) => return Some(Action::Reply(vec![0x00])),
            Tok::PaperStatus(_) => {}
            Tok::Asb(n) => return Some(Action::Asb(n != 0)),
            Tok::Confirm(id) => return Some(Action::Confirm(id)),
            Tok::Unknown => self.ticket.unknown += 1,
        }
        None
    }

    /// Ends the ticket in progress (flushing an unterminated line) and starts a new one.
    fn take_ticket(&mut self) -> TicketBuilder {
        let mut ticket = std::mem::take(&mut self.ticket);
        if !ticket.line.text.is_empty() {
            ticket.end_line(self.style);
        }
        ticket
    }

    /// Starts keeping the next `len` data bytes; with none, the block is finished at once.
    fn start_block(&mut self, kind: Kept, len: usize) {
        // Grows with what actually arrives: a bogus header must not allocate gigabytes.
        self.block = Some(Block { kind, data: Vec::with_capacity(len.min(64 * 1024)) });
        self.skip = len;
        if len == 0 {
            self.finish_block();
        }
    }

    /// All data bytes of the kept block have arrived.
    fn finish_block(&mut self) {
        let Some(Block { kind, data }) = self.block.take() else {
            return;
        };
        match kind {
            Kept::Raster { bytes_per_row, height } => {
                let image = RasterImage { width: bytes_per_row.saturating_mul(8), height, data };
                self.ticket.push_band(format!("[IMAGE {}x{}]", image.width, image.height), self.style);
                self.ticket.images.push(image);
            }
            Kept::QrData => self.qr = (!data.is_empty()).then_some(data),
        }
    }

    fn clear_buffers(&mut self) {
        self.skip = 0;
        self.block = None;
        self.ticket.line = LineBuf::default();
    }
}

/// Text bytes: only the tables selected with `ESC t` are known; anything else high is U+FFFD so
/// a missing code-page selection is visible.
fn decode(table: Option<u8>, b: u8) -> char {
    match table {
        Some(t) if t == CodePage::Pc858.escpos_table() => CodePage::Pc858.decode_byte(b),
        Some(t) if t == CodePage::Wpc1252.escpos_table() => CodePage::Wpc1252.decode_byte(b),
        _ if b < 0x80 => char::from(b),
        _ => char::REPLACEMENT_CHARACTER,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Text(u8),
    Tab,
    Lf,
    Nop,
    Init,
    CodeTable(u8),
    Bold(bool),
    PrintMode(u8),
    Size(u8),
    Reverse(bool),
    Feed(u8),
    Cut,
    /// The header was consumed; `data` parameter bytes follow and are skipped.
    Skip {
        data: usize,
        image: bool,
        unknown: bool,
    },
    /// `GS v 0` header; `bytes_per_row * height` image bytes follow and are kept.
    Raster {
        bytes_per_row: usize,
        height: usize,
    },
    /// `GS ( k` cn 49 fn 80 header (up to and including `m`); `len` QR data bytes follow.
    /// `valid`: `m` is 48.
    QrStore {
        len: usize,
        valid: bool,
    },
    /// `GS ( k` cn 49 fn 81 (print the stored QR symbol); `valid`: `m` is 48.
    QrPrint {
        valid: bool,
    },
    /// `ESC M n`: true for Font B.
    Font(bool),
    Buzzer(Buzzer),
    DrawerKick,
    PaperStatus(u8),
    Asb(u8),
    Confirm([u8; 4]),
    Unknown,
}

impl Tok {
    /// Whether this token puts something visible on the paper.
    fn prints(self) -> bool {
        matches!(
            self,
            Tok::Text(_) | Tok::Tab | Tok::Skip { image: true, .. } | Tok::Raster { .. } | Tok::QrPrint { .. }
        )
    }

    /// Data bytes that follow the token and belong to it.
    fn data_len(self) -> usize {
        match self {
            Tok::Skip { data, .. } => data,
            Tok::Raster { bytes_per_row, height } => bytes_per_row.saturating_mul(height),
            Tok::QrStore { len, .. } => len,
            _ => 0,
        }
    }
}

enum Parsed {
    Need,
    /// A token and the number of bytes it consumed (always at least 1).
    Tok(Tok, usize),
}

fn parse_token(b: &[u8]) -> Parsed {
    let Some(&c) = b.first() else {
        return Parsed::Need;
    };
    match c {
        LF => Parsed::Tok(Tok::Lf, 1),
        HT => Parsed::Tok(Tok::Tab, 1),
        ESC => parse_esc(b),
        GS => parse_gs(b),
        FS => parse_fs(b),
        DLE => parse_dle(b),
        // CR, other control bytes and DEL print nothing.
        0x00..=0x1F | 0x7F => Parsed::Tok(Tok::Nop, 1),
        _ => Parsed::Tok(Tok::Text(c), 1),
    }
}

/// A command of exactly `len` bytes; `make` sees them.
fn fixed(b: &[u8], len: usize, make: impl FnOnce(&[u8]) -> Tok) -> Parsed {
    match b.get(..len) {
        Some(cmd) => Parsed::Tok(make(cmd), len),
        None => Parsed::Need,
    }
}

fn nop(b: &[u8], len: usize) -> Parsed {
    fixed(b, len, |_| Tok::Nop)
}

/// A command whose parameters end with a NUL, starting at `from`.
fn until_nul(b: &[u8], from: usize) -> Parsed {
    match b.get(from..).and_then(|rest| rest.iter().position(|&x| x == 0)) {
        Some(i) => Parsed::Tok(Tok::Nop, from + i + 1),
        None => Parsed::Need,
    }
}

fn u16le(lo: u8, hi: u8) -> usize {
    usize::from(lo) | (usize::from(hi) << 8)
}

/// `<ESC|GS|FS> ( fn pL pH data…`: skip the data; `known` says which functions are expected.
fn skip_block(b: &[u8], known: impl FnOnce(u8) -> bool) -> Parsed {
    fixed(b, 5, |c| Tok::Skip { data: u16le(c[3], c[4]), image: false, unknown: !known(c[2]) })
}

fn parse_esc(b: &[u8]) -> Parsed {
    let Some(&x) = b.get(1) else {
        return Parsed::Need;
    };
    match x {
        b'@' => Parsed::Tok(Tok::Init, 2),
        b'2' | b'<' | b'L' | b'S' => nop(b, 2),
        // Legacy partial cuts.
        b'i' | b'm' => Parsed::Tok(Tok::Cut, 2),
        b't' => fixed(b, 3, |c| Tok::CodeTable(c[2])),
        b'E' => fixed(b, 3, |c| Tok::Bold(c[2] & 1 == 1)),
        b'!' => fixed(b, 3, |c| Tok::PrintMode(c[2])),
        b'd' => fixed(b, 3, |c| Tok::Feed(c[2])),
        b'M' => fixed(b, 3, |c| match c[2] {
            0 | 48 => Tok::Font(false),
            1 | 49 => Tok::Font(true),
            // Fonts C, D, E and the special fonts cannot be told apart in `TicketLine`.
            _ => Tok::Unknown,
        }),
        b'B' => fixed(b, 4, |c| Tok::Buzzer(Buzzer::EscB { n: c[2], t: c[3] })),
        b'p' => fixed(b, 5, |_| Tok::DrawerKick),
        b'-' | b'a' | b'R' | b'3' | b'G' | b'J' | b' ' | b'{' | b'r' | b'V' | b'U' | b'=' | b'e' | b'T' | b'%' => {
            nop(b, 3)
        }
        b'$' | b'\\' | b'c' => nop(b, 4),
        b'W' => nop(b, 10),
        b'D' => until_nul(b, 2),
        b'*' => fixed(b, 5, |c| {
            let columns = u16le(c[3], c[4]);
            // Modes 32/33 are 24-dot: three bytes per column.
            let per_column = if c[2] >= 32 { 3 } else { 1 };
            Tok::Skip { data: columns * per_column, image: true, unknown: false }
        }),
        b'(' => {
            if b.get(2) == Some(&b'A') && b.get(3..5) == Some(&[4, 0][..]) {
                return fixed(b, 9, |c| {
                    if c[5] == 48 { Tok::Buzzer(Buzzer::Epson { n: c[6], c: c[7], t: c[8] }) } else { Tok::Nop }
                });
            }
            skip_block(b, |f| f == b'A')
        }
        _ => Parsed::Tok(Tok::Unknown, 2),
    }
}

fn parse_gs(b: &[u8]) -> Parsed {
    let Some(&x) = b.get(1) else {
        return Parsed::Need;
    };
    match x {
        b'!' => fixed(b, 3, |c| Tok::Size(c[2])),
        b'B' => fixed(b, 3, |c| Tok::Reverse(c[2] & 1 == 1)),
        b'V' => match b.get(2) {
            None => Parsed::Need,
            // Function B/C/D cuts carry a feed amount.
            Some(65 | 66 | 97 | 98 | 103 | 104) => fixed(b, 4, |_| Tok::Cut),
            Some(_) => fixed(b, 3, |_| Tok::Cut),
        },
        b'r' => fixed(b, 3, |c| Tok::PaperStatus(c[2])),
        b'a' => fixed(b, 3, |c| Tok::Asb(c[2])),
        b'h' | b'w' | b'H' | b'f' | b'b' | b'I' | b'/' | b'T' => nop(b, 3),
        b'L' | b'W' | b'P' | b'$' | b'\\' => nop(b, 4),
        b'k' => match b.get(2) {
            None => Parsed::Need,
            Some(&m) if m <= 6 => until_nul(b, 3),
            Some(_) => fixed(b, 4, |c| Tok::Skip { data: usize::from(c[3]), image: false, unknown: false }),
        },
        b'v' => match b.get(2) {
            None => Parsed::Need,
            Some(b'0') => fixed(b, 8, |c| Tok::Raster { bytes_per_row: u16le(c[4], c[5]), height: u16le(c[6], c[7]) }),
            Some(_) => Parsed::Tok(Tok::Unknown, 2),
        },
        b'(' => {
            if b.len() >= 5 && b[2] == b'H' && u16le(b[3], b[4]) == 6 {
                return fixed(b, 11, |c| {
                    if c[5] == 0x30 && c[6] == 0x30 { Tok::Confirm([c[7], c[8], c[9], c[10]]) } else { Tok::Nop }
                });
            }
            if b.get(2) == Some(&b'k') {
                return parse_2d_code(b);
            }
            skip_block(b, |f| matches!(f, b'k' | b'H' | b'L'))
        }
        _ => Parsed::Tok(Tok::Unknown, 2),
    }
}

/// `GS ( k pL pH cn fn m data…`: QR code (cn 49) store (fn 80) and print (fn 81) are kept; every
/// other function and symbol type is skipped as before.
fn parse_2d_code(b: &[u8]) -> Parsed {
    let Some(&[lo, hi]) = b.get(3..5) else {
        return Parsed::Need;
    };
    let len = u16le(lo, hi);
    if len < 3 {
        return skip_block(b, |_| true);
    }
    // pL pH count these three bytes, so they are part of the command whatever they are.
    fixed(b, 8, |c| match (c[5], c[6]) {
        (49, 80) => Tok::QrStore { len: len - 3, valid: c[7] == 48 },
        (49, 81) if len == 3 => Tok::QrPrint { valid: c[7] == 48 },
        // Print takes no data.
        (49, 81) => Tok::Skip { data: len - 3, image: false, unknown: true },
        _ => Tok::Skip { data: len - 3, image: false, unknown: false },
    })
}

fn parse_fs(b: &[u8]) -> Parsed {
    let Some(&x) = b.get(1) else {
        return Parsed::Need;
    };
    match x {
        b'.' | b'&' => nop(b, 2),
        b'C' | b'!' | b'-' | b'W' => nop(b, 3),
        b'S' => nop(b, 4),
        // Print NV bit image.
        b'p' => fixed(b, 4, |_| Tok::Skip { data: 0, image: true, unknown: false }),
        b'(' => skip_block(b, |f| matches!(f, b'A' | b'C' | b'E' | b'L' | b'e')),
        _ => Parsed::Tok(Tok::Unknown, 2),
    }
}

/// Real-time commands are answered by the reader; here they are only stepped over.
fn parse_dle(b: &[u8]) -> Parsed {
    match b.get(1) {
        None => Parsed::Need,
        Some(&(EOT | ENQ)) => nop(b, 3),
        Some(&DC4) => match b.get(2) {
            None => Parsed::Need,
            Some(&func) => nop(b, 3 + dc4_args(func)),
        },
        Some(_) => Parsed::Tok(Tok::Nop, 1),
    }
}

/// Offset just past the first cut in `bytes`, if the whole way there has arrived.
fn find_cut_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        let Parsed::Tok(tok, len) = parse_token(&bytes[i..]) else {
            return None;
        };
        i += len;
        match tok {
            Tok::Cut => return Some(i),
            _ => i = i.saturating_add(tok.data_len()),
        }
    }
    None
}

/// A poisoned lock only means another task panicked mid-update of plain data; keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tokio::io::AsyncRead;

    /// Upper bound for things that do happen; tests resolve as soon as they do.
    const WAIT: Duration = Duration::from_secs(5);
    /// How long "nothing arrives" is checked. An absence has no event to wait for.
    const QUIET: Duration = Duration::from_millis(300);

    async fn start_sim() -> PrinterSim {
        PrinterSim::start("127.0.0.1:0").await.expect("start simulator")
    }

    async fn connect(sim: &PrinterSim) -> TcpStream {
        TcpStream::connect(sim.addr()).await.expect("connect")
    }

    async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(WAIT, s.read_exact(&mut buf)).await.expect("reply in time").expect("read reply");
        buf
    }

    async fn assert_quiet(s: &mut TcpStream) {
        let mut b = [0u8; 16];
        if let Ok(r) = tokio::time::timeout(QUIET, s.read(&mut b)).await {
            panic!("expected no reply, got {r:?} {:?}", &b[..*r.as_ref().unwrap_or(&0)]);
        }
    }

    /// Reads until the printer closes (or resets) the connection.
    async fn read_to_close(s: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
        let mut all = Vec::new();
        let mut b = [0u8; 1024];
        loop {
            match tokio::time::timeout(WAIT, s.read(&mut b)).await.expect("printer closes the connection in time") {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&b[..n]),
            }
        }
    }

    fn ticket(lines: &[&str]) -> Vec<u8> {
        let mut b = vec![ESC, b'@', ESC, b't', 19];
        for line in lines {
            b.extend(CodePage::Pc858.encode(line));
            b.push(LF);
        }
        b.extend([ESC, b'd', 3, GS, b'V', 66, 0]);
        b
    }

    fn confirm_request(id: [u8; 4]) -> Vec<u8> {
        let mut b = vec![GS, b'(', b'H', 6, 0, 0x30, 0x30];
        b.extend(id);
        b
    }

    fn confirm_reply(id: [u8; 4]) -> Vec<u8> {
        let mut b = vec![0x37, 0x22];
        b.extend(id);
        b.push(0);
        b
    }

    const STATUS_ALL: [u8; 12] = [DLE, EOT, 1, DLE, EOT, 2, DLE, EOT, 3, DLE, EOT, 4];
    const GS_R1: [u8; 3] = [GS, b'r', 1];

    #[tokio::test]
    async fn decodes_pc858_umlauts_and_euro() {
        let sim = start_sim().await;
        let mut s = connect(&sim).await;
        let bytes = ticket(&["Grüße aus Köln", "Käse-Spätzle 12,50 €", "ÄÖÜ äöü ß"]);
        s.write_all(&bytes).await.unwrap();
        let t = sim.wait_for_tickets(1, WAIT).await.unwrap().remove(0);
        assert_eq!(t.text, "Grüße aus Köln\nKäse-Spätzle 12,50 €\nÄÖÜ äöü ß\n\n\n");
        assert_eq!(t.seq, 1);
        assert!(t.complete);
        assert_eq!(t.code_table, Some(19));
        assert_eq!(t.unknown_commands, 0);
        assert_eq!(t.raw, bytes);
    }

    #[tokio::test]
    async fn high_bytes_without_code_table_show_as_replacement() {
        let sim = start_sim().await;
        let mut s = connect(&sim).await;
        // The second ticket selects a table but then resets it with ESC @.
        let bytes = [
            &[ESC, b'@', b'K', 0x84, b's', b'e', LF, GS, b'V', 0][..],
            &[ESC, b't', 19, ESC, b'@', b'K', 0x84, LF, GS, b'V', 1][..],
        ]
        .concat();
        s.write_all(&bytes).await.unwrap();
        let t = sim.wait_for_tickets(2, WAIT).await.unwrap();
        assert_eq!(t[0].text, "K\u{FFFD}se");
        assert_eq!(t[0].code_table, None);
        assert_eq!(t[1].text, "K\u{FFFD}");
        assert_eq!(t[1].code_table, Some(19));
    }

    #[tokio::test]
    async fn two_tickets_split_at_cuts_with_styles() {
        let sim = start_sim().await;
        let mut first = vec![ESC, b'@', ESC, b't', 19, GS, b'!', 0x11, ESC, b'E', 1];
        first.extend(b"#42\n");
        first.extend([GS, b'!', 0, ESC, b'E', 0]);
        first.extend(b"2x Pizza\n");
        first.extend([GS, b'B', 1]);
        first.extend(b" ALLERGIE \n");
        first.extend([GS, b'B', 0, GS, b'V', 66, 0]);
        let mut second = vec![ESC, b'@', ESC, b't', 19];
        second.extend(b"Zweiter\n");
        second.extend([GS, b'V', 0]);
        let mut s = connect(&sim).await;
        s.write_all(&[first.clone(), second.clone()].concat()).await.unwrap();
        let t = sim.wait_for_tickets(2, WAIT).await.unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].seq, t[1].seq), (1, 2));
        assert_eq!(
            t[0].lines[0],
            TicketLine { text: "#42".into(), width_mult: 2, height_mult: 2, bold: true, reverse: false, font_b: false }
        );
        assert_eq!(t[0].lines[0].columns(), 6);
        assert_eq!(t[0].lines[1].text, "2x Pizza");
        assert_eq!((t[0].lines[1].width_mult, t[0].lines[1].bold), (1, false));
        assert_eq!(t[0].lines[2].text, " ALLERGIE ");
        assert!(t[0].lines[2].reverse);
        assert_eq!(t[0].text, "#42\n2x Pizza\n ALLERGIE ");
        assert_eq!(t[0].raw, first);
        assert_eq!(t[1].text, "Zweiter");
        assert_eq!(t[1].raw, second);
        assert!(t.iter().all(|t| t.complete && t.unknown_commands == 0));
    }

    #[tokio::test]
    async fn dle_eot_answers_per_mode() {
        let sim = start_sim().await;
        let mut s = connect(&sim).await;
        let cases = [
            (Mode::Online, [0x12, 0x12, 0x12, 0x12]),
            (Mode::Offline, [0x1A, 0x12, 0x12, 0x12]),
            (Mode::PaperOut, [0x1A, 0x32, 0x12, 0x7E]),
            (Mode::CoverOpen, [0x1A, 0x16, 0x12, 0x12]),
            (Mode::WithholdConfirm, [0x12, 0x12, 0x12, 0x12]),
            (Mode::DropMidTicket, [0x12, 0x12, 0x12, 0x12]),
            (Mode::NoProcessId, [0x12, 0x12, 0x12, 0x12]),
            (Mode::PaperNearEnd, [0x12, 0x12, 0x12, 0x1E]),
            (Mode::OfflineAtTicket, [0x12, 0x12, 0x12, 0x12]),
            (Mode::PaperOutAtTicket, [0x12, 0x12, 0x12, 0x12]),
        ];
        for (mode, want) in cases {
            sim.set_mode(mode);
            assert_eq!(sim.mode(), mode);
            s.write_all(&STATUS_ALL).await.unwrap();
            assert_eq!(read_n(&mut s, 4).await, want, "{mode:?}");
        }
        assert_eq!(sim.status_queries(), 40);
        sim.set_mode(Mode::Silent);
        s.write_all(&STATUS_ALL).await.unwrap();
        assert_quiet(&mut s).await;
        assert_eq!(sim.status_queries(), 40);
        assert!(sim.tickets().is_empty());
    }

    #[tokio::test]
    async fn no_process_id_prints_and_answers_gs_r_but_never_gs_h() {
        let sim = start_sim().await;
        sim.set_mode(Mode::NoProcessId);
        let mut s = connect(&sim).await;
        s.write_all(
            &[confirm_request(*b"PRB0"), ticket(&["Ohne"]), confirm_request(*b"0001"), GS_R1.to_vec()].concat(),
        )
        .await
        .unwrap();
        let t = sim.wait_for_tickets(1, WAIT).await.unwrap();
        assert_eq!(t[0].text.trim_end(), "Ohne");
        assert_eq!(t[0].unknown_commands, 0, "GS ( H is ignored, not garbage");
        // Only the GS r byte comes back.
        assert_eq!(read_n(&mut s, 1).await, [0x00]);
        assert_quiet(&mut s).await;
        assert_eq!(sim.confirmations_sent(), 0);
    }

    #[tokio::test]
    async fn paper_near_end_prints_and_says_so_in_every_status() {
        let sim = start_sim().await;
        sim.set_mode(Mode::PaperNearEnd);
        let mut s = connect(&sim).await;
        s.write_all(
            &[ticket(&["Fast leer"]), confirm_request(*b"0001"), GS_R1.to_vec(), vec![GS, b'a', 0x0E]].concat(),
        )
        .await
        .unwrap();
        assert_eq!(sim.wait_for_tickets(1, WAIT).await.unwrap()[0].text.trim_end(), "Fast leer");
        assert_eq!(
            read_n(&mut s, 7 + 1 + 4).await,
            [&confirm_reply(*b"0001")[..], &[0x03], &[0x10, 0, 0x03, 0]].concat()
        );
    }

    #[tokio::test]
    async fn stopping_at_the_next_ticket_holds_all_of_it_until_online() {
        for (mode, stopped, status) in [
            (Mode::OfflineAtTicket, Mode::Offline, [0x1A, 0x12, 0x12, 0x12]),
            (Mode::PaperOutAtTicket, Mode::PaperOut, [0x1A, 0x32, 0x12, 0x7E]),
        ] {
            let sim = start_sim().await;
            sim.set_mode(mode);
            let mut s = connect(&sim).await;
            // Before the ticket it behaves like an online printer.
            s.write_all(&[GS, b'a', 0x0E]).await.unwrap();
            assert_eq!(read_n(&mut s, 4).await, [0x10, 0, 0, 0]);
            s.write_all(&[ticket(&["Gehalten"]), confirm_request(*b"0002")].concat()).await.unwrap();
            // The ticket's ESC @ turned ASB off; DLE EOT tells the stopped state once it is reached.
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                s.write_all(&STATUS_ALL).await.unwrap();
                if read_n(&mut s, 4).await == status {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{mode:?} never stopped");
            }
            assert_eq!(sim.mode(), stopped);
            assert!(sim.tickets().is_empty(), "nothing of the ticket printed");
            sim.set_mode(Mode::Online);
            assert_eq!(sim.wait_for_tickets(1, WAIT).await.unwrap()[0].text.trim_end(), "Gehalten");
            assert_eq!(read_n(&mut s, 7).await, confirm_reply(*b"0002"));
        }
    }

    #[tokio::test]
    async fn silent_answers_nothing_and_holds_data() {
        let sim = start_sim().await;
        sim.set_mode(Mode::Silent);
        let mut s = connect(&sim).await;
        let id = [9, 8, 7, 6];
        s.write_all(&[ticket(&["Still"]), STATUS_ALL.to_vec(), confirm_request(id)].concat()).await.unwrap();
        assert_quiet(&mut s).await;
        assert!(sim.tickets().is_empty());
        sim.set_mode(Mode::Online);
        // The status requests went unanswered for good; the held confirmation request did not.
        assert_eq!(read_n(&mut s, 7).await, confirm_reply(id));
        assert_eq!(sim.tickets()[0].text.trim_end(), "Still");
    }

    #[tokio::test]
    async fn confirmation_follows_ticket_and_is_withheld_in_withhold_confirm() {
        let sim = start_sim().await;
        let mut s = connect(&sim).await;
        let id = [1, 2, 3, 4];
        s.write_all(&[ticket(&["Erster Bon"]), confirm_request(id)].concat()).await.unwrap();
        assert_eq!(read_n(&mut s, 7).await, confirm_reply(id));
        // The reply means everything before it printed: the ticket is already there.
        assert_eq!(sim.tickets().len(), 1);
        assert_eq!(sim.confirmations_sent(), 1);

        sim.set_mode(Mode::WithholdConfirm);
        s.write_all(&[ticket(&["Zweiter Bon"]), confirm_request([5, 6, 7, 8]), GS_R1.to_vec()].concat()).await.unwrap();
        // A confirmation would arrive before the GS r answer (0x37 ≠ 0x00).
        assert_eq!(read_n(&mut s, 1).await, [0x00]);
        assert_eq!(sim.tickets().len(), 2);
        s.write_all(&[DLE, EOT, 1]).await.unwrap();
        assert_eq!(read_n(&mut s, 1).await, [0x12]);
        assert_quiet(&mut s).await;
        assert_eq!(sim.confirmations_sent(), 1);
    }

    #[tokio::test]
    async fn paper_out_holds_data_until_online() {
        let sim = start_sim().await;
        sim.set_mode(Mode::PaperOut);
        let mut s = connect(&sim).await;
        let id = [0, 0, 0, 42];
        let bytes =
            [ticket(&["Gehalten"]), GS_R1.to_vec(), confirm_request(id), vec![DLE, EOT, 4, DLE, EOT, 1]].concat();
        s.write_all(&bytes).await.unwrap();
        // Real-time answers come at once, behind the held ticket and its queries.
        assert_eq!(read_n(&mut s, 2).await, [0x7E, 0x1A]);
        assert!(sim.tickets().is_empty());
        assert_eq!(sim.confirmations_sent(), 0);

        sim.set_mode(Mode::Online);
        let mut want = vec![0x00];
        want.extend(confirm_reply(id));
        assert_eq!(read_n(&mut s, 8).await, want);
        let t = sim.tickets();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].text.trim_end(), "Gehalten");
        assert!(t[0].complete);
    }

    #[tokio::test]
    async fn clear_buffers_discards_held_data() {
        let sim = start_sim().await;
        sim.set_mode(Mode::PaperOut);
        let mut s = connect(&sim).await;
        s.write_all(&ticket(&["Alt"])).await.unwrap();
        s.write_all(&[DLE, DC4, 8, 1, 3, 20, 1, 6, 2, 8]).await.unwrap();
        assert_eq!(read_n(&mut s, 3).await, CLEAR_RESPONSE);
        let id = [1, 1, 1, 1];
        s.write_all(&[ticket(&["Neu"]), confirm_request(id)].concat()).await.unwrap();
        sim.set_mode(Mode::Online);
        assert_eq!(read_n(&mut s, 7).await, confirm_reply(id));
        let t = sim.tickets();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].text.trim_end(), "Neu");
    }

    #[tokio::test]
    async fn asb_reports_now_and_on_change_until_esc_at() {
        let sim = start_sim().await;
        let mut s = connect(&sim).await;
        s.write_all(&[GS, b'a', 0xFF]).await.unwrap();
        assert_eq!(read_n(&mut s, 4).await, [0x10, 0, 0, 0]);
        sim.set_mode(Mode::CoverOpen);
        assert_eq!(read_n(&mut s, 4).await, [0x38, 0, 0, 0]);
        sim.set_mode(Mode::PaperOut);
        assert_eq!(read_n(&mut s, 4).await, [0x18, 0, 0x0C, 0]);
        sim.set_mode(Mode::Online);
        assert_eq!(read_n(&mut s, 4).await, [0x10, 0, 0, 0]);
        // Same status bytes: no report.
        sim.set_mode(Mode::WithholdConfirm);
        sim.set_mode(Mode::Online);
        // ESC @ disables ASB; the confirmation shows it has been processed.
        let id = [7, 7, 7, 7];
        s.write_all(&[vec![ESC, b'@'], confirm_request(id)].concat()).await.unwrap();
        assert_eq!(read_n(&mut s, 7).await, confirm_reply(id));
        sim.set_mode(Mode::Offline);
        assert_quiet(&mut s).await;
    }

    #[tokio::test]
    async fn unreachable_refuses_then_rebinds_same_port() {
        let sim = start_sim().await;
        let addr = sim.addr();
        assert_eq!(sim.url(), format!("tcp://{addr}"));
        let mut old = connect(&sim).await;
        old.write_all(&[DLE, EOT, 1]).await.unwrap();
        assert_eq!(read_n(&mut old, 1).await, [0x12]);

        sim.set_mode(Mode::Unreachable);
        read_to_close(&mut old).await;
        let err = TcpStream::connect(addr).await.expect_err("powered-off printer refuses");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

        sim.set_mode(Mode::Online);
        assert_eq!(sim.addr(), addr);
        let mut s = TcpStream::connect(addr).await.expect("listening again");
        s.write_all(&ticket(&["Wieder da"])).await.unwrap();
        let t = sim.wait_for_tickets(1, WAIT).await.unwrap();
        assert_eq!(t[0].text.trim_end(), "Wieder da");
        assert_eq!(sim.connections(), 2);
    }

    #[tokio::test]
    async fn drop_mid_ticket_records_partial_and_reverts() {
        let sim = start_sim().await;
        sim.set_mode(Mode::DropMidTicket);
        let lines: Vec<String> = (1..=20).map(|i| format!("Position {i:02}: Wiener Schnitzel")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut s = connect(&sim).await;
        // A status preamble before the text is still answered.
        s.write_all(&[DLE, EOT, 1]).await.unwrap();
        assert_eq!(read_n(&mut s, 1).await, [0x12]);
        // The printer may reset the connection before everything is written.
        let _ = s.write_all(&[ticket(&refs), confirm_request([1, 2, 3, 4])].concat()).await;
        assert!(read_to_close(&mut s).await.is_empty(), "no confirmation");

        let t = sim.wait_for_tickets(1, WAIT).await.unwrap().remove(0);
        assert!(!t.complete);
        let full = lines.join("\n");
        assert!(!t.text.is_empty());
        assert!(full.starts_with(&t.text), "{:?} is a prefix", t.text);
        assert!(t.text.len() < full.len() * 3 / 4, "about half: {:?}", t.text);
        assert_eq!(sim.mode(), Mode::Online);
        assert_eq!(sim.confirmations_sent(), 0);

        let mut s = connect(&sim).await;
        s.write_all(&ticket(&refs)).await.unwrap();
        let t = sim.wait_for_tickets(2, WAIT).await.unwrap().remove(1);
        assert!(t.complete);
        assert_eq!(t.text.trim_end(), full);
    }

    #[tokio::test]
    async fn partial_ticket_on_close_but_none_for_status_only() {
        let sim = start_sim().await;
        let mut s = connect(&sim).await;
        s.write_all(&[ESC, b'@', DLE, EOT, 1, GS, b'a', 0]).await.unwrap();
        assert_eq!(read_n(&mut s, 1).await, [0x12]);
        s.shutdown().await.unwrap();
        // The printer closes once it has processed everything.
        read_to_close(&mut s).await;
        assert!(sim.tickets().is_empty());

        let mut s = connect(&sim).await;
        let mut bytes = vec![ESC, b'@', ESC, b't', 19];
        bytes.extend(b"Hallo\nWelt");
        s.write_all(&bytes).await.unwrap();
        s.shutdown().await.unwrap();
        read_to_close(&mut s).await;
        let t = sim.tickets();
        assert_eq!(t.len(), 1);
        assert!(!t[0].complete);
        assert_eq!(t[0].text, "Hallo\nWelt");
        assert_eq!(t[0].raw, bytes);
    }

    #[tokio::test]
    async fn skips_commands_with_parameters() {
        let sim = start_sim().await;
        let mut b = vec![ESC, b'@', ESC, b't', 16, ESC, b'a', 1, ESC, b'M', 0, ESC, b'-', 1];
        b.extend([b'A', HT, b'B', b'\r', LF]);
        // Raster image whose data contains LFs and text bytes that must not print.
        b.extend([GS, b'v', b'0', 0, 2, 0, 2, 0, LF, b'X', LF, b'Y']);
        // QR: size, store data, print.
        b.extend([GS, b'(', b'k', 3, 0, 49, 67, 6]);
        let url = b"https://example.com/\n";
        b.extend([GS, b'(', b'k', (url.len() + 3) as u8, 0, 49, 80, 48]);
        b.extend(url);
        b.extend([GS, b'(', b'k', 3, 0, 49, 81, 48]);
        // CODE39 (NUL-terminated) and CODE128 (length byte).
        b.extend([GS, b'k', 4]);
        b.extend(b"123\0");
        b.extend([GS, b'k', 73, 4, b'{', b'B', b'1', LF]);
        b.extend([GS, b'h', 80, GS, b'w', 2, GS, b'H', 2]);
        b.extend([ESC, b'd', 2, ESC, b'y']);
        b.extend([b'C', 0x80, LF]);
        b.extend([ESC, b'p', 0, 25, 250, ESC, b'(', b'A', 4, 0, 48, 51, 1, 10]);
        b.extend([ESC, b'2', ESC, b'3', 30, ESC, b'R', 2, GS, b'V', 0]);
        let mut s = connect(&sim).await;
        s.write_all(&b).await.unwrap();
        let t = sim.wait_for_tickets(1, WAIT).await.unwrap().remove(0);
        assert_eq!(t.text, "A B\n[IMAGE 16x2]\n[QR https://example.com/\n]\n\n\nC€");
        assert_eq!(t.images, [RasterImage { width: 16, height: 2, data: vec![LF, b'X', LF, b'Y'] }]);
        assert_eq!(t.qr_codes, ["https://example.com/\n"]);
        assert_eq!(t.buzzer, [Buzzer::Epson { n: 51, c: 1, t: 10 }]);
        assert_eq!(t.drawer_kicks, 1);
        assert_eq!(t.unknown_commands, 1, "ESC y");
        assert_eq!(t.code_table, Some(16));
        assert!(t.complete);
    }

    /// Raster image data (16x4 dots) full of bytes that would be commands outside the image:
    /// `DLE EOT 1`, a cut (`GS V 66 0`) and an LF.
    const TRAP_IMAGE: [u8; 8] = [DLE, EOT, 1, GS, b'V', 66, 0, LF];
    const QR_URL: &str = "https://x/y?o=10033";

    fn qr_store(data: &[u8]) -> Vec<u8> {
        let len = data.len() + 3;
        let mut b = vec![GS, b'(', b'k', (len & 0xFF) as u8, (len >> 8) as u8, 49, 80, 48];
        b.extend(data);
        b
    }

    const QR_PRINT: [u8; 8] = [GS, b'(', b'k', 3, 0, 49, 81, 48];

    fn raster(bytes_per_row: u8, height: u8, data: &[u8]) -> Vec<u8> {
        let mut b = vec![GS, b'v', b'0', 0, bytes_per_row, 0, height, 0];
        b.extend(data);
        b
    }

    /// Text, a QR code, a raster image with command-like data, a Font B line, both buzzer
    /// commands and a drawer kick, then a cut.
    fn rich_ticket() -> Vec<u8> {
        let mut b = vec![ESC, b'@', ESC, b't', 19];
        b.extend(b"text\n");
        // QR: model 2, module size 6, error correction M, store, print.
        b.extend([GS, b'(', b'k', 4, 0, 49, 65, 50, 0]);
        b.extend([GS, b'(', b'k', 3, 0, 49, 67, 6]);
        b.extend([GS, b'(', b'k', 3, 0, 49, 69, 49]);
        b.extend(qr_store(QR_URL.as_bytes()));
        b.extend(QR_PRINT);
        b.extend(raster(2, 4, &TRAP_IMAGE));
        b.extend([ESC, b'M', 1]);
        b.extend(b"klein\n");
        b.extend([ESC, b'M', 48]);
        b.extend([ESC, b'(', b'A', 4, 0, 48, 51, 3, 10]);
        b.extend([ESC, b'B', 2, 5]);
        b.extend([ESC, b'p', 0, 25, 250]);
        b.extend([GS, b'V', 66, 0]);
        b
    }

    fn line(text: &str, font_b: bool) -> TicketLine {
        TicketLine { text: text.into(), width_mult: 1, height_mult: 1, bold: false, reverse: false, font_b }
    }

    /// Checks what `rich_ticket` must decode to; `raw` is the whole ticket as sent.
    fn check_rich_ticket(t: &TicketBuilder, raw: &[u8], what: &str) {
        let want = [
            line("text", false),
            line(&format!("[QR {QR_URL}]"), false),
            line("[IMAGE 16x4]", false),
            line("klein", true),
        ];
        assert_eq!(t.lines, want, "{what}");
        assert!(t.line.text.is_empty(), "{what}");
        assert_eq!(t.qr_codes, [QR_URL], "{what}");
        assert_eq!(t.images, [RasterImage { width: 16, height: 4, data: TRAP_IMAGE.to_vec() }], "{what}");
        assert_eq!(t.buzzer, [Buzzer::Epson { n: 51, c: 3, t: 10 }, Buzzer::EscB { n: 2, t: 5 }], "{what}");
        assert_eq!(t.drawer_kicks, 1, "{what}");
        assert_eq!(t.unknown, 0, "{what}");
        assert_eq!(t.code_table, Some(19), "{what}");
        assert_eq!(t.raw, raw, "{what}");
    }

    /// Feeds `chunks` to a `Core` the way `Driver` does (the next chunk is appended only when
    /// the core needs more): the tickets ended by cuts, then the unfinished one.
    fn run_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<TicketBuilder>, TicketBuilder) {
        let mut core = Core::default();
        let mut chunks = chunks.into_iter();
        let (mut buf, mut pos) = (Vec::new(), 0);
        let mut tickets = Vec::new();
        loop {
            match core.step(&buf[pos..], Mode::Online) {
                Step::Done(n, action) => {
                    assert!(n > 0);
                    pos += n;
                    if let Some(Action::Cut) = action {
                        tickets.push(core.take_ticket());
                    }
                }
                Step::Need => match chunks.next() {
                    Some(chunk) => buf.extend_from_slice(chunk),
                    None => return (tickets, core.take_ticket()),
                },
            }
        }
    }

    /// `bytes` cut at the given ascending offsets.
    fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut parts = Vec::new();
        let mut from = 0;
        for &at in cuts.iter().chain([&bytes.len()]) {
            parts.push(&bytes[from..at]);
            from = at;
        }
        parts
    }

    #[test]
    fn qr_image_font_b_and_buzzer_survive_any_chunking() {
        let bytes = rich_ticket();
        let check = |parts: Vec<&[u8]>, what: &str| {
            let (tickets, rest) = run_chunks(parts);
            assert_eq!(tickets.len(), 1, "{what}");
            check_rich_ticket(&tickets[0], &bytes, what);
            assert!(rest.raw.is_empty() && rest.lines.is_empty(), "{what}");
        };
        check(vec![&bytes[..]], "one chunk");
        check(bytes.chunks(1).collect(), "byte by byte");
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                check(split_at(&bytes, &[i, j]), &format!("split at {i} and {j}"));
            }
        }
        let mut rng = StdRng::seed_from_u64(0x0A5);
        for round in 0..200 {
            let mut cuts: Vec<usize> =
                (0..rng.random_range(1..12)).map(|_| rng.random_range(0..=bytes.len())).collect();
            cuts.sort_unstable();
            check(split_at(&bytes, &cuts), &format!("random split {round}: {cuts:?}"));
        }
        // DropMidTicket's planning sees the same single cut at the very end.
        assert_eq!(find_cut_end(&bytes), Some(bytes.len()));
        let image = &run_chunks([&bytes[..]]).0[0].images[0];
        // Rows 10 04 / 01 1D / 56 42 / 00 0A, MSB = leftmost dot.
        assert!(image.get(3, 0) && !image.get(2, 0) && image.get(13, 0));
        assert!(image.get(7, 1) && image.get(11, 1) && image.get(15, 1) && !image.get(14, 1));
        assert!(image.get(1, 2) && image.get(14, 2) && !image.get(0, 2));
        assert!(!image.get(7, 3) && image.get(12, 3) && image.get(14, 3) && !image.get(15, 3));
        assert!(!image.get(16, 0) && !image.get(0, 4), "outside");
        assert_eq!(image.ink(), TRAP_IMAGE.iter().map(|b| b.count_ones() as usize).sum::<usize>());
        assert_eq!(image.ink(), 15);
    }

    #[tokio::test]
    async fn qr_image_font_b_and_buzzer_over_tcp() {
        let sim = start_sim().await;
        let mut s = connect(&sim).await;
        let bytes = rich_ticket();
        // The first write ends right after the DLE EOT 1 inside the image data.
        let image_at = bytes.windows(TRAP_IMAGE.len()).position(|w| w == TRAP_IMAGE).unwrap();
        let (first, second) = bytes.split_at(image_at + 3);
        s.write_all(first).await.unwrap();
        // Like the real printer, the reader answers it (it does not know command parameters);
        // the interpreter still takes the bytes as image data.
        assert_eq!(read_n(&mut s, 1).await, [0x12]);
        s.write_all(second).await.unwrap();
        let t = sim.wait_for_tickets(1, WAIT).await.unwrap().remove(0);
        assert!(t.complete);
        assert_eq!(t.text, format!("text\n[QR {QR_URL}]\n[IMAGE 16x4]\nklein"));
        assert_eq!(t.lines.iter().map(|l| l.font_b).collect::<Vec<_>>(), [false, false, false, true]);
        assert_eq!(t.qr_codes, [QR_URL]);
        assert_eq!(t.images, [RasterImage { width: 16, height: 4, data: TRAP_IMAGE.to_vec() }]);
        assert_eq!(t.buzzer, [Buzzer::Epson { n: 51, c: 3, t: 10 }, Buzzer::EscB { n: 2, t: 5 }]);
        assert_eq!(t.drawer_kicks, 1);
        assert_eq!(t.unknown_commands, 0);
        assert_eq!(t.raw, bytes);
        assert_eq!((sim.beeps(), sim.drawer_kicks()), (2, 1));
        // Nothing else was answered, and the fake cut in the image made no second ticket.
        s.write_all(&confirm_request([3, 3, 3, 3])).await.unwrap();
        assert_eq!(read_n(&mut s, 7).await, confirm_reply([3, 3, 3, 3]));
        assert_eq!(sim.tickets().len(), 1);
    }

    #[test]
    fn qr_image_and_font_edge_cases() {
        let mut b = vec![ESC, b'@'];
        // Printing with no stored data: nothing, and it counts as unknown.
        b.extend(QR_PRINT);
        // Pending text (even blank) is printed before an image or a QR code.
        b.extend(b"vor");
        b.extend(raster(1, 1, &[0xFF]));
        b.extend(b"  ");
        let payload = [b'a', GS, b'V', 0, DLE, EOT, 1, LF, 0xFF];
        b.extend(qr_store(&payload));
        b.extend(QR_PRINT);
        // The stored data stays until ESC @: printed again.
        b.extend(b"auch");
        b.extend(QR_PRINT);
        // ESC ! bit 0 selects Font B, and ESC ! 0 Font A again; the first visible char counts.
        b.extend([ESC, b'!', 0x01, b' ', b'b', ESC, b'!', 0x00, b'a', LF]);
        b.extend([b'a', ESC, b'M', 1, b'b', LF]);
        // Zero-size image and Font C: unknown, nothing printed, font unchanged.
        b.extend(raster(0, 5, &[]));
        b.extend([ESC, b'M', 2, b'x', LF]);
        // ESC ( A with another function is skipped (known); ESC @ resets font and QR data.
        b.extend([ESC, b'(', b'A', 4, 0, 97, 1, 1, 1]);
        b.extend([ESC, b'@', b'y', LF]);
        b.extend(QR_PRINT);
        b.extend([GS, b'V', 0]);
        let (tickets, _) = run_chunks([&b[..]]);
        let t = &tickets[0];
        let qr_text = String::from_utf8_lossy(&payload).into_owned();
        let texts: Vec<&str> = t.lines.iter().map(|l| l.text.as_str()).collect();
        let qr_line = format!("[QR {qr_text}]");
        assert_eq!(texts, ["vor", "[IMAGE 8x1]", "  ", &qr_line, "auch", &qr_line, " ba", "ab", "x", "y"]);
        let fonts: Vec<bool> = t.lines.iter().map(|l| l.font_b).collect();
        assert_eq!(fonts, [false, false, false, false, false, false, true, false, true, false]);
        assert_eq!(t.qr_codes, [qr_text.clone(), qr_text]);
        assert_eq!(t.images, [RasterImage { width: 8, height: 1, data: vec![0xFF] }]);
        assert_eq!(t.images[0].ink(), 8);
        assert!(t.buzzer.is_empty());
        assert_eq!(t.unknown, 4, "print without data (twice), zero-size image, ESC M 2");
        assert_eq!(find_cut_end(&b), Some(b.len()));
    }

    #[tokio::test]
    async fn random_bytes_then_a_normal_ticket() {
        let sim = start_sim().await;
        let mut rng = StdRng::seed_from_u64(0x9100);
        let mut noise = vec![0u8; 64 * 1024];
        rng.fill(&mut noise[..]);
        let (mut r, mut w) = connect(&sim).await.into_split();
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&noise).await;
            let _ = w.shutdown().await;
        });
        read_to_close(&mut r).await;
        writer.await.unwrap();
        let before = sim.tickets().len();

        let mut s = connect(&sim).await;
        s.write_all(&ticket(&["Danach"])).await.unwrap();
        let t = sim.wait_for_tickets(before + 1, WAIT).await.unwrap();
        assert_eq!(t[before].text.trim_end(), "Danach");
    }

    #[test]
    fn tokenizer_survives_random_bytes() {
        let mut rng = StdRng::seed_from_u64(0x5EED);
        for round in 0..300 {
            let len = rng.random_range(0..4096);
            let mut bytes = vec![0u8; len];
            rng.fill(&mut bytes[..]);
            // Bias toward command bytes so the parameter paths are exercised.
            for b in bytes.iter_mut() {
                if rng.random_ratio(1, 6) {
                    *b = [ESC, GS, FS, DLE, LF, b'(', b'H'][rng.random_range(0..7)];
                }
            }
            let mode = Mode::ALL[round % Mode::ALL.len()];
            let mut core = Core::default();
            let mut pos = 0;
            while let Step::Done(n, action) = core.step(&bytes[pos..], mode) {
                assert!(n > 0);
                pos += n;
                if let Some(Action::Cut) = action {
                    let _ = core.take_ticket();
                }
            }
            assert!(pos <= bytes.len());
            let _ = find_cut_end(&bytes);
            let mut scanner = RtScanner::default();
            for &b in &bytes {
                let _ = scanner.push(b);
            }
        }
    }

    #[tokio::test]
    async fn wait_for_tickets_times_out_with_a_summary() {
        let sim = start_sim().await;
        let mut s = connect(&sim).await;
        s.write_all(&ticket(&["Nur einer"])).await.unwrap();
        sim.wait_for_tickets(1, WAIT).await.unwrap();
        let err = sim.wait_for_tickets(2, Duration::from_millis(50)).await.expect_err("only one ticket");
        let msg = err.to_string();
        assert!(msg.contains("1 arrived") && msg.contains("Nur einer"), "{msg}");
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
        }
        assert_eq!("Paper-Out".parse::<Mode>().unwrap(), Mode::PaperOut);
        assert!("sideways".parse::<Mode>().is_err());
    }
}
