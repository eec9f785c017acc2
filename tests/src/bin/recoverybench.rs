//! Recovery benchmark: how soon does a backlog start printing when the printer returns, and
//! how fast does it drain?
//!
//! Uses the real wix-ingest and wix-print binaries from the same target dir (build them with
//! `cargo build --release --workspace --bins`) and wix-print's **production defaults** for
//! everything on the print path (the test harness's short test intervals are reset to the
//! values `wix_print::Config` uses when nothing is set). Everything is measured from the
//! simulator's side (the time a complete ticket arrived at the simulator); no recovery RPC is
//! used.
//!
//! 1. **Drain runs** (`--runs`, default 5, per drain poll set: the production defaults, then
//!    both polls at 250 ms, `--drain-polls`): a fresh stack; the simulator goes offline
//!    (`--mode offline`: answers `DLE EOT` with "offline"; `unreachable`: not listening);
//!    the orders are posted (signed webhooks) until `--tickets` kitchen tickets wait in
//!    wix-print (`GetQueueStatus.waiting`); after a random pause (1 s + up to two offline poll
//!    intervals, so the switch lands at a random point of wix-print's poll cycle, as a real
//!    printer would) the simulator goes online with no print delay. Measured: start latency
//!    (switch → first complete ticket), drain rate (tickets between the first and the last
//!    ticket, and from the switch), gaps between tickets, CPU time of wix-print, of this
//!    process (= the simulator) and of the rest of the machine from the first to the last
//!    ticket, and wix-print's RSS after the drain.
//! 2. **Start-latency samples** (`--latency-samples`, default 30, per outage mode and offline
//!    poll interval): one stack per combination; each sample queues 3 tickets with the printer
//!    away, waits a random part of two poll intervals, switches online and times the first
//!    ticket. The default poll list is the production default, both polls at 250 ms, and a
//!    1000 ms not-ready poll.
//!
//! A poll set is written `OFFLINE[/STATUS]`: `PRINT_OFFLINE_POLL_MS` and, after the slash,
//! `PRINT_STATUS_POLL_MS` (without it: `--status-poll-ms`, else the production default).
//!
//! Prints plain numbers, then a Markdown table. `recoverybench --help` lists the options.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use wixprint_shared::config::Source;
use wixprint_shared::proto::print::GetQueueStatusRequest;
use wixprint_tests::harness::{Stack, StackOptions, bin_dir, wait_until};
use wixprint_tests::sim::Mode;
use wixprint_tests::webhook::distinct_order;

const HELP: &str = "\
recoverybench: recovery start latency and drain rate of a queued backlog (release binaries)

