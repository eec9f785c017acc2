#!/usr/bin/env bash
# The cost of OpenTelemetry export (issue 13): loadgen on the release build, interleaved rounds
# of: no export; metrics only; metrics + traces of every order; traces of 10 % of the orders;
# the collector down. Export goes to a local rotel (blackhole exporter, on the same cores), whose
# CPU time loadgen reports beside the services'. Results: BENCHMARKS.md.
#
#   scripts/bench-export.sh [ROUNDS] [LOADGEN ARGS...]   (default: 2 rounds,
#                                                          --orders 1000 --paced 100 --rate 20)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--orders 1000 --concurrency 8 --paced 100 --rate 20)
cargo build --release --workspace --bins >/dev/null

rotel=$(python3 -c "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))")
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$rotel" start --otlp-grpc-endpoint "127.0.0.1:$port" --otlp-http-endpoint "127.0.0.1:$((port + 1))" \
  --exporter blackhole >"$work/rotel.log" 2>&1 &
rotel_pid=$!
trap 'kill $rotel_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
closed=$((port + 2))

run() {
  local name=$1
  shift
  echo "== $name (load $(cut -d' ' -f1 /proc/loadavg))"
  env "$@" target/release/loadgen "${args[@]}" --collector-pid "$rotel_pid" |
    grep -E 'accept latency p99|accepted orders/s|tickets confirmed after|CPU per order|last of 3|RSS'
}

on=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" OTEL_METRIC_EXPORT_INTERVAL=1000 OTEL_BSP_SCHEDULE_DELAY=1000)
for r in $(seq "$rounds"); do
  echo "### round $r"
  run "off" X=1
  run "metrics only" "${on[@]}" OTEL_TRACES_EXPORTER=none
  run "metrics + traces, every order" "${on[@]}"
  run "traces of 10 % (parentbased_traceidratio 0.1)" "${on[@]}" OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1
  run "collector down (metrics + traces)" OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$closed" \
    OTEL_METRIC_EXPORT_INTERVAL=1000 OTEL_BSP_SCHEDULE_DELAY=1000
done
