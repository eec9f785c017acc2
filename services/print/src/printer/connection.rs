//! One connection to a printer: status reads, sending a job and waiting for the printer's own
//! word that it is on paper.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::device::{Device, Io};
use super::monitor::Monitor;
use super::reply::{Reply, ReplyParser};
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

/// Timeouts the connection uses.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub status: Duration,
    pub confirm: Duration,
    pub poll: Duration,
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