Options (defaults in brackets):
  --tickets N            tickets queued per drain run [1000]
  --runs R               drain runs [5]
  --types kitchen|all    kitchen: PRINT_RECEIPT_TYPES=kitchen, one ticket per order (N orders);
                         all: the default three receipt types, ceil(N/3) orders [kitchen]
  --mode offline|unreachable   how the printer is away during the outage [offline]
  --offline-poll-ms MS   PRINT_OFFLINE_POLL_MS of the first drain poll set [production default]
  --status-poll-ms MS    PRINT_STATUS_POLL_MS wherever a poll set does not name one
                         [production default]
  --drain-polls LIST     poll sets OFFLINE[/STATUS] for the drain runs, `--runs` each, e.g.
                         500/1000,250/250; `default` = the first set above
                         [default,250/250]
  --latency-samples K    start-latency samples per (mode, poll set); 0 = none [30]
  --latency-polls LIST   poll sets OFFLINE[/STATUS] for the samples, e.g. 500,250/250,1000
                         [production default,250/250,1000]
  --latency-modes LIST   outage modes for the samples [offline,unreachable]
  --concurrency C        webhooks in flight while queueing [16]
  --db-dir DIR           put wix-print's SQLite file in DIR (e.g. /dev/shm, to see what the
                         fsyncs cost) [the stack's temp dir]
";

#[derive(Clone, Copy, PartialEq)]
enum Types {
    Kitchen,
    All,
}

struct Args {
    tickets: usize,
    runs: usize,
    types: Types,
    mode: Mode,
    offline_poll_ms: Option<u64>,
    status_poll_ms: Option<u64>,
    latency_samples: usize,
    drain_polls: Option<Vec<PollSpec>>,
    latency_polls: Option<Vec<PollSpec>>,
    latency_modes: Vec<Mode>,
    concurrency: usize,
    db_dir: Option<PathBuf>,
}

fn parse_mode(s: &str) -> anyhow::Result<Mode> {
    match s {
        "offline" => Ok(Mode::Offline),
        "unreachable" => Ok(Mode::Unreachable),
        other => bail!("unknown outage mode {other:?} (offline, unreachable)"),
    }
}

/// A poll set as given: `OFFLINE[/STATUS]` in ms, or `default` (the first drain set).
#[derive(Clone, Copy, PartialEq)]
enum PollSpec {
    Default,
    Ms(u64, Option<u64>),
}

fn parse_poll(s: &str) -> anyhow::Result<PollSpec> {
    if s == "default" {
        return Ok(PollSpec::Default);
    }
    let (offline, status) = match s.split_once('/') {
        Some((o, st)) => (o, Some(st.parse().with_context(|| format!("poll set {s:?}: STATUS ms"))?)),
        None => (s, None),
    };
    Ok(PollSpec::Ms(offline.parse().with_context(|| format!("poll set {s:?}: OFFLINE[/STATUS] in ms"))?, status))
}

/// The intervals one stack runs with.
#[derive(Clone, Copy, PartialEq)]
struct Polls {
    offline_ms: u64,
    status_ms: u64,
}

impl Polls {
    fn label(self) -> String {
        format!("PRINT_OFFLINE_POLL_MS={} PRINT_STATUS_POLL_MS={}", self.offline_ms, self.status_ms)
    }
    fn short(self) -> String {
        format!("offline poll {} ms, status poll {} ms", self.offline_ms, self.status_ms)
    }
}

fn parse_args() -> anyhow::Result<Args> {
    wixprint_tests::cli::help_or_version("recoverybench", HELP);
    let mut a = Args {
        tickets: 1000,
        runs: 5,
        types: Types::Kitchen,
        mode: Mode::Offline,
        offline_poll_ms: None,
        status_poll_ms: None,
        latency_samples: 30,
        drain_polls: None,
        latency_polls: None,
        latency_modes: vec![Mode::Offline, Mode::Unreachable],
        concurrency: 16,
        db_dir: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            print!("{HELP}");
            std::process::exit(0);
        }
        let v = it.next().with_context(|| format!("{flag} needs a value (see --help)"))?;
        let list =
            |v: &str| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        match flag.as_str() {
            "--tickets" => a.tickets = v.parse().context("--tickets N")?,
            "--runs" => a.runs = v.parse().context("--runs R")?,
            "--types" => {
                a.types = match v.as_str() {
                    "kitchen" => Types::Kitchen,
                    "all" => Types::All,
                    other => bail!("--types {other:?}: kitchen or all"),
                }
            }
            "--mode" => a.mode = parse_mode(v)?,
            "--offline-poll-ms" => a.offline_poll_ms = Some(v.parse().context("--offline-poll-ms MS")?),
            "--status-poll-ms" => a.status_poll_ms = Some(v.parse().context("--status-poll-ms MS")?),
            "--latency-samples" => a.latency_samples = v.parse().context("--latency-samples K")?,
            "--drain-polls" => {
                a.drain_polls = Some(list(v).iter().map(|p| parse_poll(p)).collect::<Result<_, _>>()?);
            }
            "--latency-polls" => {
                a.latency_polls = Some(list(v).iter().map(|p| parse_poll(p)).collect::<Result<_, _>>()?);
            }
            "--latency-modes" => a.latency_modes = list(v).iter().map(|m| parse_mode(m)).collect::<Result<_, _>>()?,
            "--concurrency" => a.concurrency = v.parse().context("--concurrency C")?,
            "--db-dir" => a.db_dir = Some(PathBuf::from(v)),
            other => bail!("unknown option {other} (see --help)"),
        }
    }
    ensure!(a.tickets > 0 && a.concurrency > 0, "--tickets and --concurrency must be positive");
    Ok(a)
}

