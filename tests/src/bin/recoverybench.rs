//! Recovery benchmark: how fast does a backlog print when the printer returns?
//!
//! Starts the real wix-ingest and wix-print (release, production poll intervals) with the
//! printer simulator offline, queues N kitchen tickets (one per order), switches the
//! simulator online and measures from the simulator's side: the start latency (switch →
//! first complete ticket) and the drain rate (tickets between the first and the last ticket).
//! Prints plain numbers. `recoverybench [tickets] [runs] [offline_poll_ms]`.

use std::time::{Duration, Instant};

use wixprint_shared::proto::print::GetQueueStatusRequest;
use wixprint_tests::harness::{Stack, StackOptions, wait_until};
use wixprint_tests::sim::Mode;
use wixprint_tests::webhook::distinct_order;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tickets: u64 = args.first().map_or(Ok(1000), |a| a.parse())?;
    let runs: usize = args.get(1).map_or(Ok(5), |a| a.parse())?;
    let poll: u64 = args.get(2).map_or(Ok(500), |a| a.parse())?;
    println!("recovery benchmark: {tickets} queued kitchen tickets, {runs} runs, PRINT_OFFLINE_POLL_MS={poll}");
    let (mut starts, mut rates, mut totals, mut rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=runs {
        let stack = Stack::start(
            StackOptions::default()
                .print_env("PRINT_RECEIPT_TYPES", "kitchen")
                .print_env("PRINT_OFFLINE_POLL_MS", poll.to_string())
                .print_env("PRINT_STATUS_POLL_MS", "1000")
                .print_env("PRINT_STATUS_TIMEOUT_MS", "2000")
                .print_env("RUST_LOG", "warn"),
        )
        .await?;
        stack.sim.set_mode(Mode::Offline);
        for chunk in (1..=tickets).collect::<Vec<_>>().chunks(16) {
            let mut tasks = Vec::new();
            for &i in chunk {
                let (poster, body) =
                    (stack.poster(), stack.keys.sign_event(&distinct_order("order_created.pickup.json", i)));
                tasks.push(tokio::spawn(async move { poster.post(body).await }));
            }
            for t in tasks {
                let (status, body) = t.await??;
                anyhow::ensure!(status == 200, "webhook answered {status}: {body}");
            }
        }
        let admin = stack.print_admin().await?;
        wait_until(Duration::from_secs(120), "backlog queued", || {
            let mut admin = admin.clone();
            async move { Ok(admin.get_queue_status(GetQueueStatusRequest {}).await?.into_inner().waiting == tickets) }
        })
        .await?;
        // Let the dispatcher settle into its not-ready polling, as after a real outage.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let back = Instant::now();
        stack.sim.set_mode(Mode::Online);
        stack.sim.wait_for_tickets(1, Duration::from_secs(30)).await?;
        let start = back.elapsed();
        let all = stack.sim.wait_for_tickets(tickets as usize, Duration::from_secs(300)).await?;
        let total = back.elapsed();
        let first = all.first().map(|t| t.printed_at).unwrap();
        let last = all.last().map(|t| t.printed_at).unwrap();
        let span = last.duration_since(first).unwrap_or_default().as_secs_f64();
        let rate = (tickets - 1) as f64 / span.max(1e-9);
        let vm_rss = stack
            .print
            .pid()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
            })
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0;
        println!(
            "run {run}: start latency {:.0} ms, drain {:.0} tickets/s ({} tickets in {:.2} s from the switch), wix-print RSS {:.1} MB",
            start.as_secs_f64() * 1000.0,
            rate,
            tickets,
            total.as_secs_f64(),
            vm_rss
        );
        starts.push(start.as_secs_f64() * 1000.0);
        rates.push(rate);
        totals.push(total.as_secs_f64());
        rss.push(vm_rss);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (a, b, c) = stats(&mut starts);
    println!("start latency ms: min {a:.0} median {b:.0} max {c:.0} (goal <= 1000)");
    let (a, b, c) = stats(&mut rates);
    println!("drain tickets/s: min {a:.0} median {b:.0} max {c:.0} (goal >= 200)");
    let (a, b, c) = stats(&mut totals);
    println!("switch to last ticket s: min {a:.2} median {b:.2} max {c:.2}");
    let (a, b, c) = stats(&mut rss);
    println!("wix-print RSS MB after the drain: min {a:.1} median {b:.1} max {c:.1}");
    Ok(())
}
