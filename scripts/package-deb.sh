#!/usr/bin/env bash
# Builds dist/wix-printer_<version>_<arch>.deb from already built binaries:
#   scripts/package-deb.sh arm64 target/aarch64-unknown-linux-gnu/release
#   scripts/package-deb.sh amd64 target/release
# Contents: /usr/bin/wix-ingest and wix-print, the systemd units (/lib/systemd/system),
# /etc/wix-printer/ingest.toml and print.toml (conffiles, from deploy/*.toml.example), the
# example label files and README.Debian under /usr/share/doc/wix-printer; postinst creates
# /etc/wix-printer's tokens and secret placeholders (deploy/debian/). Needs only dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:?usage: package-deb.sh ARCH BIN_DIR}
BIN_DIR=${2:?usage: package-deb.sh ARCH BIN_DIR}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$VERSION" ] || { echo "no version in Cargo.toml [workspace.package]" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
pkg="$root/wix-printer"

install -d -m 0755 "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/etc/wix-printer" \
  "$pkg/usr/share/doc/wix-printer/examples"
for bin in wix-ingest wix-print; do
  install -m 0755 "$BIN_DIR/$bin" "$pkg/usr/bin/$bin"
done
install -m 0644 deploy/wix-ingest.service deploy/wix-print.service "$pkg/lib/systemd/system/"
install -m 0644 deploy/ingest.toml.example "$pkg/etc/wix-printer/ingest.toml"
install -m 0644 deploy/print.toml.example "$pkg/etc/wix-printer/print.toml"
install -m 0644 deploy/labels.example.toml deploy/alert-labels.example.toml \
  deploy/dashboards/wixprint.json deploy/dashboards/prometheus.yml deploy/otel/collector.yaml \
  "$pkg/usr/share/doc/wix-printer/examples/"
install -m 0644 deploy/debian/README.Debian "$pkg/usr/share/doc/wix-printer/README.Debian"
cat > "$pkg/usr/share/doc/wix-printer/copyright" <<'COPY'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: wix-printer
Files: *
Copyright: the wix-printer authors
License: proprietary
COPY
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$pkg/DEBIAN/"
printf '/etc/wix-printer/ingest.toml\n/etc/wix-printer/print.toml\n' > "$pkg/DEBIAN/conffiles"
size_kb=$(du -sk "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: wix-printer
Version: $VERSION
Architecture: $ARCH
Maintainer: wix-printer team <kitchen@example.com>
Installed-Size: $size_kb
Depends: libc6 (>= 2.36), systemd
Section: net
Priority: optional
Homepage: https://github.com/example/wix-printer
Description: prints a restaurant's Wix orders on an ESC/POS kitchen printer
 wix-ingest receives Wix order webhooks (RS256-signed), stores them in SQLite before
 answering and forwards them through a durable outbox; wix-print keeps a persistent print
 queue and marks a ticket printed only when the printer confirms it. Two hardened systemd
 units; administered with grpcurl.
CONTROL
mkdir -p dist
deb="dist/wix-printer_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "built $deb ($(du -h "$deb" | cut -f1))"