/// wix-print's production values for the keys the test harness shortens, read from wix-print
/// itself: its `Config` built from an environment that names only a printer.
struct Defaults {
    offline_poll_ms: u64,
    status_poll_ms: u64,
    status_timeout_ms: u64,
    retry_backoff_min_ms: u64,
    retry_backoff_max_ms: u64,
    bus_heartbeat_ms: u64,
    bus_stale_ms: u64,
}

fn production_defaults() -> anyhow::Result<Defaults> {
    let keys = wix_print::config::KEYS;
    let src = Source::load_with(keys, None, |k| (k == "PRINTER_URL").then(|| "tcp://127.0.0.1:9100".to_owned()))?;
    let cfg = wix_print::Config::from_source(&src)?;
    // `Backoff` does not expose its minimum; take it from the key's documented default.
    let help_default = |env: &str| -> anyhow::Result<u64> {
        let key = keys.iter().find(|k| k.env == env).with_context(|| format!("wix-print has no key {env}"))?;
        let tail = key.help.split("(default ").nth(1).with_context(|| format!("{env}: no default in its help"))?;
        Ok(tail.chars().take_while(char::is_ascii_digit).collect::<String>().parse()?)
    };
    let ms = |d: Duration| d.as_millis() as u64;
    let d = Defaults {
        offline_poll_ms: ms(cfg.offline_poll),
        status_poll_ms: ms(cfg.status_poll),
        status_timeout_ms: ms(cfg.status_timeout),
        retry_backoff_min_ms: help_default("PRINT_RETRY_BACKOFF_MIN_MS")?,
        retry_backoff_max_ms: ms(cfg.retry_backoff.max()),
        bus_heartbeat_ms: ms(cfg.bus.heartbeat),
        bus_stale_ms: ms(cfg.bus.stale_after),
    };
    ensure!(d.retry_backoff_min_ms <= d.retry_backoff_max_ms, "retry backoff defaults out of order");
    Ok(d)
}

/// The environment of one stack: production defaults, with the given poll intervals.
fn stack_options(a: &Args, d: &Defaults, offline_poll_ms: u64, status_poll_ms: u64, types: Types) -> StackOptions {
    let mut o = StackOptions::default()
        .print_env("PRINT_OFFLINE_POLL_MS", offline_poll_ms.to_string())
        .print_env("PRINT_STATUS_POLL_MS", status_poll_ms.to_string())
        .print_env("PRINT_STATUS_TIMEOUT_MS", d.status_timeout_ms.to_string())
        .print_env("PRINT_RETRY_BACKOFF_MIN_MS", d.retry_backoff_min_ms.to_string())
        .print_env("PRINT_RETRY_BACKOFF_MAX_MS", d.retry_backoff_max_ms.to_string());
    for (k, v) in [("BUS_HEARTBEAT_MS", d.bus_heartbeat_ms), ("BUS_STALE_MS", d.bus_stale_ms)] {
        o = o.print_env(k, v.to_string()).ingest_env(k, v.to_string());
    }
    if types == Types::Kitchen {
        o = o.print_env("PRINT_RECEIPT_TYPES", "kitchen");
    }
    if let Some(dir) = &a.db_dir {
        let file = dir.join(format!("recoverybench-{}-{}.db", std::process::id(), rand::random::<u32>()));
        o = o.print_env("PRINT_DB_PATH", file.display().to_string());
    }
    o
}

/// Removes a `--db-dir` database (and its WAL files) after a run.
fn remove_db(opts: &StackOptions) {
    if let Some((_, path)) = opts.print_env.iter().rev().find(|(k, _)| k == "PRINT_DB_PATH") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}

