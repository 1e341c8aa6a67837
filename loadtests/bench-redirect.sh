#!/usr/bin/env bash
# The redirect benchmark: shortener-api (embedded default, cache hits)
# against a bare actix-web server answering 302 from an in-memory map, with
# identical wrk settings, alternating runs, medians compared. The server not
# being measured is paused (SIGSTOP), so neither gets the other's leftover
# work: the API's click processing, which runs in idle CPU time, is paid for
# in the API's own runs. Also measures creates/s and the API's memory with
# RSS_LINKS links cached.
#
# Usage: loadtests/bench-redirect.sh      (settings below, from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."

LINKS=${LINKS:-100000}           # links loaded into each server
RSS_LINKS=${RSS_LINKS:-1000000}  # links cached for the memory measurement (0: skip)
RUNS=${RUNS:-3}                  # measured runs per server; medians are compared
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
API_PORT=${API_PORT:-18080}
BASELINE_PORT=${BASELINE_PORT:-18081}

# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh
trap cleanup EXIT

log "building release binaries"
cargo build --release --locked -p shortener-api -p loadtest-tools >&2
install_wrk

log "starting the API (embedded default) and loading $LINKS links"
start_api api "$API_PORT"
create_line=$(target/release/seed-links create "http://127.0.0.1:$API_PORT" "$LINKS" "$work/codes.txt" 64)
log "$create_line"
target/release/seed-links visit "http://127.0.0.1:$API_PORT" "$work/codes.txt" 64 >&2

log "starting the baseline with the same links"
target/release/redirect-baseline "127.0.0.1:$BASELINE_PORT" "$work/codes.txt" 2>>"$work/baseline.log" &
baseline_pid=$!
pids+=("$baseline_pid")
wait_for "http://127.0.0.1:$BASELINE_PORT/$(head -n1 "$work/codes.txt" | cut -d' ' -f1)"

api_url="http://127.0.0.1:$API_PORT"
baseline_url="http://127.0.0.1:$BASELINE_PORT"
script=loadtests/lua/redirect.lua
# Runs wrk against one server with the other paused.
measure() { # api|baseline SCRIPT
  local other_pid
  if [ "$1" = api ]; then other_pid=$baseline_pid; else other_pid=$api_pid; fi
  kill -STOP "$other_pid"
  local url_var="${1}_url"
  run_wrk "${!url_var}" "$2" "$work/codes.txt"
  kill -CONT "$other_pid"
}

log "warming up both"
measure api "$script" >/dev/null
measure baseline "$script" >/dev/null

: >"$work/api.runs"; : >"$work/baseline.runs"
for run in $(seq 1 "$RUNS"); do
  for target in api baseline; do
    result=$(measure "$target" "$script")
    log "run $run $target: rps p50_ms p99_ms non_3xx = $result"
    echo "$result" >>"$work/$target.runs"
  done
done

for target in api baseline; do
  if awk '$4 != 0 { bad = 1 } END { exit !bad }' "$work/$target.runs"; then
    echo "$target answered non-3xx responses" >&2; exit 1
  fi
done

api_rps=$(cut -d' ' -f1 "$work/api.runs" | median)
baseline_rps=$(cut -d' ' -f1 "$work/baseline.runs" | median)
api_p50=$(cut -d' ' -f2 "$work/api.runs" | median)
api_p99=$(cut -d' ' -f3 "$work/api.runs" | median)
baseline_p50=$(cut -d' ' -f2 "$work/baseline.runs" | median)
baseline_p99=$(cut -d' ' -f3 "$work/baseline.runs" | median)
dropped=$(curl -fsS "$api_url/metrics" | awk '/^shortener_clicks_dropped_total/ { print $2 }')

log "creates/s, with wrk for $DURATION"
create_result=$(measure api loadtests/lua/create.lua)
stop_api api

rss_line="rss_skipped"
if [ "$RSS_LINKS" -gt 0 ]; then
  log "memory: $RSS_LINKS links created and cached (fresh store, 1 GiB cache bound)"
  start_api rss "$API_PORT" SHORTENER__CACHE__L1__MAX_BYTES=1073741824 SHORTENER__CACHE__L1__TTL=1h
  target/release/seed-links create "$api_url" "$RSS_LINKS" "$work/rss-codes.txt" 64 >&2
  target/release/seed-links visit "$api_url" "$work/rss-codes.txt" 64 >&2
  loads() { curl -fsS "$api_url/metrics" | awk '/^shortener_cache_loads_total/ { print $2 }'; }
  before=$(loads)
  target/release/seed-links visit "$api_url" "$work/rss-codes.txt" 64 >&2
  after=$(loads)
  kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$rss_pid/status"; }
  rss_line="rss_mib=$(($(kib VmRSS) / 1024)) rss_anon_mib=$(($(kib RssAnon) / 1024)) rss_file_mib=$(($(kib RssFile) / 1024)) cached_links=$RSS_LINKS store_loads_on_second_pass=$((after - before))"
  stop_api rss
fi

echo
echo "wrk: -t$THREADS -c$CONNECTIONS -d$DURATION, $RUNS runs each, medians; $(nproc) cores"
awk -v a="$api_rps" -v b="$baseline_rps" 'BEGIN { printf "redirect_rps_ratio=%.2f\n", a / b }'
echo "api_rps=$api_rps api_p50_ms=$api_p50 api_p99_ms=$api_p99 clicks_dropped=$dropped"
echo "baseline_rps=$baseline_rps baseline_p50_ms=$baseline_p50 baseline_p99_ms=$baseline_p99"
echo "seed: $create_line"
echo "creates_per_second=$(echo "$create_result" | cut -d' ' -f1) create_p50_ms=$(echo "$create_result" | cut -d' ' -f2) create_p99_ms=$(echo "$create_result" | cut -d' ' -f3)"
echo "$rss_line"
