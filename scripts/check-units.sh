#!/usr/bin/env bash
# Checks the systemd units in deploy/: `systemd-analyze security --offline=true` exposure at
# most 2.5 each, and `systemd-analyze verify` clean (with ExecStart pointed at the binaries this
# checkout built, since /usr/bin/wix-* is not installed here). Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX=${MAX_EXPOSURE:-2.5}
BIN_DIR=${BIN_DIR:-$PWD/target/debug}
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is missing (apt install systemd)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for unit in deploy/wix-ingest.service deploy/wix-print.service; do
  name=$(basename "$unit")
  out=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || true
  level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  if [ -z "$level" ]; then
    echo "$name: no exposure level in systemd-analyze's answer:" >&2; printf '%s\n' "$out" >&2; fail=1; continue
  fi
  if awk -v l="$level" -v m="$MAX" 'BEGIN { exit !(l > m) }'; then
    echo "$name: exposure $level > $MAX" >&2; printf '%s\n' "$out" | grep '✗' >&2; fail=1
  else
    echo "$name: exposure $level (<= $MAX)"
  fi
  exe=${name%.service}
  [ -x "$BIN_DIR/$exe" ] || { echo "$BIN_DIR/$exe is not built (cargo build --workspace)" >&2; exit 1; }
  sed "s#^ExecStart=/usr/bin/$exe#ExecStart=$BIN_DIR/$exe#" "$unit" > "$tmp/$name"
  if ! verify=$(systemd-analyze verify --man=no "$tmp/$name" 2>&1) || [ -n "$verify" ]; then
    echo "$name: systemd-analyze verify:" >&2; printf '%s\n' "$verify" >&2; fail=1
  else
    echo "$name: systemd-analyze verify clean"
  fi
done
exit $fail
