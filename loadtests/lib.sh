# Shared by the benchmark scripts (sourced, not run). Each script runs
# `trap cleanup EXIT` after sourcing it.

work=$(mktemp -d)  # scratch files, removed by cleanup
pids=()            # processes started in the background, stopped by cleanup

cleanup() {
  # Paused processes (SIGSTOP) are resumed first, or they would not exit.
  for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

log() { printf '== %s\n' "$*" >&2; }

wait_for() { # URL: until it answers, at most a minute
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

# wrk with the settings THREADS, CONNECTIONS, DURATION; output → "rps p50_ms p99_ms non_3xx"
run_wrk() { # URL SCRIPT CODES_FILE
  local out
  out=$(CODES="$3" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$2" "$1")
  echo "$out" >>"$work/wrk.log"
  echo "$out" | awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
      return v
    }
    /Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { bad = $5 }
    END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, bad + 0 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# shellcheck source=infra/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../infra/lib.sh"

install_wrk() { install_command wrk wrk; }

# start_api NAME PORT [VAR=value...]: shortener-api ($API_BIN, by default
# the release build) on the embedded default with no configuration files,
# its data in $work/NAME-data and its log in $work/NAME.log, the given
# variables last (they win); sets NAME_pid (cleanup stops it too) and
# returns once it is ready.
start_api() {
  local name=$1 port=$2; shift 2
  env SHORTENER_CONFIG_DIR="$work/no-config" \
      SHORTENER__HTTP__LISTEN="127.0.0.1:$port" \
      SHORTENER__STORAGE__SQLITE__DIR="$work/$name-data" \
      SHORTENER__LOG__LEVEL=warn \
      "$@" "${API_BIN:-target/release/shortener-api}" >>"$work/$name.log" 2>&1 &
  printf -v "${name}_pid" '%s' "$!"
  pids+=("$!")
  wait_for "http://127.0.0.1:$port/readyz"
}

# stop_api NAME: SIGTERM to what start_api NAME started, and wait for it.
stop_api() {
  local pid_var="${1}_pid"
  kill -TERM "${!pid_var}"
  wait "${!pid_var}" || true
}
