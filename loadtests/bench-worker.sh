#!/usr/bin/env bash
# The worker benchmark, against the dev stack's real Kafka and Cassandra
# (standing in for ScyllaDB), in one run:
#
#   1. throughput on one core: EVENTS click events on a fresh topic, read
#      by shortener-worker pinned to one CPU (taskset, librdkafka's threads
#      included), against a bare consumer that only decodes and commits,
#      pinned to the same CPU: events/s of both, between the group's first
#      commit and zero lag, and their ratio;
#   2. end-to-end lag: redirects at a steady RATE/s through shortener-api
#      (Kafka and ScyllaDB), counted by the worker, polled in the stats API:
#      p50/p99 of how long each click takes to show; against the same API
#      on the embedded default (in-process counting, SQLite) as baseline.
#
# Usage: loadtests/bench-worker.sh   (settings below, from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-2000000}        # events in the throughput run
LINKS=${LINKS:-10000}            # links they are spread over (skewed)
PARTITIONS=${PARTITIONS:-6}
CPU=${CPU:-1}                    # the CPU the consumers are pinned to
RATE=${RATE:-5000}               # redirects/s in the end-to-end run
SECONDS_RUN=${SECONDS_RUN:-30}
E2E_LINKS=${E2E_LINKS:-20}
API_PORT=${API_PORT:-18090}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh

run_id="bench_$(date +%s)"
brokers=127.0.0.1:9092
scylla_env=(
  SHORTENER_CONFIG_DIR="$work/no-config"
  SHORTENER__STORAGE__BACKEND=scylla
  SHORTENER__STORAGE__SCYLLA__NODES=127.0.0.1:9042
  SHORTENER__STORAGE__SCYLLA__LOCAL_DC=datacenter1
  SHORTENER__STORAGE__SCYLLA__KEYSPACE="$run_id"
  SHORTENER__EVENTS__KAFKA__BROKERS=$brokers
  SHORTENER__LOG__LEVEL=warn
)
tools=target/release/click-stream

field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }

log "the dev stack"
infra/dev-stack up >&2
log "building release binaries"
cargo build --release --locked -p shortener-api -p shortener-worker -p loadtest-tools >&2
log "keyspace $run_id"
env "${scylla_env[@]}" target/release/shortener-api migrate >&2

log "1. throughput: $EVENTS events over $LINKS links, $PARTITIONS partitions"
topic="$run_id.clicks"
$tools produce $brokers "$topic" "$PARTITIONS" "$EVENTS" "$LINKS" >&2

log "baseline: a bare consumer (decode, commit) on CPU $CPU"
$tools caught-up $brokers "$topic" "$run_id-baseline" "$PARTITIONS" >"$work/baseline.out" &
watcher=$!
taskset -c "$CPU" $tools consume $brokers "$topic" "$run_id-baseline" "$EVENTS" >&2
wait $watcher
baseline=$(field events_per_second <"$work/baseline.out")
log "baseline: $(cat "$work/baseline.out")"

log "shortener-worker on CPU $CPU"
$tools caught-up $brokers "$topic" "$run_id-worker" "$PARTITIONS" >"$work/worker.out" &
watcher=$!
env "${scylla_env[@]}" SHORTENER__EVENTS__KAFKA__TOPIC="$topic" \
    SHORTENER__WORKER__GROUP="$run_id-worker" \
    SHORTENER__WORKER__DEAD_LETTER_TOPIC="$topic.dead-letter" \
    SHORTENER__LOG__LEVEL=info \
    taskset -c "$CPU" target/release/shortener-worker >"$work/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
wait $watcher
kill -TERM $worker
wait $worker || true
rate=$(field events_per_second <"$work/worker.out")
log "worker: $(cat "$work/worker.out")"

log "2. end-to-end lag at $RATE redirects/s for ${SECONDS_RUN}s"
start_api() { # NAME [env...]; sets api_pid
  local name=$1; shift
  env SHORTENER_CONFIG_DIR="$work/no-config" \
      SHORTENER__HTTP__LISTEN="127.0.0.1:$API_PORT" \
      SHORTENER__STORAGE__SQLITE__DIR="$work/$name-data" \
      SHORTENER__HTTP__COUNTRY_HEADER="" \
      SHORTENER__LOG__LEVEL=warn \
      "$@" target/release/shortener-api >>"$work/$name.log" 2>&1 &
  api_pid=$!
  pids+=("$api_pid")
  wait_for "http://127.0.0.1:$API_PORT/readyz"
}

log "baseline: the embedded default (in-process counting, flushed every second)"
start_api embedded
$tools visible "http://127.0.0.1:$API_PORT" "$RATE" "$SECONDS_RUN" "$E2E_LINKS" >"$work/e2e-embedded.out"
kill -TERM $api_pid; wait $api_pid || true
log "embedded: $(cat "$work/e2e-embedded.out")"

log "the production tier: Kafka, shortener-worker (flushing every second), ScyllaDB"
e2e_topic="$run_id.e2e"
start_api production "${scylla_env[@]}" SHORTENER__EVENTS__BACKEND=kafka \
    SHORTENER__EVENTS__KAFKA__TOPIC="$e2e_topic" SHORTENER__EVENTS__KAFKA__PARTITIONS="$PARTITIONS"
env "${scylla_env[@]}" SHORTENER__EVENTS__KAFKA__TOPIC="$e2e_topic" \
    SHORTENER__WORKER__GROUP="$run_id-e2e" \
    SHORTENER__WORKER__DEAD_LETTER_TOPIC="$e2e_topic.dead-letter" \
    target/release/shortener-worker >"$work/worker-e2e.log" 2>&1 &
worker=$!
pids+=("$worker")
$tools visible "http://127.0.0.1:$API_PORT" "$RATE" "$SECONDS_RUN" "$E2E_LINKS" >"$work/e2e-production.out"
kill -TERM $api_pid $worker; wait $api_pid $worker || true
log "production: $(cat "$work/e2e-production.out")"

p50_base=$(field lag_p50_ms <"$work/e2e-embedded.out")
p99_base=$(field lag_p99_ms <"$work/e2e-embedded.out")
p50=$(field lag_p50_ms <"$work/e2e-production.out")
p99=$(field lag_p99_ms <"$work/e2e-production.out")
cat <<OUT
worker_events_per_second_one_cpu=$rate
baseline_consumer_events_per_second_one_cpu=$baseline
worker_to_bare_consumer_ratio=$(awk -v a="$rate" -v b="$baseline" 'BEGIN { printf "%.2f", a / b }')
e2e_lag_ms_at_${RATE}_per_s worker: p50=$p50 p99=$p99  in-process: p50=$p50_base p99=$p99_base
e2e_lag_p50_ratio=$(awk -v a="$p50" -v b="$p50_base" 'BEGIN { printf "%.2f", a / b }') e2e_lag_p99_ratio=$(awk -v a="$p99" -v b="$p99_base" 'BEGIN { printf "%.2f", a / b }')
production_run: $(cat "$work/e2e-production.out")
embedded_run: $(cat "$work/e2e-embedded.out")
OUT
