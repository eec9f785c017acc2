//! Load generator and benchmark: starts the real stack (binaries from the same target dir, so
//! run it with `--release`), sends signed webhooks and prints numbers.
//!
//! Phase 1 (throughput): N distinct orders at concurrency C; accept latency p50/p99/max and
//! accepted orders/s; then the time until all 3·N tickets are confirmed.
//! Phase 2 (latency): M orders paced at R/s; webhook → ticket latency at the simulator
//! (kitchen ticket, and the last of the three).
//! RSS of both services idle (after start-up) and after the run, from /proc.
//!
//! `loadgen [--orders N] [--concurrency C] [--accept-rate R1] [--paced M] [--rate R] [--accept-only]`
//! `--accept-rate` offers phase 1 at R1 orders/s (open loop) instead of saturating C connections.
//! `--accept-only` keeps wix-print stopped and measures phase 1's acceptance alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use wixprint_tests::harness::{Stack, StackOptions, bin_dir};
use wixprint_tests::webhook::distinct_order;

struct Args {
    orders: usize,
    concurrency: usize,
    paced: usize,
    rate: f64,
    /// Only measure webhook acceptance, with wix-print stopped (ingest alone).
    accept_only: bool,
    /// Offer phase 1 at this many orders/s (open loop, at most C in flight) instead of as
    /// fast as C connections go.
    accept_rate: Option<f64>,
    /// Also report this process's CPU time (e.g. a local OpenTelemetry collector).
    collector_pid: Option<u32>,
}

