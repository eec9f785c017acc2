#!/usr/bin/env bash
# The benchmarks, on the release build of the real binaries (see BENCHMARKS.md).
#
#   scripts/bench.sh                   both sections below, one after the other
#   scripts/bench.sh load [ARGS]       load: accept latency, throughput, end-to-end latency, RSS
#                                      (target/release/loadgen; `loadgen` ARGS, e.g. --orders 2000)
#   scripts/bench.sh recovery [ARGS]   recovery: start latency after the printer returns and drain
#                                      rate of 1,000 queued tickets, with wix-print's production
#                                      poll intervals and with both polls at 250 ms
#                                      (target/release/recoverybench; ARGS e.g. --runs 5
#                                      --latency-samples 30; --help lists them)
#   scripts/bench.sh storage [ARGS]    storage: webhook accept and GetStatus latency on an empty
#                                      database and with 1,000,000 stored events; retention prune
#                                      time and database size (target/release/storagebench)
#   scripts/bench.sh --orders N ...    loadgen with these arguments (as before the sections)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins

section="${1:-all}"
case "$section" in
  load | loadgen)
    shift
    exec target/release/loadgen "$@"
    ;;
  recovery)
    shift
    exec target/release/recoverybench "$@"
    ;;
  storage)
    shift
    exec target/release/storagebench "$@"
    ;;
  all)
    echo "== load (target/release/loadgen) =="
    target/release/loadgen
    echo
    echo "== recovery (target/release/recoverybench) =="
    target/release/recoverybench
    ;;
  -*)
    exec target/release/loadgen "$@"
    ;;
  *)
    echo "usage: $0 [load|recovery] [ARGS...]  (no section: both)" >&2
    exit 2
    ;;
esac