/// Posts `orders` distinct pickup orders (numbers from `first`) at `concurrency`.
async fn post_orders(stack: &Stack, first: u64, orders: usize, concurrency: usize) -> anyhow::Result<()> {
    let bodies: Arc<Vec<String>> = Arc::new(
        (0..orders as u64)
            .map(|i| stack.keys.sign_event(&distinct_order("order_created.pickup.json", first + i)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(orders) {
        let (bodies, next, poster) = (bodies.clone(), next.clone(), stack.poster());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { return anyhow::Ok(()) };
                let (status, text) = poster.post(body.clone()).await?;
                ensure!(status == 200, "webhook {i} answered {status}: {text}");
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// Waits until wix-print has exactly `n` jobs waiting (queued, uncertain or failed).
async fn wait_waiting(stack: &Stack, n: u64, timeout: Duration) -> anyhow::Result<()> {
    let admin = stack.print_admin().await?;
    wait_until(timeout, &format!("{n} jobs waiting in wix-print"), || {
        let mut admin = admin.clone();
        async move { Ok(admin.get_queue_status(GetQueueStatusRequest {}).await?.into_inner().waiting == n) }
    })
    .await
}

/// A random pause of `base` plus up to two poll intervals: the switch lands at a random point
/// of wix-print's not-ready poll cycle.
async fn random_pause(base: Duration, poll_ms: u64) {
    let extra = rand::random_range(0..=2 * poll_ms.max(1));
    tokio::time::sleep(base + Duration::from_millis(extra)).await;
}

/// utime + stime of a process in seconds (`/proc/<pid>/stat`, USER_HZ = 100).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Busy CPU seconds of the whole machine, all cores (`/proc/stat`: everything but idle and
/// iowait; USER_HZ = 100).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    busy as f64 / 100.0
}

/// VmRSS and VmHWM of a process in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn secs_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// min / p50 / p90 / max / mean of some values.
struct Summary {
    min: f64,
    p50: f64,
    p90: f64,
    max: f64,
    mean: f64,
    n: usize,
}

fn summary(values: &[f64]) -> Summary {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Summary {
        min: v.first().copied().unwrap_or(f64::NAN),
        p50: pct(&v, 0.5),
        p90: pct(&v, 0.9),
        max: v.last().copied().unwrap_or(f64::NAN),
        mean: v.iter().sum::<f64>() / n.max(1) as f64,
        n,
    }
}

impl Summary {
    fn line(&self, decimals: usize) -> String {
        format!(
            "min {:.d$} p50 {:.d$} p90 {:.d$} max {:.d$} mean {:.d$} (n={})",
            self.min,
            self.p50,
            self.p90,
            self.max,
            self.mean,
            self.n,
            d = decimals
        )
    }
    fn cells(&self, decimals: usize) -> String {
        format!(
            "{:.d$} | {:.d$} | {:.d$} | {:.d$} | {:.d$}",
            self.min,
            self.p50,
            self.p90,
            self.max,
            self.mean,
            d = decimals
        )
    }
}

/// One drain run's measurements.
struct DrainRun {
    start_ms: f64,
    rate_first_last: f64,
    rate_from_switch: f64,
    switch_to_last_s: f64,
    gaps_ms: Vec<f64>,
    print_cpu_pct: f64,
    sim_cpu_pct: f64,
    ingest_cpu_pct: f64,
    /// CPU of the rest of the machine during the drain: other processes (noise) and kernel time
    /// charged to no process (loopback TCP softirq of the drain itself).
    rest_cpu_pct: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

async fn drain_run(a: &Args, d: &Defaults, offline_poll_ms: u64, status_poll_ms: u64) -> anyhow::Result<DrainRun> {
    let (orders, expected) = match a.types {
        Types::Kitchen => (a.tickets, a.tickets),
        Types::All => (a.tickets.div_ceil(3), 3 * a.tickets.div_ceil(3)),
    };
    let opts = stack_options(a, d, offline_poll_ms, status_poll_ms, a.types);
    let stack = Stack::start(opts.clone()).await?;
    let result = async {
        stack.sim.set_mode(a.mode);
        post_orders(&stack, 1, orders, a.concurrency).await?;
        wait_waiting(&stack, expected as u64, Duration::from_secs(300))
            .await
            .with_context(|| format!("queueing the backlog\n{}", stack.logs()))?;
        ensure!(stack.sim.tickets().is_empty(), "tickets printed while the printer was away");
        random_pause(Duration::from_secs(1), offline_poll_ms).await;

        let print_pid = stack.print.pid().context("wix-print is not running")?;
        let ingest_pid = stack.ingest.pid().context("wix-ingest is not running")?;
        let (print_proc, ingest_proc) = (print_pid.to_string(), ingest_pid.to_string());
        let cpu = || (cpu_seconds(&print_proc), cpu_seconds("self"), cpu_seconds(&ingest_proc), machine_busy_seconds());
        let switch_at = SystemTime::now();
        stack.sim.set_mode(Mode::Online);
        // CPU is counted from the first ticket on: the drain itself, not the wait before it.
        stack.sim.wait_for_tickets(1, Duration::from_secs(60)).await?;
        let (cpu0, wall0) = (cpu(), Instant::now());
        stack.sim.wait_for_tickets(expected, Duration::from_secs(600)).await?;
        let (cpu1, wall) = (cpu(), wall0.elapsed().as_secs_f64());
        let (rss, hwm) = rss_kib(print_pid);

        // Nothing more may arrive: exactly one complete ticket per job.
        wait_waiting(&stack, 0, Duration::from_secs(10)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tickets = stack.sim.tickets();
        ensure!(tickets.len() == expected, "{} tickets printed for {expected} jobs", tickets.len());
        ensure!(tickets.iter().all(|t| t.complete), "a ticket arrived incomplete");

        let first = tickets[0].printed_at;
        let last = tickets[expected - 1].printed_at;
        let span = secs_between(first, last);
        let gaps_ms = tickets.windows(2).map(|w| secs_between(w[0].printed_at, w[1].printed_at) * 1000.0).collect();
        Ok(DrainRun {
            start_ms: secs_between(switch_at, first) * 1000.0,
            rate_first_last: (expected - 1) as f64 / span.max(1e-9),
            rate_from_switch: expected as f64 / secs_between(switch_at, last).max(1e-9),
            switch_to_last_s: secs_between(switch_at, last),
            gaps_ms,
            print_cpu_pct: (cpu1.0 - cpu0.0) / wall * 100.0,
            sim_cpu_pct: (cpu1.1 - cpu0.1) / wall * 100.0,
            ingest_cpu_pct: (cpu1.2 - cpu0.2) / wall * 100.0,
            rest_cpu_pct: ((cpu1.3 - cpu0.3) - (cpu1.0 - cpu0.0) - (cpu1.1 - cpu0.1) - (cpu1.2 - cpu0.2)).max(0.0)
                / wall
                * 100.0,
            rss_kib: rss,
            hwm_kib: hwm,
        })
    }
    .await;
    stack.sim.shutdown();
    drop(stack);
    remove_db(&opts);
    result
}

/// `samples` start latencies (ms) with one stack: queue 3 tickets with the printer away, pause
/// a random part of two poll intervals, switch online, time the first ticket.
async fn latency_samples(
    a: &Args,
    d: &Defaults,
    mode: Mode,
    offline_poll_ms: u64,
    status_poll_ms: u64,
    samples: usize,
) -> anyhow::Result<Vec<f64>> {
    const PER_SAMPLE: usize = 3;
    let opts = stack_options(a, d, offline_poll_ms, status_poll_ms, Types::Kitchen);
    let stack = Stack::start(opts.clone()).await?;
    let result = async {
        let mut out = Vec::new();
        for s in 0..samples {
            stack.sim.set_mode(mode);
            let base = stack.sim.tickets().len();
            post_orders(&stack, 1 + (s * PER_SAMPLE) as u64, PER_SAMPLE, PER_SAMPLE).await?;
            wait_waiting(&stack, PER_SAMPLE as u64, Duration::from_secs(30)).await?;
            ensure!(stack.sim.tickets().len() == base, "tickets printed while the printer was away");
            random_pause(Duration::from_millis(200), offline_poll_ms).await;
            let switch_at = SystemTime::now();
            stack.sim.set_mode(Mode::Online);
            let tickets = stack.sim.wait_for_tickets(base + PER_SAMPLE, Duration::from_secs(30)).await?;
            out.push(secs_between(switch_at, tickets[base].printed_at) * 1000.0);
            wait_waiting(&stack, 0, Duration::from_secs(30)).await?;
        }
        Ok(out)
    }
    .await;
    stack.sim.shutdown();
    drop(stack);
    remove_db(&opts);
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let d = production_defaults()?;
    let production = Polls { offline_ms: d.offline_poll_ms, status_ms: d.status_poll_ms };
    let status_default = a.status_poll_ms.unwrap_or(d.status_poll_ms);
    let first = Polls { offline_ms: a.offline_poll_ms.unwrap_or(d.offline_poll_ms), status_ms: status_default };
    let resolve = |p: &PollSpec| match *p {
        PollSpec::Default => first,
        PollSpec::Ms(offline_ms, status) => Polls { offline_ms, status_ms: status.unwrap_or(status_default) },
    };
    let drain_sets = distinct(
        a.drain_polls
            .clone()
            .unwrap_or_else(|| vec![PollSpec::Default, PollSpec::Ms(250, Some(250))])
            .iter()
            .map(resolve),
    );
    let latency_polls = distinct(
        a.latency_polls
            .clone()
            .unwrap_or_else(|| {
                vec![PollSpec::Ms(d.offline_poll_ms, None), PollSpec::Ms(250, Some(250)), PollSpec::Ms(1000, None)]
            })
            .iter()
            .map(resolve),
    );
    let tag = |p: Polls| if p == production { " (production defaults)" } else { "" };

    let profile = if bin_dir().ends_with("release") { "release" } else { "NOT release (build with --release)" };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let (orders, expected) = match a.types {
        Types::Kitchen => (a.tickets, a.tickets),
        Types::All => (a.tickets.div_ceil(3), 3 * a.tickets.div_ceil(3)),
    };
    println!("recoverybench: binaries {profile} in {}", bin_dir().display());
    println!("machine: {cores} cores, {cpu}");
    println!(
        "wix-print production defaults: PRINT_OFFLINE_POLL_MS={} PRINT_STATUS_POLL_MS={} PRINT_STATUS_TIMEOUT_MS={} \
         PRINT_RETRY_BACKOFF_MIN_MS={} PRINT_RETRY_BACKOFF_MAX_MS={} BUS_HEARTBEAT_MS={} BUS_STALE_MS={}",
        d.offline_poll_ms,
        d.status_poll_ms,
        d.status_timeout_ms,
        d.retry_backoff_min_ms,
        d.retry_backoff_max_ms,
        d.bus_heartbeat_ms,
        d.bus_stale_ms
    );
    println!(
        "drain runs: {} x {expected} tickets ({orders} orders, {}) per poll set, printer {} during the outage{}",
        a.runs,
        if a.types == Types::Kitchen { "kitchen tickets only" } else { "kitchen + driver + customer" },
        a.mode.as_str(),
        a.db_dir.as_ref().map_or(String::new(), |p| format!(", database in {}", p.display()))
    );

    let mut drains: Vec<(Polls, Vec<DrainRun>)> = Vec::new();
    if a.runs > 0 {
        for &polls in &drain_sets {
            println!("drain poll set: {}{}", polls.label(), tag(polls));
            let mut runs = Vec::new();
            for run in 1..=a.runs {
                let r = drain_run(&a, &d, polls.offline_ms, polls.status_ms)
                    .await
                    .with_context(|| format!("drain run {run}, {}", polls.label()))?;
                println!(
                    "run {run}: start_latency_ms {:.1} drain_first_to_last_per_s {:.0} drain_from_switch_per_s {:.0} \
                     switch_to_last_s {:.3} gap_p99_ms {:.2} wix_print_cpu_pct {:.0} sim_cpu_pct {:.0} \
                     ingest_cpu_pct {:.0} rest_cpu_pct {:.0} wix_print_rss_kib {} wix_print_hwm_kib {}",
                    r.start_ms,
                    r.rate_first_last,
                    r.rate_from_switch,
                    r.switch_to_last_s,
                    pct(&sorted(&r.gaps_ms), 0.99),
                    r.print_cpu_pct,
                    r.sim_cpu_pct,
                    r.ingest_cpu_pct,
                    r.rest_cpu_pct,
                    r.rss_kib,
                    r.hwm_kib
                );
                runs.push(r);
            }
            drains.push((polls, runs));
        }
    }

    let mut latency_sets: Vec<(Mode, Polls, Vec<f64>)> = Vec::new();
    if a.latency_samples > 0 {
        for &mode in &a.latency_modes {
            for &polls in &latency_polls {
                let v = latency_samples(&a, &d, mode, polls.offline_ms, polls.status_ms, a.latency_samples)
                    .await
                    .with_context(|| format!("start-latency samples, {} / {}", mode.as_str(), polls.label()))?;
                println!(
                    "start latency ms, printer {} -> online, {}: {}",
                    mode.as_str(),
                    polls.label(),
                    summary(&v).line(1)
                );
                latency_sets.push((mode, polls, v));
            }
        }
    }

    for (polls, runs) in &drains {
        let col = |f: fn(&DrainRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let gaps: Vec<f64> = runs.iter().flat_map(|r| r.gaps_ms.iter().copied()).collect();
        let gaps_sorted = sorted(&gaps);
        println!();
        println!("summary over {} drain runs, {}{}:", runs.len(), polls.label(), tag(*polls));
        println!("start_latency_ms: {}", summary(&col(|r| r.start_ms)).line(1));
        println!("drain_first_to_last_tickets_per_s: {}", summary(&col(|r| r.rate_first_last)).line(0));
        println!("drain_from_switch_tickets_per_s: {}", summary(&col(|r| r.rate_from_switch)).line(0));
        println!("switch_to_last_ticket_s: {}", summary(&col(|r| r.switch_to_last_s)).line(3));
        println!(
            "gap_between_tickets_ms (all runs): p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
            pct(&gaps_sorted, 0.5),
            pct(&gaps_sorted, 0.99),
            pct(&gaps_sorted, 0.999),
            gaps_sorted.last().copied().unwrap_or(f64::NAN)
        );
        println!("wix_print_cpu_pct_of_one_core_during_drain: {}", summary(&col(|r| r.print_cpu_pct)).line(0));
        println!("sim_cpu_pct_of_one_core_during_drain: {}", summary(&col(|r| r.sim_cpu_pct)).line(0));
        println!("ingest_cpu_pct_of_one_core_during_drain: {}", summary(&col(|r| r.ingest_cpu_pct)).line(0));
        println!(
            "rest_of_machine_cpu_pct_of_one_core_during_drain (other processes, unattributed kernel time): {}",
            summary(&col(|r| r.rest_cpu_pct)).line(0)
        );
        println!("wix_print_vmrss_kib_after_drain: {}", summary(&col(|r| r.rss_kib as f64)).line(0));
        println!("wix_print_vmhwm_kib_after_drain: {}", summary(&col(|r| r.hwm_kib as f64)).line(0));
    }

    // The same as a Markdown table, for BENCHMARKS.md.
    println!("\n| measure | min | p50 | p90 | max | mean | goal |");
    println!("|---|---|---|---|---|---|---|");
    let row = |name: String, s: Summary, dec: usize, goal: &str| println!("| {name} | {} | {goal} |", s.cells(dec));
    for (polls, runs) in &drains {
        let n = runs.len();
        let col = |f: fn(&DrainRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let set = format!("{}{}", polls.short(), tag(*polls));
        row(
            format!("start latency, ms (drain runs: {n}, printer {}; {set})", a.mode.as_str()),
            summary(&col(|r| r.start_ms)),
            0,
            "≤ 1000",
        );
        row(
            format!("drain rate first → last ticket, tickets/s ({expected} tickets; {set})"),
            summary(&col(|r| r.rate_first_last)),
            0,
            "≥ 200",
        );
        row(format!("drain rate from the switch, tickets/s ({set})"), summary(&col(|r| r.rate_from_switch)), 0, "");
        row(format!("switch → ticket {expected}, s ({set})"), summary(&col(|r| r.switch_to_last_s)), 2, "");
        row(
            format!("wix-print CPU during the drain, % of one core ({set})"),
            summary(&col(|r| r.print_cpu_pct)),
            0,
            "",
        );
        row(
            format!("simulator (bench process) CPU during the drain, % of one core ({set})"),
            summary(&col(|r| r.sim_cpu_pct)),
            0,
            "",
        );
        row(
            format!("rest of the machine's CPU during the drain, % of one core ({set})"),
            summary(&col(|r| r.rest_cpu_pct)),
            0,
            "",
        );
        row(format!("wix-print VmRSS after the drain, KiB ({set})"), summary(&col(|r| r.rss_kib as f64)), 0, "");
    }
    for (mode, polls, v) in &latency_sets {
        row(
            format!(
                "start latency, ms ({} samples, printer {}; {}{})",
                v.len(),
                mode.as_str(),
                polls.short(),
                tag(*polls)
            ),
            summary(v),
            0,
            "≤ 1000",
        );
    }
    Ok(())
}

/// The poll sets in their order, each once.
fn distinct(sets: impl Iterator<Item = Polls>) -> Vec<Polls> {
    let mut out: Vec<Polls> = Vec::new();
    for p in sets {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}