fn parse_args() -> Args {
    wixprint_tests::cli::help_or_version(
        "loadgen",
        "loadgen [--orders N] [--concurrency C] [--accept-rate R1] [--paced M] [--rate R] [--accept-only]
Starts the real stack, sends N signed webhooks at concurrency C (or offered at R1/s), waits for
the 3·N tickets, then M orders paced at R/s; prints accept latency, throughput, webhook → ticket
latency and RSS. Defaults: 2000 orders, concurrency 8, 200 paced at 20/s. Run the release build
(scripts/bench.sh load).
  --accept-only  wix-print stays stopped: webhook acceptance alone
  --collector-pid P  also report the CPU time process P used during phase 1 and the drain
  -h, --help     this text
  -V, --version  the version",
    );
    let mut a = Args {
        orders: 2000,
        concurrency: 8,
        paced: 200,
        rate: 20.0,
        accept_only: false,
        accept_rate: None,
        collector_pid: None,
    };
    let mut argv: Vec<String> = std::env::args().collect();
    if let Some(pos) = argv.iter().position(|x| x == "--accept-only") {
        a.accept_only = true;
        argv.remove(pos);
    }
    let mut i = 1;
    while i + 1 < argv.len() {
        let v = &argv[i + 1];
        match argv[i].as_str() {
            "--orders" => a.orders = v.parse().expect("--orders N"),
            "--concurrency" => a.concurrency = v.parse().expect("--concurrency C"),
            "--paced" => a.paced = v.parse().expect("--paced M"),
            "--rate" => a.rate = v.parse().expect("--rate R"),
            "--accept-rate" => a.accept_rate = Some(v.parse().expect("--accept-rate R")),
            "--collector-pid" => a.collector_pid = Some(v.parse().expect("--collector-pid P")),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// CPU time (user + system) the process has used so far, in milliseconds, from `/proc`.
fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces): state is the first, utime
    // and stime the 12th and 13th.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    // In clock ticks of USER_HZ, which Linux fixes at 100 for /proc.
    f.get(11).zip(f.get(12)).map_or(0, |(u, s)| (u + s) * 10)
}

fn rss_kb(pid: u32) -> (u64, u64) {
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

/// The order number (20000 + n) a ticket belongs to.
fn ticket_order(text: &str, numbers: &HashMap<String, usize>) -> Option<usize> {
    text.split(|c: char| !c.is_ascii_digit()).find_map(|tok| numbers.get(tok).copied())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let profile = if bin_dir().ends_with("release") { "release" } else { "debug (use --release for real numbers)" };
    println!(
        "loadgen: {} orders at concurrency {}, then {} paced at {}/s; binaries: {profile}",
        args.orders, args.concurrency, args.paced, args.rate
    );
    let stack =
        Stack::start(StackOptions::default().print_env("RUST_LOG", "warn").ingest_env("RUST_LOG", "warn")).await?;
    let (ipid, ppid) = (stack.ingest.pid().unwrap_or(0), stack.print.pid().unwrap_or(0));

    // Warm-up: one order end to end.
    stack.send_event(&distinct_order("order_created.pickup.json", 0)).await?;
    stack.sim.wait_for_tickets(3, Duration::from_secs(30)).await?;
    stack.wait_quiet(Duration::from_secs(30)).await?;
    let idle = (rss_kb(ipid), rss_kb(ppid));

    // Phase 1: throughput.
    let total = args.orders;
    let tokens: Arc<Vec<String>> = Arc::new(
        (1..=total)
            .map(|n| {
                stack.keys.sign_event(&distinct_order(
                    if n % 2 == 0 { "order_created.pickup.json" } else { "order_approved.delivery.json" },
                    n as u64,
                ))
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let poster = stack.poster();
    let cpu_pids = [Some(ipid), Some(ppid), args.collector_pid];
    let cpu_before = cpu_pids.map(|p| p.map(cpu_ms));
    let pace = args
        .accept_rate
        .map(|r| Arc::new(tokio::sync::Mutex::new(tokio::time::interval(Duration::from_secs_f64(1.0 / r)))));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (tokens, next, poster, pace) = (tokens.clone(), next.clone(), poster.clone(), pace.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                if let Some(p) = &pace {
                    p.lock().await.tick().await;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tokens.len() {
                    return anyhow::Ok(lat);
                }
                let t = Instant::now();
                let (status, body) = poster.post(tokens[i].clone()).await?;
                anyhow::ensure!(status == 200, "webhook {i} answered {status}: {body}");
                lat.push(t.elapsed());
            }
        }));
    }
    let mut accept = Vec::new();
    for w in workers {
        accept.extend(w.await??);
    }
    let accept_wall = started.elapsed();
    accept.sort();
    if args.accept_only {
        println!("\n| measure (wix-print stopped) | value | goal |\n|---|---|---|");
        println!(
            "| webhook accept latency p50 / p99 / max (concurrency {}) | {} / {} / {} | p99 < 5 ms |",
            args.concurrency,
            ms(percentile(&accept, 0.50)),
            ms(percentile(&accept, 0.99)),
            ms(accept.last().copied().unwrap_or_default())
        );
        println!("| accepted orders/s ({total} orders) | {:.0} | ≥ 500 |", total as f64 / accept_wall.as_secs_f64());
        println!("| wix-ingest RSS idle / after run | {} / {} KiB | < 20 MB idle |", idle.0.0, rss_kb(ipid).0);
        keep_logs(&stack);
        return Ok(());
    }
    let expected = 3 + 3 * total;
    stack.sim.wait_for_tickets(expected, Duration::from_secs(600)).await?;
    let drain_wall = started.elapsed();
    let cpu_used: Vec<Option<u64>> =
        cpu_pids.iter().zip(cpu_before).map(|(p, b)| Some(cpu_ms((*p)?).saturating_sub(b?))).collect();

    // Phase 2: paced end-to-end latency.
    let base = stack.sim.tickets().len();
    let mut sent: Vec<(String, SystemTime)> = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut tick = tokio::time::interval(interval);
    for k in 0..args.paced {
        tick.tick().await;
        let n = 1_000_000 + k as u64;
        let ev = distinct_order("order_created.pickup.json", n);
        let token = stack.keys.sign_event(&ev);
        let number = ev["createdEvent"]["entity"]["number"].as_str().unwrap_or_default().to_owned();
        let at = SystemTime::now();
        let (status, body) = stack.post_webhook(token).await?;
        anyhow::ensure!(status == 200, "paced webhook answered {status}: {body}");
        sent.push((number, at));
    }
    let tickets = stack.sim.wait_for_tickets(base + 3 * args.paced, Duration::from_secs(120)).await?;
    stack.wait_quiet(Duration::from_secs(60)).await?;
    let numbers: HashMap<String, usize> = sent.iter().enumerate().map(|(i, (n, _))| (n.clone(), i)).collect();
    let mut first: Vec<Option<Duration>> = vec![None; sent.len()];
    let mut last: Vec<Option<Duration>> = vec![None; sent.len()];
    for t in &tickets[base..] {
        if let Some(i) = ticket_order(&t.text, &numbers) {
            let d = t.printed_at.duration_since(sent[i].1).unwrap_or_default();
            first[i] = Some(first[i].map_or(d, |f: Duration| f.min(d)));
            last[i] = Some(last[i].map_or(d, |l: Duration| l.max(d)));
        }
    }
    let mut first: Vec<Duration> = first.into_iter().flatten().collect();
    let mut last: Vec<Duration> = last.into_iter().flatten().collect();
    first.sort();
    last.sort();
    let after = (rss_kb(ipid), rss_kb(ppid));

    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!("\nmachine: {} cores, {machine}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("\n| measure | value | goal |");
    println!("|---|---|---|");
    println!("| webhook accept latency p50 (concurrency {}) | {} | |", args.concurrency, ms(percentile(&accept, 0.50)));
    println!(
        "| webhook accept latency p99 (concurrency {}) | {} | < 5 ms |",
        args.concurrency,
        ms(percentile(&accept, 0.99))
    );
    println!("| webhook accept latency max | {} | |", ms(accept.last().copied().unwrap_or_default()));
    println!("| accepted orders/s ({} orders) | {:.0} | ≥ 500 |", total, total as f64 / accept_wall.as_secs_f64());
    println!(
        "| all {} tickets confirmed after | {:.2} s ({:.0} tickets/s) | |",
        3 * total,
        drain_wall.as_secs_f64(),
        (3 * total) as f64 / drain_wall.as_secs_f64()
    );
    let per_order =
        |ms: Option<u64>| ms.map_or("–".to_owned(), |ms| format!("{:.0} µs", ms as f64 * 1000.0 / total as f64));
    println!(
        "| CPU per order, phase 1 + drain: wix-ingest / wix-print / collector | {} / {} / {} | |",
        per_order(cpu_used[0]),
        per_order(cpu_used[1]),
        per_order(cpu_used[2])
    );
    println!(
        "| webhook → kitchen ticket p50 ({} orders at {}/s) | {} | |",
        first.len(),
        args.rate,
        ms(percentile(&first, 0.50))
    );
    println!("| webhook → kitchen ticket p99 | {} | < 50 ms |", ms(percentile(&first, 0.99)));
    println!(
        "| webhook → last of 3 tickets p50 / p99 | {} / {} | |",
        ms(percentile(&last, 0.50)),
        ms(percentile(&last, 0.99))
    );
    println!(
        "| wix-ingest RSS idle / after run / peak | {} / {} / {} KiB | < 20 MB idle |",
        idle.0.0, after.0.0, after.0.1
    );
    println!(
        "| wix-print RSS idle / after run / peak | {} / {} / {} KiB | < 20 MB idle |",
        idle.1.0, after.1.0, after.1.1
    );
    keep_logs(&stack);
    Ok(())
}

/// `LOADGEN_LOGS=DIR` keeps both services' logs there (the stack's temp dir goes away).
fn keep_logs(stack: &Stack) {
    if let Some(dir) = std::env::var_os("LOADGEN_LOGS") {
        let dir = std::path::PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("wix-ingest.log"), stack.ingest.log());
        let _ = std::fs::write(dir.join("wix-print.log"), stack.print.log());
    }
}
