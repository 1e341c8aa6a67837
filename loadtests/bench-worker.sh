#!/usr/bin/env bash
# The worker benchmark, against the dev stack's real Kafka and Cassandra
# (standing in for ScyllaDB), in one run:
#
#   1. throughput on one core: EVENTS click events on a fresh topic, read
#      by shortener-worker pinned to one CPU (taskset, librdkafka's threads
#      included), against a bare consumer that only decodes and commits,
#      pinned to the same CPU, while Kafka and Cassandra are pinned to the
#      other: events/s of both, between the group's first commit and zero
#      lag, their ratio, and events per CPU-second the worker used. Once for
#      each number of links in LINKS (the rows a write touches grow with
#      the links clicked, not with the clicks);
#   2. end-to-end lag: redirects at a steady RATE/s through shortener-api
#      (Kafka and ScyllaDB), counted by the worker, polled in the stats API:
#      p50/p99 of how long each click takes to show; against the same API
#      on the embedded default (in-process counting, SQLite) as baseline.
#
# Usage: loadtests/bench-worker.sh   (settings below, from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${EVENTS:-2000000}        # events in the throughput run
LINKS=${LINKS:-1000 10000}       # links they are spread over (skewed), one run each
PARTITIONS=${PARTITIONS:-6}
CPU=${CPU:-1}                    # the CPU the consumers are pinned to
SERVERS_CPU=${SERVERS_CPU:-0}    # the CPU Kafka and Cassandra are pinned to meanwhile
RATE=${RATE:-5000}               # redirects/s in the end-to-end run
SECONDS_RUN=${SECONDS_RUN:-30}
E2E_LINKS=${E2E_LINKS:-20}
# Other builds to measure (e.g. of an older revision), instead of this
# checkout's release build.
WORKER_BIN=${WORKER_BIN:-target/release/shortener-worker}
API_PORT=${API_PORT:-18090}

# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh
trap cleanup EXIT

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
cpu_seconds() { # PID: user + system CPU time so far
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
pin_servers() { # CPUS: every thread of the dev stack's JVMs
  local service pid
  for service in kafka cassandra; do
    read -r pid _ <".stack/$service/pid"  # "PID START_TIME"
    taskset -a -p -c "$1" "$pid" >/dev/null
  done
}
trap 'pin_servers 0-$(($(nproc) - 1)); cleanup' EXIT

results=()
for links in $LINKS; do
  log "1. throughput: $EVENTS events over $links links, $PARTITIONS partitions"
  keyspace="${run_id}_$links"
  env "${scylla_env[@]}" SHORTENER__STORAGE__SCYLLA__KEYSPACE="$keyspace" \
      "${API_BIN:-target/release/shortener-api}" migrate >&2
  topic="$keyspace.clicks"
  $tools produce $brokers "$topic" "$PARTITIONS" "$EVENTS" "$links" >&2
  pin_servers "$SERVERS_CPU"

  log "baseline: a bare consumer (decode, commit) on CPU $CPU"
  $tools caught-up $brokers "$topic" "$keyspace-baseline" "$PARTITIONS" >"$work/baseline.out" &
  watcher=$!
  taskset -c "$CPU" $tools consume $brokers "$topic" "$keyspace-baseline" "$EVENTS" >&2
  wait $watcher
  baseline=$(field events_per_second <"$work/baseline.out")
  log "baseline: $(cat "$work/baseline.out")"

  log "shortener-worker on CPU $CPU"
  $tools caught-up $brokers "$topic" "$keyspace-worker" "$PARTITIONS" >"$work/worker.out" &
  watcher=$!
  env "${scylla_env[@]}" SHORTENER__STORAGE__SCYLLA__KEYSPACE="$keyspace" \
      SHORTENER__EVENTS__KAFKA__TOPIC="$topic" \
      SHORTENER__WORKER__GROUP="$keyspace-worker" \
      SHORTENER__WORKER__DEAD_LETTER_TOPIC="$topic.dead-letter" \
      SHORTENER__LOG__LEVEL=info \
      taskset -c "$CPU" "$WORKER_BIN" >"$work/worker.log" 2>&1 &
  worker=$!
  pids+=("$worker")
  wait $watcher
  cpu=$(cpu_seconds $worker)
  kill -TERM $worker
  wait $worker || true
  pin_servers "0-$(($(nproc) - 1))"
  rate=$(field events_per_second <"$work/worker.out")
  log "worker: $(cat "$work/worker.out") cpu_seconds=$cpu"
  results+=("links=$links worker_events_per_second=$rate bare_consumer_events_per_second=$baseline ratio=$(awk -v a="$rate" -v b="$baseline" 'BEGIN { printf "%.2f", a / b }') worker_events_per_cpu_second=$(awk -v e="$EVENTS" -v c="$cpu" 'BEGIN { printf "%.0f", e / c }')")
done

log "2. end-to-end lag at $RATE redirects/s for ${SECONDS_RUN}s"
log "baseline: the embedded default (in-process counting, flushed every second)"
start_api embedded "$API_PORT" SHORTENER__HTTP__COUNTRY_HEADER=""
$tools visible "http://127.0.0.1:$API_PORT" "$RATE" "$SECONDS_RUN" "$E2E_LINKS" >"$work/e2e-embedded.out"
stop_api embedded
log "embedded: $(cat "$work/e2e-embedded.out")"

log "the production tier: Kafka, shortener-worker (flushing every second), ScyllaDB"
e2e_topic="$run_id.e2e"
env "${scylla_env[@]}" "${API_BIN:-target/release/shortener-api}" migrate >&2
start_api production "$API_PORT" SHORTENER__HTTP__COUNTRY_HEADER="" "${scylla_env[@]}" SHORTENER__EVENTS__BACKEND=kafka \
    SHORTENER__EVENTS__KAFKA__TOPIC="$e2e_topic" SHORTENER__EVENTS__KAFKA__PARTITIONS="$PARTITIONS"
env "${scylla_env[@]}" SHORTENER__EVENTS__KAFKA__TOPIC="$e2e_topic" \
    SHORTENER__WORKER__GROUP="$run_id-e2e" \
    SHORTENER__WORKER__DEAD_LETTER_TOPIC="$e2e_topic.dead-letter" \
    "$WORKER_BIN" >"$work/worker-e2e.log" 2>&1 &
worker=$!
pids+=("$worker")
$tools visible "http://127.0.0.1:$API_PORT" "$RATE" "$SECONDS_RUN" "$E2E_LINKS" >"$work/e2e-production.out"
kill -TERM "$production_pid" "$worker"; wait "$production_pid" "$worker" || true
log "production: $(cat "$work/e2e-production.out")"

p50_base=$(field lag_p50_ms <"$work/e2e-embedded.out")
p99_base=$(field lag_p99_ms <"$work/e2e-embedded.out")
p50=$(field lag_p50_ms <"$work/e2e-production.out")
p99=$(field lag_p99_ms <"$work/e2e-production.out")
printf 'one_cpu %s\n' "${results[@]}"
cat <<OUT
e2e_lag_ms_at_${RATE}_per_s worker: p50=$p50 p99=$p99  in-process: p50=$p50_base p99=$p99_base
e2e_lag_p50_ratio=$(awk -v a="$p50" -v b="$p50_base" 'BEGIN { printf "%.2f", a / b }') e2e_lag_p99_ratio=$(awk -v a="$p99" -v b="$p99_base" 'BEGIN { printf "%.2f", a / b }')
production_run: $(cat "$work/e2e-production.out")
embedded_run: $(cat "$work/e2e-embedded.out")
OUT
