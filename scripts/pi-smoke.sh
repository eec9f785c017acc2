#!/usr/bin/env bash
# Smoke test of the Raspberry Pi (aarch64) release binaries under qemu user emulation
# (Debian's qemu-user-static; the aarch64 glibc from gcc-aarch64-linux-gnu's sysroot):
# --version, --check-config (a good and a bad config), and one order through both aarch64
# services to the printer simulator (the pipeline test, run against them).
#   scripts/pi-smoke.sh            # builds with scripts/build-pi.sh --no-deb first if needed
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
OUT="target/$TARGET/release"
SYSROOT=/usr/aarch64-linux-gnu
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user-static
fi
[ -x "$OUT/wix-ingest" ] && [ -x "$OUT/wix-print" ] || scripts/build-pi.sh --no-deb
QEMU="qemu-aarch64-static -L $SYSROOT"
fail() { echo "FAIL: $*" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

for b in wix-ingest wix-print; do
  file -b "$OUT/$b" | grep -q aarch64 || fail "$OUT/$b is not aarch64: $(file -b "$OUT/$b")"
  v=$($QEMU "$OUT/$b" --version) || fail "$b --version"
  [ "$v" = "$b $version" ] || fail "$b --version said '$v'"
  echo "ok: $b (aarch64, $(du -h "$OUT/$b" | cut -f1)) under qemu: $v"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build -q -p wixprint-tests --bin send-webhook
target/debug/send-webhook --new-key "$tmp" >/dev/null
WIX_WEBHOOK_PUBLIC_KEY_FILE="$tmp/public.pem" $QEMU "$OUT/wix-ingest" --check-config --config deploy/ingest.toml.example >/dev/null \
  || fail "wix-ingest --check-config with deploy/ingest.toml.example"
$QEMU "$OUT/wix-print" --check-config --config deploy/print.toml.example >/dev/null \
  || fail "wix-print --check-config with deploy/print.toml.example"
set +e
msg=$(PRINT_MAX_ATTEMPTS=zero $QEMU "$OUT/wix-print" --check-config --config deploy/print.toml.example 2>&1); rc=$?
set -e
[ "$rc" = 78 ] && echo "$msg" | grep -q PRINT_MAX_ATTEMPTS || fail "a bad value: exit $rc, '$msg' (want 78 naming PRINT_MAX_ATTEMPTS)"
echo "ok: --check-config accepts the example configs and refuses a bad value with exit 78 naming it"

# One order through both aarch64 services (emulated) to the simulator: the pipeline test.
WIXPRINT_SERVICE_DIR="$PWD/$OUT" WIXPRINT_SERVICE_WRAPPER="$QEMU" \
  cargo test -q -p wixprint-tests --test pipeline -- --exact signed_pickup_order_prints_kitchen_driver_and_customer_tickets
echo "ok: one signed order through aarch64 wix-ingest and wix-print under qemu: kitchen, driver and customer tickets confirmed"
