#!/usr/bin/env bash
# The docker compose stack's images, all FROM scratch (compose/Dockerfile), tagged
# wixprint/<name>:local. Nothing is pulled: no registry is needed.
#   - wix-ingest, wix-print, printer-sim, fake-wix, tcp-relay: one static musl binary each
#     (scripts/build-static.sh), plus (services) the time zone files and the CA bundle, and a
#     data directory owned by the image's user (10001).
#   - rotel (the OpenTelemetry Collector, PyPI rotel's rotel-agent) and prometheus (Debian's):
#     dynamically linked, so each image is the binary plus exactly the shared libraries `ldd`
#     lists and the dynamic loader, copied from this machine: a root file system of a few files,
#     no distribution image underneath.
#   scripts/build-images.sh               # binaries, then images
#   scripts/build-images.sh --no-build    # images from the binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-musl
IMAGES=(wix-ingest wix-print printer-sim fake-wix tcp-relay rotel prometheus)

[ "${1:-}" = "--no-build" ] || scripts/build-static.sh
bin_dir="${CARGO_TARGET_DIR:-target}/$TARGET/static"

# Non-Rust binaries come from this machine (scripts/install-deps.sh installs both).
rotel=$(python3 -c "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))")
prometheus=$(command -v prometheus)
[ -x "$rotel" ] || { echo "rotel-agent not found (pip install rotel)" >&2; exit 1; }
[ -x "$prometheus" ] || { echo "prometheus not found (apt-get install prometheus)" >&2; exit 1; }

ctx=compose/.build
rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/empty" "$ctx/zoneinfo/Europe"
for b in wix-ingest wix-print printer-sim fake-wix tcp-relay; do
  cp "$bin_dir/$b" "$ctx/bin/$b"
done
cp /usr/share/zoneinfo/Europe/Zurich "$ctx/zoneinfo/Europe/Zurich"
cp /usr/share/zoneinfo/UTC "$ctx/zoneinfo/UTC"
# The services' HTTPS clients (Wix API, SMTP) load the system's CA bundle even for plain HTTP.
[ -s /etc/ssl/certs/ca-certificates.crt ] || { echo "no CA bundle: apt-get install ca-certificates" >&2; exit 1; }
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"

# rootfs DIR BINARY PATH: BINARY at PATH inside DIR, with every library ldd resolves for it
# (at the same paths) and the program interpreter.
rootfs() {
  local dir=$1 bin=$2 path=$3
  mkdir -p "$dir$(dirname "$path")"
  cp "$bin" "$dir$path"
  local interp
  interp=$(readelf -lW "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  [ -n "$interp" ] || { echo "$bin has no program interpreter" >&2; exit 1; }
  mkdir -p "$dir$(dirname "$interp")"
  cp -L "$interp" "$dir$interp"
  local lib
  while read -r lib; do
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
  if ldd "$bin" | grep -q 'not found'; then
    echo "$bin: a library is missing:" >&2
    ldd "$bin" >&2
    exit 1
  fi
}
rootfs "$ctx/rootfs-rotel" "$rotel" /usr/local/bin/rotel
rootfs "$ctx/rootfs-prometheus" "$prometheus" /usr/bin/prometheus
# Go's resolver and Prometheus read these when present; empty is the same as absent.
mkdir -p "$ctx/rootfs-prometheus/etc/prometheus"

for image in "${IMAGES[@]}"; do
  previous=$(docker image inspect -f '{{.Id}}' "wixprint/$image:local" 2>/dev/null || true)
  # The classic builder's deprecation notice (no buildx here) is noise; other output shows on failure.
  if ! out=$(docker build --quiet --target "$image" -t "wixprint/$image:local" -f compose/Dockerfile "$ctx" 2>&1); then
    echo "$out" >&2
    exit 1
  fi
  # The image this tag had before is left without a name: remove it (unless a container uses it).
  current=$(docker image inspect -f '{{.Id}}' "wixprint/$image:local")
  if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
  fi
  printf '%-12s %s\n' "$image" "$(docker image inspect -f '{{.Size}}' "wixprint/$image:local" | awk '{ printf "%.1f MB", $1 / 1048576 }')"
done
