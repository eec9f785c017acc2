//! `tcp-relay`: forwards TCP connections from one address to another. In the docker compose
//! stack (`compose/`) it is the process of each service's network "pod" container: the service
//! container joins the pod's network namespace (`network_mode: service:…`), so a `docker kill`
//! of the service leaves the namespace, its addresses and its published ports in place, and the
//! relay makes the service's loopback-only metrics endpoint (`INGEST_/PRINT_METRICS_ADDR`, no
//! authentication, refused off loopback) reachable on the stack's private telemetry network
//! alone, for Prometheus.
//!
//! Binding: `--listen host:port` may name a host (a network alias the pod has on one network
//! only): it is resolved and bound, retried until it resolves (the alias appears when the
//! network is attached). At most 32 connections at once; each lives at most 60 s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const USAGE: &str = "usage: tcp-relay --listen HOST:PORT --to HOST:PORT [--bind-timeout SECS]
Forwards every TCP connection accepted on --listen to --to (both may be host names; --listen is
resolved and bound, retried for --bind-timeout seconds, default 60). At most 32 connections at
once, each at most 60 s.
  -h, --help     this text
  -V, --version  the version";

const MAX_CONNECTIONS: usize = 32;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wixprint_tests::cli::help_or_version("tcp-relay", USAGE);
    let (mut listen, mut to, mut bind_timeout) = (None, None, 60u64);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--listen" => listen = Some(value()?),
            "--to" => to = Some(value()?),
            "--bind-timeout" => bind_timeout = value()?.parse().context("--bind-timeout SECS")?,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let listen = listen.with_context(|| format!("--listen is required\n{USAGE}"))?;
    let to = Arc::new(to.with_context(|| format!("--to is required\n{USAGE}"))?);

    let deadline = Instant::now() + Duration::from_secs(bind_timeout);
    let listener = loop {
        match TcpListener::bind(&listen).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("tcp-relay: binding {listen}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("binding {listen}")),
        }
    };
    println!("tcp-relay: {} -> {to}", listener.local_addr()?);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let permit = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            permit = Arc::clone(&slots).acquire_owned() => permit?,
        };
        let (mut inbound, peer) = tokio::select! {
            _ = term.recv() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("tcp-relay: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let to = Arc::clone(&to);
        tokio::spawn(async move {
            let _permit = permit;
            let relay = async {
                let mut outbound = TcpStream::connect(to.as_str()).await?;
                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
            };
            match tokio::time::timeout(CONNECTION_LIFETIME, relay).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("tcp-relay: {peer} -> {to}: {e}"),
                Err(_) => eprintln!("tcp-relay: {peer} -> {to}: closed after {CONNECTION_LIFETIME:?}"),
            }
        });
    }
}
