#!/usr/bin/env bash
# File replays of two (or more) builds of rdg on the same generated events,
# one build after the other, ROUNDS times, so that other load on the machine
# falls on every build alike. Each run replays EVENTS events into an empty
# state, then (with CONTINUE_SEED, default 8) EVENTS more into that state,
# and prints events/s, CPU seconds (user + sys), idle core-seconds (cores x
# wall - CPU: what a change that overlaps stages moves) and peak RSS: the CPU
# seconds and the idle ones move much less than the rate when the host's
# speed varies. Uses (and makes
# if missing) the events of scripts/bench-replay.sh.
#   scripts/ab-replay.sh [EVENTS] [ROUNDS] BIN_A BIN_B [BIN...]
#   CONTINUE_SEED= scripts/ab-replay.sh 2000000 2 A B   (no continue step)
set -euo pipefail
cd "$(dirname "$0")/.."
events=$1; rounds=$2; shift 2
[ $# -ge 2 ] || { echo "usage: scripts/ab-replay.sh EVENTS ROUNDS BIN_A BIN_B [BIN...]" >&2; exit 2; }
work=${BENCH_DIR:-target/bench-replay}
seed2=${CONTINUE_SEED-8}
mkdir -p "$work"
first="$work/events-$events"
[ -f "$first/playback.jsonl" ] || "$1" gen --events "$events" --seed 7 --out "$first" >/dev/null
more="$work/events-$events-s$seed2"
if [ -n "$seed2" ] && [ ! -f "$more/playback.jsonl" ]; then
  "$1" gen --events "$events" --seed "$seed2" --out "$more" >/dev/null
fi

# replay BIN DIR LABEL: one replay into $work/ab-state, one result line.
replay() {
  /usr/bin/time -f "%M %U %S" "$1" replay --workers 2 --state "$work/ab-state" --json \
    "$2"/playback.jsonl "$2"/gaming.jsonl "$2"/login.jsonl \
    2> "$work/ab-time.txt" > "$work/ab-summary.json"
  python3 - "$work/ab-summary.json" "$work/ab-time.txt" "$1" "$3" <<'PY'
import json, os, sys
s = json.load(open(sys.argv[1]))
rss_kb, user, sys_s = open(sys.argv[2]).read().split()[-3:]
cpu = float(user) + float(sys_s)
# Core-seconds of the machine's cores that no thread of the replay used.
idle = os.cpu_count() * s['elapsed_s'] - cpu
print(f"{sys.argv[3]} {sys.argv[4]}: {s['events_per_s']:.0f} events/s, "
      f"{cpu:.1f} CPU-s, idle {idle:.2f} core-s, peak RSS {int(rss_kb) / 2**20:.2f} GiB, "
      f"{s['edges']} live edges")
PY
}

echo "machine: $(nproc) cores; events=$events rounds=$rounds; load $(cut -d' ' -f1 /proc/loadavg)"
for round in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    rm -rf "$work/ab-state"
    replay "$bin" "$first" "round $round, empty state"
    [ -z "$seed2" ] || replay "$bin" "$more" "round $round, continue"
  done
done
rm -rf "$work/ab-state"
