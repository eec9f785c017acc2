#!/usr/bin/env bash
# The benchmarks (release build): accept latency, throughput, end-to-end latency, RSS
# (loadgen); recovery start latency and drain rate (`recovery`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
# `scripts/bench.sh recovery [tickets] [runs] [offline_poll_ms]`: the recovery benchmark.
if [ "${1:-}" = recovery ]; then
  shift
  exec target/release/recoverybench "$@"
fi
exec target/release/loadgen "$@"
