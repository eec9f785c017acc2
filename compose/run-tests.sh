#!/usr/bin/env bash
# The docker compose integration suite (issue 14): builds the static binaries and the FROM-scratch
# images (scripts/build-images.sh), brings the stack up (compose/docker-compose.yml plus the
# test-only compose/docker-compose.test.yml), runs the fault scenarios with compose-driver from
# the host, and always tears everything down again (containers, networks, volumes).
#   compose/run-tests.sh                   # build, run, tear down
#   SKIP_BUILD=1 compose/run-tests.sh      # images already built
#   COMPOSE="docker compose" compose/run-tests.sh    # another Compose tool (default docker-compose)
#   ONLY=baseline,internet-cut compose/run-tests.sh    # some scenarios (names as printed)
# Exits non-zero if anything failed; prints every check, then "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PROJECT=${WIXPRINT_COMPOSE_PROJECT:-wixprint-test}
# The Compose tool, as words: docker-compose (1.29, Debian), or e.g. "docker compose" (v2 plugin).
read -ra COMPOSE_CMD <<<"${COMPOSE:-docker-compose}"
export FAILOVER_SECS=${FAILOVER_SECS:-5}
export HIGH_TOTAL=${HIGH_TOTAL:-500}
# The webhook port on a random loopback port (the base file's default is 0.0.0.0:8080).
export WEBHOOK_PUBLISH=127.0.0.1:
LOGS="${CARGO_TARGET_DIR:-$ROOT/target}/compose-logs"

docker info >/dev/null 2>&1 || { echo "run-tests.sh needs a running Docker Engine (docker info failed)" >&2; exit 1; }
"${COMPOSE_CMD[@]}" version >/dev/null 2>&1 || { echo "run-tests.sh needs ${COMPOSE_CMD[*]} (Debian: apt-get install docker-compose)" >&2; exit 1; }
echo "compose tool: ${COMPOSE_CMD[*]} ($("${COMPOSE_CMD[@]}" version 2>/dev/null | head -1))"

work=$(mktemp -d)
export WIXPRINT_SECRETS="$work/secrets"
compose=("${COMPOSE_CMD[@]}" -p "$PROJECT" -f compose/docker-compose.yml -f compose/docker-compose.test.yml)

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ] && [ -s "$work/up" ]; then
    mkdir -p "$LOGS"
    "${compose[@]}" logs --no-color >"$LOGS/compose.log" 2>&1 || true
    echo "--- the last lines of every container's log (all of it: $LOGS/compose.log) ---"
    "${compose[@]}" logs --no-color --tail=40 2>&1 || true
  fi
  echo "tearing down: compose down -v"
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || echo "compose down failed" >&2
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT INT TERM

t0=$(date +%s)
if [ "${SKIP_BUILD:-}" != 1 ]; then
  echo "== building the static binaries and the images"
  scripts/build-images.sh
fi
t1=$(date +%s)

compose/make-secrets.sh "$WIXPRINT_SECRETS" >/dev/null
# The base file publishes the webhook port and nothing else.
published=$("${COMPOSE_CMD[@]}" -f compose/docker-compose.yml config 2>/dev/null | awk '
  /^services:/ { in_services = 1; next }
  /^[a-z]/ { in_services = 0 }
  in_services && /^  [a-z0-9-]+:$/ { service = $1; sub(":", "", service) }
  in_services && /^    ports:/ { print service }')
if [ "$published" != "ingest-net" ]; then
  echo "FAIL  compose/docker-compose.yml publishes ports of: ${published:-nothing} (want ingest-net only)" >&2
  exit 1
fi
echo "ok    compose/docker-compose.yml publishes ports of ingest-net only (the webhook)"

"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
echo "== compose up"
echo yes >"$work/up"
"${compose[@]}" up -d --no-build
t2=$(date +%s)

driver="${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-musl/static/compose-driver"
only=()
[ -n "${ONLY:-}" ] && only=(--only "$ONLY")
"$driver" --project "$PROJECT" --secrets "$WIXPRINT_SECRETS" --failover-secs "$FAILOVER_SECS" \
  --high-total "$HIGH_TOTAL" "${only[@]}" -- "${compose[@]}"
t3=$(date +%s)
echo "compose suite: build $((t1 - t0)) s, stack up $((t2 - t1)) s, scenarios $((t3 - t2)) s"
