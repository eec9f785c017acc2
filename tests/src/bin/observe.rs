//! The observability stack locally, in one command (`scripts/observability.sh`): both
//! services and the printer simulator (as in the demo), a real OpenTelemetry collector (rotel)
//! receiving their OTLP metrics, and a real Prometheus scraping their metrics endpoints with
//! `deploy/dashboards/prometheus.yml`. It sends an order every few seconds and takes the
//! printer away for 30 s every 3 minutes, so the dashboard's panels have something to show.
//!
//! `observe [--minutes N] [--png FILE] [--prometheus-port P]`: without `--minutes` it runs
//! until Ctrl-C; `--png` renders the dashboard's panels from Prometheus's data to FILE at
//! the end (scripts/render-dashboard.py, matplotlib).

use std::time::{Duration, Instant};

use anyhow::Context;
use wixprint_tests::harness::{Stack, StackOptions, free_ports};
use wixprint_tests::observability::{Prometheus, Rotel, dashboards_dir};
use wixprint_tests::sim::Mode;
use wixprint_tests::webhook::distinct_order;

const HELP: &str = "observe: run wix-ingest, wix-print, the printer simulator, an OpenTelemetry collector (rotel)
and Prometheus on loopback, with demo traffic (an order every 4 s, a 30 s printer outage every 3 min).

USAGE: observe [--minutes N] [--png FILE] [--prometheus-port P]
  --minutes N          stop after N minutes (default: run until Ctrl-C)
  --png FILE           at the end, render the dashboard's panels to FILE (needs --minutes; matplotlib)
  --prometheus-port P  Prometheus's port (default 9090)
  -h, --help           this text
  -V, --version        the version";

struct Args {
    minutes: Option<u64>,
    png: Option<String>,
    prometheus_port: u16,
}

fn args() -> anyhow::Result<Option<Args>> {
    wixprint_tests::cli::help_or_version("observe", HELP);
    let mut a = Args { minutes: None, png: None, prometheus_port: 9090 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("observe {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--minutes" => a.minutes = Some(it.next().context("--minutes needs a number")?.parse()?),
            "--png" => a.png = Some(it.next().context("--png needs a file name")?),
            "--prometheus-port" => a.prometheus_port = it.next().context("--prometheus-port needs a port")?.parse()?,
            other => anyhow::bail!("unknown argument {other:?}\n\n{HELP}"),
        }
    }
    if a.png.is_some() && a.minutes.is_none() {
        anyhow::bail!("--png needs --minutes (the picture is drawn at the end)");
    }
    Ok(Some(a))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = args()? else { return Ok(()) };
    let dir = tempfile::tempdir()?;
    let rotel = match Rotel::start(dir.path(), &["metrics"]).await {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("note: no collector ({e:#}); metrics go to Prometheus only");
            None
        }
    };
    let [ingest_port, print_port] = free_ports::<2>();
    let mut opts = StackOptions::default()
        .ingest_env("INGEST_METRICS_ADDR", ingest_port.to_string())
        .print_env("PRINT_METRICS_ADDR", print_port.to_string());
    if let Some(r) = &rotel {
        for (k, v) in [("OTEL_EXPORTER_OTLP_ENDPOINT", r.endpoint()), ("OTEL_METRIC_EXPORT_INTERVAL", "5000".into())] {
            opts = opts.ingest_env(k, v.clone()).print_env(k, v);
        }
    }
    let stack = Stack::start(opts).await?;
    let prom =
        Prometheus::start(dir.path(), ingest_port, print_port, Duration::from_secs(5), Some(args.prometheus_port))
            .await
            .context("starting Prometheus (scripts/install-deps.sh installs it; --prometheus-port if 9090 is taken)")?;
    println!("observability stack up (state in {})", dir.path().display());
    println!("  Prometheus        {}  (Graph tab: paste any query from deploy/dashboards/panels.toml)", prom.url());
    println!("  wix-ingest        http://127.0.0.1:{ingest_port}/metrics");
    println!("  wix-print         http://127.0.0.1:{print_port}/metrics");
    if let Some(r) = &rotel {
        println!("  collector (rotel) {} (OTLP/gRPC), log {}", r.endpoint(), dir.path().join("rotel.log").display());
    }
    println!("  webhook endpoint  {}/webhooks/wix", stack.http_url);
    println!(
        "  Grafana           import {} with this Prometheus as its data source",
        dashboards_dir().join("wixprint.json").display()
    );
    println!("Sending an order every 4 s; the printer goes away for 30 s every 3 minutes. Ctrl-C stops.\n");

    let started = Instant::now();
    let end = args.minutes.map(|m| started + Duration::from_secs(m * 60));
    let mut tick = tokio::time::interval(Duration::from_secs(4));
    let mut n = 0u64;
    let mut down = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        // A 30 s outage from 90 s into every 3 minutes.
        let phase = started.elapsed().as_secs() % 180;
        let want_down = (90..120).contains(&phase);
        if want_down != down {
            down = want_down;
            stack.sim.set_mode(if down { Mode::Offline } else { Mode::Online });
            println!("{:>5} s  printer {}", started.elapsed().as_secs(), if down { "offline" } else { "back online" });
        }
        n += 1;
        match stack.send_event(&distinct_order("order_created.pickup.json", n)).await {
            Ok(_) => {}
            Err(e) => eprintln!("order {n}: {e:#}"),
        }
        if n.is_multiple_of(15) {
            println!(
                "{:>5} s  {n} orders sent, {} tickets printed",
                started.elapsed().as_secs(),
                stack.sim.tickets().len()
            );
        }
    }
    if let Some(png) = args.png {
        let minutes = args.minutes.unwrap_or(10);
        let status = std::process::Command::new("python3")
            .arg(dashboards_dir().join("../../scripts/render-dashboard.py").canonicalize()?)
            .args(["--prometheus", &prom.url(), "--minutes", &minutes.to_string(), "--out", &png])
            .status()
            .context("running scripts/render-dashboard.py")?;
        anyhow::ensure!(status.success(), "render-dashboard.py failed ({status})");
    }
    Ok(())
}
