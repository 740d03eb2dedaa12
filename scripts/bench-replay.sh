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
if [ ! -f "$work/events-$events/playback.jsonl" ]; then
  "$bin" gen --events "$events" --seed 7 --out "$work/events-$events" >/dev/null
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; events=$events workers=$workers"
# shellcheck disable=SC2086 # RDG_REPLAY_ARGS is a list of arguments
/usr/bin/time -f "peak_rss_kb=%M wall_s=%e" "$bin" replay --workers "$workers" --state "$work/state" --json ${RDG_REPLAY_ARGS:-} \
  "$work/events-$events"/playback.jsonl "$work/events-$events"/gaming.jsonl "$work/events-$events"/login.jsonl \
  2> "$work/time.txt" | tee "$work/summary.json"
cat "$work/time.txt"
python3 - "$work/summary.json" "$work/time.txt" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
rss = int(re.search(r"peak_rss_kb=(\d+)", open(sys.argv[2]).read()).group(1)) * 1024
print(f"events/s {s['events_per_s']:.0f}; live edges {s['edges']}; peak RSS {rss/2**20:.0f} MiB"
      f" = {rss/max(s['edges'],1):.0f} bytes per live edge")
if 'store_engine' in s:
    print(f"store {s['store_engine']}{' (bulk load)' if s['bulk_load'] else ''}: {s['store_keys_written']} keys,"
          f" {s['store_write_s']:.2f} s of engine writes = {s['store_keys_per_s']:.0f} keys/s")
PY

if [ -n "${BENCH_CONTINUE_SEED:-}" ]; then
  more="$work/events-$events-s$BENCH_CONTINUE_SEED"
  if [ ! -f "$more/playback.jsonl" ]; then
    "$bin" gen --events "$events" --seed "$BENCH_CONTINUE_SEED" --out "$more" >/dev/null
  fi
  echo "continue: $events more events (seed $BENCH_CONTINUE_SEED) into the state above"
  # shellcheck disable=SC2086
  /usr/bin/time -f "peak_rss_kb=%M wall_s=%e" "$bin" replay --workers "$workers" --state "$work/state" --json ${RDG_REPLAY_ARGS:-} \
    "$more"/playback.jsonl "$more"/gaming.jsonl "$more"/login.jsonl \
    2> "$work/time.txt" | tee "$work/summary.json"
  cat "$work/time.txt"
  python3 - "$work/summary.json" "$work/time.txt" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
rss = int(re.search(r"peak_rss_kb=(\d+)", open(sys.argv[2]).read()).group(1)) * 1024
print(f"continue: events/s {s['events_per_s']:.0f}; live edges {s['edges']}; peak RSS {rss/2**20:.0f} MiB")
PY
fi
