#!/usr/bin/env bash
# Builds both services and the simulator, starts them with a generated webhook signing key,
# posts the Wix fixture orders through the real webhook endpoint and prints the tickets.
# Pass --keep to leave everything running for grpcurl.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
exec target/debug/demo "$@"
