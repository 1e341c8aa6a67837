#!/usr/bin/env bash
# Cache-hit redirects of two revisions of shortener-api, and the bare
# actix-web baseline, in one run: what a change costs the hot path, as
# ratios measured side by side (absolute numbers move with the machine).
#
# The other revision is built from a git worktree into this checkout's
# target directory (so dependencies compile once), then this checkout's.
# Each server gets the same links; runs alternate, the servers not being
# measured paused (SIGSTOP); medians are compared.
#
# Usage: loadtests/bench-compare.sh REV    (e.g. HEAD~3, main, a commit)
set -euo pipefail
cd "$(dirname "$0")/.."

REV=${1:?usage: loadtests/bench-compare.sh REV}
LINKS=${LINKS:-100000}
RUNS=${RUNS:-5}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-64}
OLD_PORT=${OLD_PORT:-18082}
NEW_PORT=${NEW_PORT:-18080}
BASELINE_PORT=${BASELINE_PORT:-18081}

# shellcheck source=loadtests/lib.sh
source loadtests/lib.sh
trap 'git worktree remove --force "$work/old-tree" 2>/dev/null || true; cleanup' EXIT

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
log "building $REV ($(git rev-parse --short "$REV")) in a worktree"
git worktree add --quiet --detach "$work/old-tree" "$REV"
(cd "$work/old-tree" && CARGO_TARGET_DIR="$target_dir" cargo build --release --locked -p shortener-api >&2)
cp "$target_dir/release/shortener-api" "$work/shortener-api-old"
log "building this checkout"
cargo build --release --locked -p shortener-api -p loadtest-tools >&2
cp "$target_dir/release/shortener-api" "$work/shortener-api-new"
install_wrk

log "starting both revisions and loading $LINKS links into each"
API_BIN="$work/shortener-api-old" start_api old "$OLD_PORT"
API_BIN="$work/shortener-api-new" start_api new "$NEW_PORT"
target/release/seed-links create "http://127.0.0.1:$OLD_PORT" "$LINKS" "$work/old-codes.txt" 64 >&2
target/release/seed-links create "http://127.0.0.1:$NEW_PORT" "$LINKS" "$work/new-codes.txt" 64 >&2
target/release/seed-links visit "http://127.0.0.1:$OLD_PORT" "$work/old-codes.txt" 64 >&2
target/release/seed-links visit "http://127.0.0.1:$NEW_PORT" "$work/new-codes.txt" 64 >&2
target/release/redirect-baseline "127.0.0.1:$BASELINE_PORT" "$work/new-codes.txt" 2>>"$work/baseline.log" &
baseline_pid=$!
pids+=("$baseline_pid")
wait_for "http://127.0.0.1:$BASELINE_PORT/$(head -n1 "$work/new-codes.txt" | cut -d' ' -f1)"

measure() { # old|new|baseline: wrk against it, the others paused
  local port codes pid
  case $1 in
    old) port=$OLD_PORT codes=$work/old-codes.txt ;;
    new) port=$NEW_PORT codes=$work/new-codes.txt ;;
    baseline) port=$BASELINE_PORT codes=$work/new-codes.txt ;;
  esac
  for pid in "$old_pid" "$new_pid" "$baseline_pid"; do kill -STOP "$pid"; done
  kill -CONT "$(eval echo "\$${1}_pid")"
  run_wrk "http://127.0.0.1:$port" loadtests/lua/redirect.lua "$codes"
  for pid in "$old_pid" "$new_pid" "$baseline_pid"; do kill -CONT "$pid"; done
}

log "warming up"
for target in old new baseline; do measure "$target" >/dev/null; done
for run in $(seq 1 "$RUNS"); do
  for target in old new baseline; do
    result=$(measure "$target")
    log "run $run $target: rps p50_ms p99_ms non_3xx = $result"
    echo "$result" >>"$work/$target.runs"
  done
done

col() { cut -d' ' -f"$2" "$work/$1.runs" | median; }
echo
echo "wrk: -t$THREADS -c$CONNECTIONS -d$DURATION, $RUNS runs each, medians; $(nproc) cores"
echo "old=$REV ($(git rev-parse --short "$REV")) new=$(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')"
for target in old new baseline; do
  echo "${target}_rps=$(col "$target" 1) ${target}_p50_ms=$(col "$target" 2) ${target}_p99_ms=$(col "$target" 3)"
done
awk -v o="$(col old 1)" -v n="$(col new 1)" -v b="$(col baseline 1)" \
  -v op="$(col old 3)" -v np="$(col new 3)" 'BEGIN {
    printf "new_over_old_rps=%.3f new_over_old_p99=%.3f\n", n / o, np / op
    printf "old_over_baseline_rps=%.3f new_over_baseline_rps=%.3f\n", o / b, n / b
  }'
