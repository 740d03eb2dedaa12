#!/usr/bin/env bash
# Replay benchmark: generate N events, replay them into a fresh state with
# W workers, report events/s and peak resident memory.
#   scripts/bench-replay.sh [EVENTS] [WORKERS]
# RDG_REPLAY_ARGS adds arguments to `rdg replay` (e.g. "--engine sled").
# BENCH_CONTINUE_SEED=S then replays N more events (generated with seed S)
# into the state the first replay left: commits into a non-empty state,
# after the rebuild of the in-memory state from the store.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
workers=${2:-2}
work=${BENCH_DIR:-target/bench-replay}
cargo build --release --quiet
bin=target/release/rdg
rm -rf "$work/state" && mkdir -p "$work"

# gen_once DIR SEED: the generated events, made once per size and seed.
gen_once() {
  if [ ! -f "$1/playback.jsonl" ]; then
    "$bin" gen --events "$events" --seed "$2" --out "$1" >/dev/null
  fi
}

# replay_measured DIR LABEL: replays DIR's files into the state, prints the
# summary, the rate, the peak RSS and (when the summary has them) the
# store's figures.
replay_measured() {
  # shellcheck disable=SC2086 # RDG_REPLAY_ARGS is a list of arguments
  /usr/bin/time -f "peak_rss_kb=%M wall_s=%e user_s=%U sys_s=%S" "$bin" replay --workers "$workers" --state "$work/state" --json ${RDG_REPLAY_ARGS:-} \
    "$1"/playback.jsonl "$1"/gaming.jsonl "$1"/login.jsonl \
    2> "$work/time.txt" | tee "$work/summary.json"
  cat "$work/time.txt"
  python3 - "$work/summary.json" "$work/time.txt" "$2" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
rss = int(re.search(r"peak_rss_kb=(\d+)", open(sys.argv[2]).read()).group(1)) * 1024
print(f"{sys.argv[3]}events/s {s['events_per_s']:.0f}; live edges {s['edges']}; peak RSS {rss/2**20:.0f} MiB"
      f" = {rss/max(s['edges'],1):.0f} bytes per live edge")
if 'store_engine' in s:
    print(f"store {s['store_engine']}{' (bulk load)' if s['bulk_load'] else ''}: {s['store_keys_written']} keys,"
          f" {s['store_write_s']:.2f} s of engine writes = {s['store_keys_per_s']:.0f} keys/s"
          + (f", sorted runs merged in {s['store_merge_s']:.2f} s" if s.get('store_merge_s') else ""))
PY
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; events=$events workers=$workers; load $(cut -d' ' -f1 /proc/loadavg)"
gen_once "$work/events-$events" 7
replay_measured "$work/events-$events" ""
if [ -n "${BENCH_CONTINUE_SEED:-}" ]; then
  more="$work/events-$events-s$BENCH_CONTINUE_SEED"
  gen_once "$more" "$BENCH_CONTINUE_SEED"
  echo "continue: $events more events (seed $BENCH_CONTINUE_SEED) into the state above"
  replay_measured "$more" "continue: "
fi
