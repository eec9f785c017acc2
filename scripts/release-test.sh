#!/usr/bin/env bash
# The release checks CI runs after the test suite (issue 14):
#  1. the Raspberry Pi build: aarch64 binaries (< 20 MB, glibc <= 2.36) and dist/wix-printer_<v>_arm64.deb
#  2. the aarch64 binaries under qemu: --version, --check-config, one order through both
#  3. the arm64 package's own binaries run under qemu (what `apt install` would put in /usr/bin)
#  4. an amd64 package of this checkout's build installed into a clean Debian bookworm root
#     (scripts/deb-install-test.sh) and booted under a real systemd (scripts/systemd-boot-test.sh)
# Needs root (chroot, docker) and the test suite's debug build (cargo build --workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

scripts/build-pi.sh
scripts/pi-smoke.sh

arm=dist/wix-printer_${version}_arm64.deb
[ "$(dpkg-deb -f "$arm" Architecture)" = arm64 ] || { echo "$arm is not arm64" >&2; exit 1; }
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
dpkg-deb -x "$arm" "$x/pkg"
for b in wix-ingest wix-print; do
  v=$(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$x/pkg/usr/bin/$b" --version)
  [ "$v" = "$b $version" ] || { echo "$arm: /usr/bin/$b --version said '$v'" >&2; exit 1; }
done
echo "ok: $arm holds aarch64 binaries that run ($(du -h "$arm" | cut -f1))"

# amd64: the package of this checkout's (debug, stripped) build: what is under test is the
# package, its maintainer scripts and the units, not the optimiser.
cargo build -q --workspace --bins
mkdir -p "$x/bin"
for b in wix-ingest wix-print; do strip -o "$x/bin/$b" "target/debug/$b"; done
scripts/package-deb.sh amd64 "$x/bin"
scripts/deb-install-test.sh "dist/wix-printer_${version}_amd64.deb"
scripts/systemd-boot-test.sh "dist/wix-printer_${version}_amd64.deb"
