//! `printer-sim`: runs the ESC/POS printer simulator as a process, for the demo and for poking
//! at the print service by hand.
//!
//! Owns only argument parsing, echoing tickets (stdout and `--out DIR`), the journal
//! (`--journal FILE`: every ticket as a JSON line, kept across restarts like paper in a tray;
//! the compose stack keeps it on a volume) and the line-based control port. All printer
//! behaviour lives in `wixprint_tests::sim`; this file must never grow protocol logic of its
//! own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wixprint_tests::sim::{Mode, PrinterSim, Ticket};

const USAGE: &str = "usage: printer-sim [--listen 127.0.0.1:9100] [--out DIR] [--journal FILE] [--control 127.0.0.1:9101]
  --journal FILE  append every ticket to FILE as a JSON line {seq, complete, text, printed_at_ms};
                  tickets already in FILE count (seq and `count` go on after a restart)
control port commands (one per line): mode <online|offline|paper_out|cover_open|silent|withhold_confirm|no_process_id|paper_near_end|offline_at_ticket|paper_out_at_ticket|drop_mid_ticket|unreachable>, mode,
  count (tickets printed, the journal's included), tickets FROM (every ticket with seq > FROM as a
  JSON line, then a line \"end\"), quit";

struct Args {
    listen: String,
    out: Option<PathBuf>,
    journal: Option<PathBuf>,
    control: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    wixprint_tests::cli::help_or_version("printer-sim", USAGE);
    let mut args = Args { listen: "127.0.0.1:9100".to_string(), out: None, journal: None, control: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let mut value =
            || inline.clone().or_else(|| it.next()).with_context(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--listen" => args.listen = value()?,
            "--out" => args.out = Some(value()?.into()),
            "--control" => args.control = Some(value()?),
            "--journal" => args.journal = Some(value()?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(dir) = &args.out {
        tokio::fs::create_dir_all(dir).await.with_context(|| format!("creating {}", dir.display()))?;
    }
    let journal = Journal::open(args.journal.as_deref())?;
    let sim = PrinterSim::start(&args.listen).await?;
    println!("printer-sim listening on {}", sim.addr());
    if journal.len() > 0 {
        println!("printer-sim: {} ticket(s) in the journal", journal.len());
    }
    let stop = CancellationToken::new();
    if let Some(control) = &args.control {
        let listener =
            TcpListener::bind(control).await.with_context(|| format!("binding the control port {control}"))?;
        println!("printer-sim control port on {}", listener.local_addr()?);
        tokio::spawn(control_loop(listener, sim.clone(), journal.clone(), stop.clone()));
    }
    let echo = tokio::spawn(echo_tickets(sim.clone(), args.out.clone(), journal.clone(), stop.clone()));

    wait_for_stop(&stop).await;
    stop.cancel();
    sim.shutdown();
    let _ = echo.await;
    Ok(())
}

/// One printed ticket as the journal and the `tickets` command give it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// 1, 2, 3 … over the journal's whole life (restarts included).
    seq: u64,
    complete: bool,
    text: String,
    printed_at_ms: u64,
}

/// Every ticket printed (the journal file's and this run's), appended to the file as it prints.
#[derive(Clone)]
struct Journal {
    inner: Arc<Mutex<JournalInner>>,
}

struct JournalInner {
    entries: Vec<Entry>,
    file: Option<std::fs::File>,
}

impl Journal {
    fn open(path: Option<&Path>) -> anyhow::Result<Journal> {
        let mut entries = Vec::new();
        let mut file = None;
        if let Some(path) = path {
            if let Ok(text) = std::fs::read_to_string(path) {
                for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    match serde_json::from_str::<Entry>(line) {
                        Ok(e) => entries.push(e),
                        // A line cut by a crash mid-write: the rest of the file is still good.
                        Err(e) => eprintln!("printer-sim: {} line {}: {e}; skipped", path.display(), i + 1),
                    }
                }
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening the journal {}", path.display()))?;
            file = Some(f);
        }
        Ok(Journal { inner: Arc::new(Mutex::new(JournalInner { entries, file })) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn push(&self, ticket: &Ticket) {
        let mut inner = self.lock();
        let seq = inner.entries.len() as u64 + 1;
        let printed_at_ms = ticket
            .printed_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let entry = Entry { seq, complete: ticket.complete, text: ticket.text.clone(), printed_at_ms };
        if let Some(file) = inner.file.as_mut() {
            let line = serde_json::to_string(&entry).unwrap_or_default();
            if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
                eprintln!("printer-sim: writing the journal: {e}");
            }
        }
        inner.entries.push(entry);
    }

    fn since(&self, from: u64) -> Vec<Entry> {
        self.lock().entries.iter().filter(|e| e.seq > from).cloned().collect()
    }
}

async fn wait_for_stop(stop: &CancellationToken) {
    let interrupt = async {
        // If the handler cannot be installed, only the other ways out remain.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
        _ = stop.cancelled() => {}
    }
}

async fn echo_tickets(sim: PrinterSim, out: Option<PathBuf>, journal: Journal, stop: CancellationToken) {
    let mut seen = 0;
    loop {
        let tickets = tokio::select! {
            _ = stop.cancelled() => break,
            waited = sim.wait_for_tickets(seen + 1, Duration::from_secs(3600)) => match waited {
                Ok(tickets) => tickets,
                Err(_) => continue,
            },
        };
        seen = record(&tickets, seen, out.as_deref(), &journal).await;
    }
    // Stopping (SIGTERM, `docker stop`): what printed since the last wake-up is on paper too.
    record(&sim.tickets(), seen, out.as_deref(), &journal).await;
}

/// Echoes and journals the tickets after the first `seen`; returns how many are done.
async fn record(tickets: &[Ticket], seen: usize, out: Option<&Path>, journal: &Journal) -> usize {
    for ticket in tickets.iter().skip(seen) {
        print_ticket(ticket);
        journal.push(ticket);
        if let Some(dir) = out {
            let path = dir.join(format!("ticket-{:04}.txt", ticket.seq));
            if let Err(e) = tokio::fs::write(&path, format!("{}\n", ticket.text)).await {
                eprintln!("printer-sim: writing {}: {e}", path.display());
            }
        }
    }
    tickets.len().max(seen)
}

fn print_ticket(ticket: &Ticket) {
    let state = if ticket.complete { "complete" } else { "partial" };
    let mut notes = String::new();
    if ticket.unknown_commands > 0 {
        notes = format!(", {} unknown command(s)", ticket.unknown_commands);
    }
    // QR codes and images are already lines of the text; these would not show otherwise.
    if !ticket.buzzer.is_empty() {
        notes.push_str(&format!(", {} beep(s)", ticket.buzzer.len()));
    }
    if ticket.drawer_kicks > 0 {
        notes.push_str(&format!(", {} drawer kick(s)", ticket.drawer_kicks));
    }
    println!("──── ticket #{} ({state}{notes}) ────", ticket.seq);
    println!("{}", ticket.text);
}

async fn control_loop(listener: TcpListener, sim: PrinterSim, journal: Journal, stop: CancellationToken) {
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => conn,
                Err(e) => {
                    eprintln!("printer-sim: control accept failed: {e}");
                    continue;
                }
            },
        };
        tokio::spawn(control_session(conn, sim.clone(), journal.clone(), stop.clone()));
    }
}

async fn control_session(conn: TcpStream, sim: PrinterSim, journal: Journal, stop: CancellationToken) {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            [] => continue,
            ["mode", name] => match name.parse::<Mode>() {
                Ok(mode) => {
                    sim.set_mode(mode);
                    println!("printer-sim: mode {mode}");
                    "ok".to_string()
                }
                Err(e) => format!("error: {e}"),
            },
            ["mode"] => sim.mode().to_string(),
            // The journal holds every ticket echoed so far (echoed as it prints).
            ["count"] => journal.len().to_string(),
            ["tickets", from] => match from.parse::<u64>() {
                Ok(from) => {
                    let mut reply = String::new();
                    for entry in journal.since(from) {
                        reply.push_str(&serde_json::to_string(&entry).unwrap_or_default());
                        reply.push('\n');
                    }
                    reply.push_str("end");
                    reply
                }
                Err(e) => format!("error: tickets FROM: {e}"),
            },
            ["quit"] => {
                let _ = write.write_all(b"ok\n").await;
                stop.cancel();
                return;
            }
            _ => format!("error: unknown command {line:?}; try: mode <name> | mode | count | tickets FROM | quit"),
        };
        if write.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}
