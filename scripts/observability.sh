#!/usr/bin/env bash
# The observability stack locally, in one command: both services, the printer simulator, an
# OpenTelemetry collector (rotel) and Prometheus on http://127.0.0.1:9090, with demo traffic
# and a printer outage every 3 minutes. Ctrl-C stops everything.
#   scripts/observability.sh                         # until Ctrl-C
#   scripts/observability.sh --minutes 8 --png docs/dashboard.png
set -euo pipefail
cd "$(dirname "$0")/.."
command -v prometheus >/dev/null 2>&1 || scripts/install-deps.sh
cargo build --workspace --bins
exec target/debug/observe "$@"
