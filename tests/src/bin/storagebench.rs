//! Storage benchmark: does a full database slow wix-ingest down, and what does the retention
//! leave on the SD card? Starts the real wix-ingest (wix-print stopped: acceptance alone),
//! measures webhook accept latency and `GetStatus` latency on an empty database, fills it with
//! N stored webhook events (with orders and delivered outbox rows, received over the last 60
//! days), measures again, then restarts it with a 30-day retention and reports the prune time,
//! the accept latency while it prunes, and the database size before and after.
//!
//! `storagebench [--events N] [--webhooks W] [--concurrency C] [--payload BYTES]`
//! (defaults 1,000,000 / 2,000 / 8 / 300). Run the release build: `scripts/bench.sh storage`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wixprint_shared::proto::ingest::GetStatusRequest;
use wixprint_tests::harness::{Stack, StackOptions, bin_dir};
use wixprint_tests::webhook::distinct_order;

struct Args {
    events: usize,
    webhooks: usize,
    concurrency: usize,
    payload: usize,
}

fn parse_args() -> Args {
    wixprint_tests::cli::help_or_version(
        "storagebench",
        "storagebench [--events N] [--webhooks W] [--concurrency C] [--payload BYTES]
Does a full database slow wix-ingest down, and what does the retention leave? Fills ingest.db
with N stored events, measures webhook accept and GetStatus latency before and after, then the
prune at restart. Defaults 1,000,000 / 2,000 / 8 / 300. Release build: scripts/bench.sh storage.
  -h, --help     this text
  -V, --version  the version",
    );
    let mut a = Args { events: 1_000_000, webhooks: 2000, concurrency: 8, payload: 300 };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i + 1 < argv.len() {
        let v = &argv[i + 1];
        match argv[i].as_str() {
            "--events" => a.events = v.parse().expect("--events N"),
            "--webhooks" => a.webhooks = v.parse().expect("--webhooks W"),
            "--concurrency" => a.concurrency = v.parse().expect("--concurrency C"),
            "--payload" => a.payload = v.parse().expect("--payload BYTES"),
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
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn db_bytes(stack: &Stack) -> u64 {
    ["ingest.db", "ingest.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(stack.dir.path().join(f)).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Accept latencies of `n` distinct orders (numbers from `first`) at concurrency `c`.
async fn accept(stack: &Stack, first: u64, n: usize, c: usize) -> anyhow::Result<Vec<Duration>> {
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..n).map(|i| stack.keys.sign_event(&distinct_order("order_created.pickup.json", first + i as u64))).collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..c {
        let (tokens, next, poster) = (tokens.clone(), next.clone(), stack.poster());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
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
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await??);
    }
    all.sort();
    Ok(all)
}

/// `GetStatus` latencies over `n` calls.
async fn status_latency(stack: &Stack, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut admin = stack.ingest_admin().await?;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        admin.get_status(GetStatusRequest {}).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

fn report(label: &str, acc: &[Duration], st: &[Duration]) {
    println!(
        "{label:<28} accept p50 {} p99 {} max {} | GetStatus p50 {} p99 {}",
        ms(percentile(acc, 0.5)),
        ms(percentile(acc, 0.99)),
        ms(percentile(acc, 1.0)),
        ms(percentile(st, 0.5)),
        ms(percentile(st, 0.99))
    );
}

/// Stores `n` webhook events (one order and one delivered outbox row per event, as a webhook
/// would), received uniformly over the last 60 days, straight into the stopped service's file.
fn fill(path: &std::path::Path, n: usize, payload: usize) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let now = wixprint_shared::time::now_ms();
    let span = 60 * 86_400_000i64;
    let body = "x".repeat(payload);
    let request = vec![0u8; 200];
    for chunk in (0..n).collect::<Vec<_>>().chunks(50_000) {
        let tx = conn.transaction()?;
        {
            let mut ev = tx.prepare(
                "INSERT INTO webhook_events (event_id, event_type, entity_id, sequence, received_ms, outcome, payload)
                 VALUES (?1, 'wix.ecom.v1.order_created', ?2, 1, ?3, 'applied', ?4)",
            )?;
            let mut ord = tx.prepare(
                "INSERT INTO orders (order_id, number, status, source, version, sequence, updated_ms, created_ms, received_ms, order_pb)
                 VALUES (?1, ?2, 2, 1, 1, 1, ?3, ?3, ?3, ?4)",
            )?;
            let mut out = tx.prepare(
                "INSERT INTO outbox (order_id, version, request_pb, state, attempts, next_attempt_ms, created_ms, delivered_ms)
                 VALUES (?1, 1, ?2, 'delivered', 1, ?3, ?3, ?3)",
            )?;
            for &i in chunk {
                let at = now - span + (span / n as i64) * i as i64;
                let order = format!("bench-{i:08}");
                ev.execute(rusqlite::params![format!("ev-{i:08}"), order, at, body])?;
                ord.execute(rusqlite::params![order, format!("{}", 100_000 + i), at, request])?;
                out.execute(rusqlite::params![order, request, at])?;
            }
        }
        tx.commit()?;
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let profile = if bin_dir().ends_with("release") { "release" } else { "debug (use --release for real numbers)" };
    println!(
        "storagebench: {} stored events ({} B payload), {} webhooks at concurrency {}; binaries: {profile}",
        args.events, args.payload, args.webhooks, args.concurrency
    );
    let quiet = StackOptions::default()
        .print_stopped()
        .ingest_env("RUST_LOG", "warn,wix_ingest=info,wixprint_shared::retention=info");
    let mut stack = Stack::start(quiet.clone().ingest_env("INGEST_RETENTION_DAYS", "36500")).await?;

    let acc = accept(&stack, 1, args.webhooks, args.concurrency).await?;
    let st = status_latency(&stack, 300).await?;
    report("empty database", &acc, &st);

    stack.ingest.terminate().await?;
    let t = Instant::now();
    fill(&stack.dir.path().join("ingest.db"), args.events, args.payload)?;
    println!(
        "filled {} events in {:.1} s; database {:.1} MB",
        args.events,
        t.elapsed().as_secs_f64(),
        db_bytes(&stack) as f64 / 1e6
    );

    stack.ingest.start().await?;
    let acc = accept(&stack, 10_000_000, args.webhooks, args.concurrency).await?;
    let st = status_latency(&stack, 300).await?;
    report(&format!("{} stored events", args.events), &acc, &st);

    // Retention 30 days: about half of what is stored goes, in batches, while webhooks arrive.
    stack.ingest.terminate().await?;
    let before = db_bytes(&stack);
    stack.ingest.set_env("INGEST_RETENTION_DAYS", "30");
    let pruning = Instant::now();
    stack.ingest.start().await?;
    let acc = accept(&stack, 20_000_000, args.webhooks, args.concurrency).await?;
    let st = status_latency(&stack, 300).await?;
    report("while the retention prunes", &acc, &st);
    let mut admin = stack.ingest_admin().await?;
    let target = (args.events / 2) as u64;
    loop {
        let s = admin.get_status(GetStatusRequest {}).await?.into_inner();
        if s.webhook_events <= target + 3 * args.webhooks as u64 + 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        anyhow::ensure!(pruning.elapsed() < Duration::from_secs(1800), "pruning did not finish in 30 minutes");
    }
    let pruned_in = pruning.elapsed();
    // The prune gives the freed pages back (incremental vacuum) and then logs; wait for that.
    while !stack.ingest.log().contains("retention: pruned old rows") {
        tokio::time::sleep(Duration::from_millis(200)).await;
        anyhow::ensure!(pruning.elapsed() < Duration::from_secs(1800), "reclaiming did not finish in 30 minutes");
    }
    let reclaimed_in = pruning.elapsed();
    let acc = accept(&stack, 30_000_000, args.webhooks, args.concurrency).await?;
    let st = status_latency(&stack, 300).await?;
    report("after the retention", &acc, &st);
    stack.ingest.terminate().await?;
    println!(
        "retention 30 d: pruned to {} events within {:.1} s, free pages reclaimed within {:.1} s; \
         database {:.1} MB before, {:.1} MB after (incremental vacuum; WAL truncated at stop)",
        target,
        pruned_in.as_secs_f64(),
        reclaimed_in.as_secs_f64(),
        before as f64 / 1e6,
        db_bytes(&stack) as f64 / 1e6
    );
    Ok(())
}
