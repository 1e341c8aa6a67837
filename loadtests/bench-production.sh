#!/usr/bin/env bash
# The production-tier benchmark, against the dev stack's real servers
# (Cassandra standing in for ScyllaDB, Redis, Kafka), in one run:
#
#   1. cache-hit redirects: shortener-api on the production tier against the
#      same binary on the embedded default, identical wrk settings,
#      alternating runs (the other API paused), medians compared;
#   2. creates/s against Cassandra (and, for reference, SQLite);
#   3. uncached redirects, p50/p99: every code requested once by an API
#      whose L1 is empty, first with Redis (L2) empty too (the store
#      answers), then with Redis warm (L2 answers).
#
# Usage: loadtests/bench-production.sh   (settings below, from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."

LINKS=${LINKS:-50000}            # links loaded into each API
RUNS=${RUNS:-3}                  # measured runs per API; medians are compared
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
COLD_CONCURRENCY=${COLD_CONCURRENCY:-16}
EMBEDDED_PORT=${EMBEDDED_PORT:-18080}
PRODUCTION_PORT=${PRODUCTION_PORT:-18082}

# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh
trap cleanup EXIT

keyspace="bench_$(date +%s)"
production_env=(
  SHORTENER__STORAGE__BACKEND=scylla
  SHORTENER__STORAGE__SCYLLA__NODES=127.0.0.1:9042
  SHORTENER__STORAGE__SCYLLA__LOCAL_DC=datacenter1
  SHORTENER__STORAGE__SCYLLA__KEYSPACE="$keyspace"
  SHORTENER__STORAGE__SCYLLA__MIGRATE_ON_START=true
  SHORTENER__CACHE__REDIS__URL=redis://127.0.0.1:6379
  SHORTENER__CACHE__REDIS__KEY_PREFIX="$keyspace:"
  SHORTENER__EVENTS__BACKEND=kafka
  SHORTENER__EVENTS__KAFKA__BROKERS=127.0.0.1:9092
  SHORTENER__EVENTS__KAFKA__TOPIC="$keyspace.clicks"
)

field() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }

log "the dev stack"
infra/dev-stack up >&2
log "building release binaries"
cargo build --release --locked -p shortener-api -p loadtest-tools >&2
install_wrk

embedded_url="http://127.0.0.1:$EMBEDDED_PORT"
production_url="http://127.0.0.1:$PRODUCTION_PORT"

log "embedded API: loading $LINKS links"
start_api embedded "$EMBEDDED_PORT"
embedded_seed=$(target/release/seed-links create "$embedded_url" "$LINKS" "$work/embedded-codes.txt" 64)
log "$embedded_seed"
target/release/seed-links visit "$embedded_url" "$work/embedded-codes.txt" 64 >&2

log "production API (keyspace $keyspace): loading $LINKS links"
start_api production "$PRODUCTION_PORT" "${production_env[@]}"
production_seed=$(target/release/seed-links create "$production_url" "$LINKS" "$work/production-codes.txt" 64)
log "$production_seed"
target/release/seed-links visit "$production_url" "$work/production-codes.txt" 64 >&2

measure() { # embedded|production
  local other_pid
  if [ "$1" = embedded ]; then other_pid=$production_pid; else other_pid=$embedded_pid; fi
  kill -STOP "$other_pid"
  local url_var="${1}_url"
  run_wrk "${!url_var}" loadtests/lua/redirect.lua "$work/$1-codes.txt"
  kill -CONT "$other_pid"
}

log "warming up both"
measure embedded >/dev/null
measure production >/dev/null
: >"$work/embedded.runs"; : >"$work/production.runs"
for run in $(seq 1 "$RUNS"); do
  for target in embedded production; do
    result=$(measure "$target")
    log "run $run $target: rps p50_ms p99_ms non_3xx = $result"
    echo "$result" >>"$work/$target.runs"
  done
done
for target in embedded production; do
  if awk '$4 != 0 { bad = 1 } END { exit !bad }' "$work/$target.runs"; then
    echo "$target answered non-3xx responses" >&2; exit 1
  fi
done

log "creates/s with wrk for $DURATION, each API alone"
kill -STOP "$production_pid"
embedded_creates=$(run_wrk "$embedded_url" loadtests/lua/create.lua "$work/embedded-codes.txt")
kill -CONT "$production_pid"; kill -STOP "$embedded_pid"
production_creates=$(run_wrk "$production_url" loadtests/lua/create.lua "$work/production-codes.txt")
kill -CONT "$embedded_pid"
stop_api embedded

log "uncached redirects: a fresh production API, Redis entries of this run removed"
stop_api production
redis-cli --scan --pattern "$keyspace:*" | xargs -r -n 500 redis-cli del >/dev/null
start_api production "$PRODUCTION_PORT" "${production_env[@]}"
cold_store=$(target/release/seed-links visit "$production_url" "$work/production-codes.txt" "$COLD_CONCURRENCY")
log "store: $cold_store"
stop_api production
start_api production "$PRODUCTION_PORT" "${production_env[@]}"
cold_l2=$(target/release/seed-links visit "$production_url" "$work/production-codes.txt" "$COLD_CONCURRENCY")
log "L2: $cold_l2"
stop_api production

median_of() { cut -d' ' -f"$2" "$work/$1.runs" | median; }
echo
echo "wrk: -t$THREADS -c$CONNECTIONS -d$DURATION, $RUNS runs each, medians; $(nproc) cores; $LINKS links"
awk -v a="$(median_of production 1)" -v b="$(median_of embedded 1)" \
  'BEGIN { printf "cache_hit_rps_ratio_production_vs_embedded=%.2f\n", a / b }'
for target in embedded production; do
  echo "${target}_rps=$(median_of "$target" 1) ${target}_p50_ms=$(median_of "$target" 2) ${target}_p99_ms=$(median_of "$target" 3)"
done
echo "seed_creates_per_second: embedded=$(echo "$embedded_seed" | field creates_per_second) cassandra=$(echo "$production_seed" | field creates_per_second) (64 concurrent)"
echo "wrk_creates_per_second: embedded=$(echo "$embedded_creates" | cut -d' ' -f1) cassandra=$(echo "$production_creates" | cut -d' ' -f1) cassandra_p50_ms=$(echo "$production_creates" | cut -d' ' -f2) cassandra_p99_ms=$(echo "$production_creates" | cut -d' ' -f3)"
echo "cold_from_store ($COLD_CONCURRENCY concurrent): p50_ms=$(echo "$cold_store" | field p50_ms) p99_ms=$(echo "$cold_store" | field p99_ms) per_second=$(echo "$cold_store" | field per_second)"
echo "cold_from_l2 ($COLD_CONCURRENCY concurrent): p50_ms=$(echo "$cold_l2" | field p50_ms) p99_ms=$(echo "$cold_l2" | field p99_ms) per_second=$(echo "$cold_l2" | field per_second)"
