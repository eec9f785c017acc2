#!/usr/bin/env bash
# The test suite: unit tests, the binaries' config tests, and the black-box tests that start
# the real wix-ingest / wix-print binaries against the printer simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace "$@"
