#!/usr/bin/env bash
# Static x86_64 binaries (musl, no shared library at all) of everything the docker compose
# stack runs: wix-ingest, wix-print, the printer simulator, the fake Wix API, the pods' TCP
# relay, and the compose test driver (which runs on the host). Profile `static` (Cargo.toml:
# optimised, no LTO, so it builds in minutes on two cores).
#   scripts/build-static.sh            # -> target/x86_64-unknown-linux-musl/static/
# Prints each binary's size; fails if one is not statically linked.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl
BINS=(wix-ingest wix-print printer-sim fake-wix tcp-relay compose-driver)

scripts/install-static-deps.sh

export CC_x86_64_unknown_linux_musl=musl-gcc
export CARGO_INCREMENTAL=0
args=()
for b in "${BINS[@]}"; do args+=(--bin "$b"); done
cargo build --locked --profile static --target "$TARGET" -p wix-ingest -p wix-print -p wixprint-tests "${args[@]}"

out="${CARGO_TARGET_DIR:-target}/$TARGET/static"
for b in "${BINS[@]}"; do
  f="$out/$b"
  [ -x "$f" ] || { echo "$f was not built" >&2; exit 1; }
  # A static binary has no program interpreter and no NEEDED entries.
  if readelf -lW "$f" | grep -q 'Requesting program interpreter' || readelf -dW "$f" | grep -q '(NEEDED)'; then
    echo "$f is not statically linked:" >&2
    readelf -dW "$f" | grep '(NEEDED)' >&2 || true
    exit 1
  fi
  awk -v b="$b" -v s="$(stat -c %s "$f")" 'BEGIN { printf "%-15s %6.1f MB  static\n", b, s / 1048576 }'
done
