#!/usr/bin/env bash
# What scripts/build-static.sh needs, idempotently (called by scripts/install-deps.sh): the
# x86_64 musl target (rustup downloads it) and Debian's musl-tools (musl-gcc, for the C that
# rusqlite's bundled SQLite and aws-lc-sys compile). Nothing else: the static binaries need no
# other system library.
set -euo pipefail
TARGET=x86_64-unknown-linux-musl

if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq musl-tools
fi
command -v musl-gcc >/dev/null 2>&1 || { echo "musl-gcc is missing after installing musl-tools" >&2; exit 1; }
