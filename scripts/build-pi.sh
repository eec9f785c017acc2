#!/usr/bin/env bash
# Builds the Raspberry Pi release: aarch64 (arm64) binaries of wix-ingest and wix-print for
# Raspberry Pi OS / Debian bookworm (glibc 2.36: Debian's cross toolchain is bookworm's own),
# stripped, each checked to be < 20 MB, and the Debian package dist/wix-printer_<v>_arm64.deb
# (scripts/package-deb.sh). Runs on an x86_64 Debian machine:
#   scripts/build-pi.sh            # binaries + .deb
#   scripts/build-pi.sh --no-deb   # binaries only
# Needs: rustup target aarch64-unknown-linux-gnu, gcc-aarch64-linux-gnu (installed here if
# missing, idempotently).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=aarch64-unknown-linux-gnu
MAX_BYTES=$((20 * 1024 * 1024))

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v aarch64-linux-gnu-strip >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
cargo build --release --locked --target "$TARGET" -p wix-ingest -p wix-print

out="target/$TARGET/release"
for bin in wix-ingest wix-print; do
  f="$out/$bin"
  aarch64-linux-gnu-strip "$f"
  file_says=$(file -b "$f" 2>/dev/null || true)
  case "$file_says" in
    *aarch64*|*ARM\ aarch64*|"") ;;
    *) echo "$f is not an aarch64 binary: $file_says" >&2; exit 1 ;;
  esac
  size=$(stat -c %s "$f")
  # The newest glibc symbol version it needs must be in bookworm's 2.36.
  glibc=$(aarch64-linux-gnu-objdump -T "$f" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  printf '%-11s %6.1f MB  needs %s\n' "$bin" "$(echo "$size / 1048576" | bc -l)" "$glibc"
  if [ "$size" -ge "$MAX_BYTES" ]; then
    echo "$f is $size bytes (limit 20 MB)" >&2; exit 1
  fi
  case "$glibc" in
    GLIBC_2.[0-9]|GLIBC_2.[12][0-9]|GLIBC_2.3[0-6]|GLIBC_2.[0-9].*|GLIBC_2.[12][0-9].*|GLIBC_2.3[0-6].*) ;;
    *) echo "$f needs $glibc, newer than bookworm's 2.36" >&2; exit 1 ;;
  esac
done

if [ "${1:-}" != "--no-deb" ]; then
  scripts/package-deb.sh arm64 "$out"
fi
