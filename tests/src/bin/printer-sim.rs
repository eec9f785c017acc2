//! `printer-sim`: runs the ESC/POS printer simulator as a process, for the demo and for poking
//! at the print service by hand.
//!
//! Owns only argument parsing, echoing tickets (stdout and `--out DIR`) and the line-based
//! control port. All printer behaviour lives in `wixprint_tests::sim`; this file must never
//! grow protocol logic of its own.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wixprint_tests::sim::{Mode, PrinterSim, Ticket};

const USAGE: &str = "usage: printer-sim [--listen 127.0.0.1:9100] [--out DIR] [--control 127.0.0.1:9101]
control port commands (one per line): mode <online|offline|paper_out|cover_open|silent|withhold_confirm|no_process_id|paper_near_end|offline_at_ticket|paper_out_at_ticket|drop_mid_ticket|unreachable>, mode, count, quit";

struct Args {
    listen: String,
    out: Option<PathBuf>,
    control: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    wixprint_tests::cli::help_or_version("printer-sim", USAGE);
    let mut args = Args { listen: "127.0.0.1:9100".to_string(), out: None, control: None };
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
    let sim = PrinterSim::start(&args.listen).await?;
    println!("printer-sim listening on {}", sim.addr());
    let stop = CancellationToken::new();
    if let Some(control) = &args.control {
        let listener =
            TcpListener::bind(control).await.with_context(|| format!("binding the control port {control}"))?;
        println!("printer-sim control port on {}", listener.local_addr()?);
        tokio::spawn(control_loop(listener, sim.clone(), stop.clone()));
    }
    let echo = tokio::spawn(echo_tickets(sim.clone(), args.out.clone(), stop.clone()));

    wait_for_stop(&stop).await;
    stop.cancel();
    sim.shutdown();
    let _ = echo.await;
    Ok(())
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

async fn echo_tickets(sim: PrinterSim, out: Option<PathBuf>, stop: CancellationToken) {
    let mut seen = 0;
    loop {
        let tickets = tokio::select! {
            _ = stop.cancelled() => return,
            waited = sim.wait_for_tickets(seen + 1, Duration::from_secs(3600)) => match waited {
                Ok(tickets) => tickets,
                Err(_) => continue,
            },
        };
        for ticket in tickets.iter().skip(seen) {
            print_ticket(ticket);
            if let Some(dir) = &out {
                let path = dir.join(format!("ticket-{:04}.txt", ticket.seq));
                if let Err(e) = tokio::fs::write(&path, format!("{}\n", ticket.text)).await {
                    eprintln!("printer-sim: writing {}: {e}", path.display());
                }
            }
        }
        seen = tickets.len();
    }
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

async fn control_loop(listener: TcpListener, sim: PrinterSim, stop: CancellationToken) {
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
        tokio::spawn(control_session(conn, sim.clone(), stop.clone()));
    }
}

async fn control_session(conn: TcpStream, sim: PrinterSim, stop: CancellationToken) {
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
            ["count"] => sim.tickets().len().to_string(),
            ["quit"] => {
                let _ = write.write_all(b"ok\n").await;
                stop.cancel();
                return;
            }
            _ => format!("error: unknown command {line:?}; try: mode <name> | mode | count | quit"),
        };
        if write.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}
