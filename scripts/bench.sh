#!/usr/bin/env bash
# The benchmark (release build): accept latency, throughput, end-to-end latency, RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec target/release/loadgen "$@"
