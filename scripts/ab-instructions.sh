#!/usr/bin/env bash
# Instructions executed by two (or more) builds of rdg on the same replay,
# counted by valgrind (callgrind): a measure that does not move with the
# host's speed (the wall-clock and CPU-second A/Bs do, by ±20% from one
# quarter hour to the next on a shared host), so changes of 1-3% show.
# Instructions are not time (cache misses cost nothing here): confirm a gain
# with scripts/ab-replay.sh. Runs EVENTS events (default 200 000; valgrind
# runs rdg ~50x slower) into an empty state, then EVENTS more (seed 8) into
# that state, under each build; prints the totals and the difference from
# the first build, and keeps each run's profile in target/ab-instructions/
# (callgrind_annotate FILE: instructions by function).
#   scripts/ab-instructions.sh [EVENTS] BIN_A BIN_B [BIN...]
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
events=$1; shift
[ $# -ge 2 ] || { echo "usage: scripts/ab-instructions.sh EVENTS BIN_A BIN_B [BIN...]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "ab-instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 2; }
work=${BENCH_DIR:-target/ab-instructions}
mkdir -p "$work"
first="$work/events-$events"
more="$work/events-$events-s8"
[ -f "$first/playback.jsonl" ] || "$1" gen --events "$events" --seed 7 --out "$first" >/dev/null
[ -f "$more/playback.jsonl" ] || "$1" gen --events "$events" --seed 8 --out "$more" >/dev/null

# counted BIN DIR OUT: instructions of one replay into $work/state.
counted() {
  valgrind --tool=callgrind --callgrind-out-file="$3" "$1" replay --workers 2 \
    --state "$work/state" --json "$2"/playback.jsonl "$2"/gaming.jsonl "$2"/login.jsonl \
    > /dev/null 2> "$work/valgrind.log" || { tail -5 "$work/valgrind.log" >&2; exit 1; }
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$work/valgrind.log"
}

echo "machine: $(nproc) cores; events=$events; instructions (callgrind)"
base_empty=""; base_more=""
n=0
for bin in "$@"; do
  rm -rf "$work/state"
  empty=$(counted "$bin" "$first" "$work/callgrind-$n-empty.out")
  cont=$(counted "$bin" "$more" "$work/callgrind-$n-continue.out")
  if [ -z "$base_empty" ]; then base_empty=$empty; base_more=$cont; fi
  python3 - "$bin" "$empty" "$cont" "$base_empty" "$base_more" <<'PY'
import sys
bin, e, c, be, bc = sys.argv[1], *map(int, sys.argv[2:])
print(f"{bin}: empty state {e/1e9:.3f}G ({100*(e-be)/be:+.2f}%), continue {c/1e9:.3f}G ({100*(c-bc)/bc:+.2f}%)")
PY
  n=$((n + 1))
done
