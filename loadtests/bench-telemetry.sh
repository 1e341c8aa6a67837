#!/usr/bin/env bash
# What observability costs the redirect path: cache-hit redirects of
# shortener-api (embedded default) in three configurations, in one run,
# with identical wrk settings, alternating runs, medians compared:
#
#   off          metrics.enabled = false, no tracing
#   metrics      the default: RED metrics on every request, no tracing
#   production   metrics, and traces to the dev stack's Jaeger over OTLP
#                with 1% of requests sampled
#
# All three log as in production, JSON at info, so that only metrics and
# tracing differ.
#
# Only the server being measured runs; the others are paused (SIGSTOP).
# Prints telemetry_rps_ratio (production / off) and metrics_rps_ratio, and
# the API process's own CPU time per request in each configuration (less
# noisy than rps on a shared machine: wrk and Jaeger are not in it).
#
# Usage: loadtests/bench-telemetry.sh      (settings below, from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."

LINKS=${LINKS:-50000}   # links loaded into each server
RUNS=${RUNS:-5}         # measured runs per configuration; medians are compared
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
BASE_PORT=${BASE_PORT:-18090}
SAMPLING_RATIO=${SAMPLING_RATIO:-0.01}

# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh
trap cleanup EXIT

read -r -a configs <<<"${CONFIGS:-off metrics production}"  # the order of each round
declare -A port pid
settings() { # CONFIG: its environment
  case $1 in
    off) echo SHORTENER__METRICS__ENABLED=false ;;
    metrics) ;;
    production)
      echo SHORTENER__TRACES__ENDPOINT=http://127.0.0.1:4317 \
        SHORTENER__TRACES__SAMPLING_RATIO="$SAMPLING_RATIO" ;;
  esac
}

log "building release binaries"
cargo build --release --locked -p shortener-api -p loadtest-tools >&2
install_wrk
log "starting the dev stack's Jaeger (the production configuration's collector)"
infra/dev-stack up jaeger

n=0
for config in "${configs[@]}"; do
  port[$config]=$((BASE_PORT + n)); n=$((n + 1))
  # shellcheck disable=SC2046
  start_api "$config" "${port[$config]}" SHORTENER__LOG__FORMAT=json SHORTENER__LOG__LEVEL=info \
      $(settings "$config")
  pid_var="${config}_pid"
  pid[$config]=${!pid_var}
  log "$config: loading $LINKS links"
  target/release/seed-links create "http://127.0.0.1:${port[$config]}" "$LINKS" "$work/$config.codes" 64 >&2
  target/release/seed-links visit "http://127.0.0.1:${port[$config]}" "$work/$config.codes" 64 >&2
done

script=loadtests/lua/redirect.lua
cpu_ticks() { # PID: user + system CPU time, in clock ticks
  sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
# wrk against CONFIG, the others paused: "rps p50_ms p99_ms non_3xx cpu_us_per_request"
measure() { # CONFIG
  local other before result
  for other in "${configs[@]}"; do [ "$other" = "$1" ] || kill -STOP "${pid[$other]}"; done
  before=$(cpu_ticks "${pid[$1]}")
  result=$(run_wrk "http://127.0.0.1:${port[$1]}" "$script" "$work/$1.codes")
  local ticks=$(($(cpu_ticks "${pid[$1]}") - before))
  for other in "${configs[@]}"; do [ "$other" = "$1" ] || kill -CONT "${pid[$other]}"; done
  echo "$result" | awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v d="${DURATION%s}" \
    '{ printf "%s %.2f\n", $0, t / hz * 1e6 / ($1 * d) }'
}

log "warming up"
for config in "${configs[@]}"; do measure "$config" >/dev/null; : >"$work/$config.runs"; done
for run in $(seq 1 "$RUNS"); do
  for config in "${configs[@]}"; do
    result=$(measure "$config")
    log "run $run $config: rps p50_ms p99_ms non_3xx cpu_us_per_request = $result"
    echo "$result" >>"$work/$config.runs"
  done
done
for config in "${configs[@]}"; do
  if awk '$4 != 0 { bad = 1 } END { exit !bad }' "$work/$config.runs"; then
    echo "$config answered non-3xx responses" >&2; exit 1
  fi
done

# The production configuration did trace: its spans reached Jaeger.
services=$(curl -fsS http://127.0.0.1:16686/api/v3/services || true)
case $services in
  *shortener-api*) traced=yes ;;
  *) traced=no ;;
esac

declare -A rps p50 p99 cpu
for config in "${configs[@]}"; do
  rps[$config]=$(cut -d' ' -f1 "$work/$config.runs" | median)
  p50[$config]=$(cut -d' ' -f2 "$work/$config.runs" | median)
  p99[$config]=$(cut -d' ' -f3 "$work/$config.runs" | median)
  cpu[$config]=$(cut -d' ' -f5 "$work/$config.runs" | median)
done
echo
echo "wrk: -t$THREADS -c$CONNECTIONS -d$DURATION, $RUNS runs each, medians; $(nproc) cores; sampling $SAMPLING_RATIO"
awk -v a="${rps[production]}" -v b="${rps[off]}" 'BEGIN { printf "telemetry_rps_ratio=%.3f\n", a / b }'
awk -v a="${rps[metrics]}" -v b="${rps[off]}" 'BEGIN { printf "metrics_rps_ratio=%.3f\n", a / b }'
awk -v a="${cpu[production]}" -v b="${cpu[off]}" 'BEGIN { printf "telemetry_cpu_per_request_ratio=%.3f\n", a / b }'
for config in "${configs[@]}"; do
  echo "${config}_rps=${rps[$config]} ${config}_p50_ms=${p50[$config]} ${config}_p99_ms=${p99[$config]} ${config}_cpu_us_per_request=${cpu[$config]}"
done
echo "spans_in_jaeger=$traced"
