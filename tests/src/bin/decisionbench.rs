//! The retry decision's cost (issue 11: "retry decision < 100 µs"): classifying a print
//! failure, telling the printer's circuit breaker, deciding what the job becomes
//! (`paper::after_doubt`) and drawing the next delay (`Backoff::delay`), as the dispatcher does
//! after a ticket was cut off; and a breaker admission alone. Pure CPU, no I/O: the database
//! write that records the decision is measured by `storagebench` / `loadgen`.
//!
//! `decisionbench [--rounds N]` prints percentiles in nanoseconds.

use std::time::{Duration, Instant};

use wix_print::paper::after_doubt;
use wix_print::printer::PrintError;
use wixprint_shared::backoff::Backoff;
use wixprint_shared::breaker::{Admission, Breaker, BreakerConfig};
use wixprint_shared::failure::FailureClass;

fn percentiles(name: &str, mut ns: Vec<u64>) {
    ns.sort_unstable();
    let at = |p: f64| ns[((ns.len() as f64 - 1.0) * p) as usize];
    println!(
        "{name:<44} n={:<8} p50={:>6} ns  p99={:>6} ns  p99.9={:>7} ns  max={:>8} ns",
        ns.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        ns[ns.len() - 1]
    );
}

fn main() {
    wixprint_tests::cli::help_or_version(
        "decisionbench",
        "decisionbench [--rounds N]: the retry decision's cost (failure class, breaker, doubt, backoff delay),
percentiles in ns over N rounds (default 200000). Release build: cargo run --release --bin decisionbench.
  -h, --help     this text
  -V, --version  the version",
    );
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let backoff = Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(300), 0.25).unwrap();
    // A breaker that never opens here, so every round takes the same path as a closed one.
    let breaker = Breaker::standalone(
        "printer:bench",
        BreakerConfig { failure_threshold: u32::MAX, open_for: Duration::from_secs(30), success_threshold: 3 },
    );
    let error = PrintError::Interrupted("connection lost while sending: Connection reset by peer".into());

    let mut decide = Vec::with_capacity(rounds);
    let mut admit = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let attempts = (i % 5) as u32 + 1;
        let t = Instant::now();
        let class = error.class();
        if class == FailureClass::Transient {
            breaker.failure(error.to_string());
        }
        let next = after_doubt(false, attempts, 5);
        let delay = backoff.delay(attempts);
        std::hint::black_box((next, delay));
        decide.push(t.elapsed().as_nanos() as u64);

        let t = Instant::now();
        let a = breaker.admit();
        std::hint::black_box(matches!(a, Admission::Go));
        admit.push(t.elapsed().as_nanos() as u64);
    }
    println!("decisionbench: {rounds} rounds ({} build)", if cfg!(debug_assertions) { "debug" } else { "release" });
    percentiles("retry decision (class+breaker+after_doubt+delay)", decide);
    percentiles("breaker admission", admit);
}
