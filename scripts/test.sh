#!/usr/bin/env bash
# The test suite: unit tests, the binaries' config tests, and the black-box tests that start
# the real wix-ingest / wix-print binaries against the printer simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# One tonic, prost, hyper, http, h2 and axum in the whole tree: the OTLP exporter's API takes
# tonic types (MetadataMap, channels), so it must share the app's tonic/prost (issue 13).
versions=$(cargo tree --workspace --prefix none -e all | grep -E '^(tonic|prost|hyper|axum|h2|http) v' | awk '{print $1, $2}' | sort -u)
dups=$(printf '%s\n' "$versions" | awk '{print $1}' | uniq -d)
if [ -n "$dups" ]; then
  echo "more than one version of: $dups" >&2
  printf '%s\n' "$versions" >&2
  exit 1
fi
cargo test --workspace "$@"
# The systemd units: exposure <= 2.5 in systemd-analyze security, and verify clean.
scripts/check-units.sh
