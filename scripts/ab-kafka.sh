#!/usr/bin/env bash
# Live catch-ups of two (or more) builds of rdg from the same broker, one
# build after the other, ROUNDS times, so that other load on the machine
# falls on every build alike (what scripts/ab-replay.sh does for replays).
# Starts tansu once (scripts/broker.sh), produces EVENTS generated events to
# 4-partition topics once, then per run: `rdg run --workers 2` into a fresh
# state, from the start of the topics, until its status line shows every
# record committed. Prints the elapsed time, records/s, CPU seconds
# (user + sys), minor page faults and peak RSS of each run: on this host a
# single run's elapsed time varies by ±10%, so compare several rounds, and
# the CPU seconds.
#   scripts/ab-kafka.sh EVENTS ROUNDS BIN_A BIN_B [BIN...]
# Environment given to the script reaches every run alike; to try a setting
# read from the environment in a test build, wrap it:
#   printf '#!/bin/sh\nFOO=1 exec /path/rdg "$@"\n' > /tmp/rdg-foo
# The status line comes every 0.2 s (the precision of a run's end);
# STATUS_INTERVAL=1 for builds older than fractional intervals (4 December).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/catch-up.sh
. scripts/lib/catch-up.sh
# shellcheck source=scripts/lib/tansu.sh
. scripts/lib/tansu.sh
events=$1; rounds=$2; shift 2
[ $# -ge 2 ] || { echo "usage: scripts/ab-kafka.sh EVENTS ROUNDS BIN_A BIN_B [BIN...]" >&2; exit 2; }
port=${BENCH_BROKER_PORT:-19096}
work=target/ab-kafka
rm -rf "$work" && mkdir -p "$work"
scripts/broker.sh stop "$port" >/dev/null 2>&1 || true
scripts/broker.sh start "$port" >/dev/null
trap 'scripts/broker.sh stop "$port" >/dev/null || true' EXIT
"$1" produce --brokers "127.0.0.1:$port" --events "$events" --seed 7 --partitions 4 2>/dev/null
# The records to wait for: those of a replay of the same generated events.
expected=$(file_records "$1" 2 "$events" "$work")
echo "machine: $(nproc) cores; events=$events ($expected records) rounds=$rounds; load $(cut -d' ' -f1 /proc/loadavg)"

# catch_up BIN LABEL: one live catch-up into a fresh state, one result line.
catch_up() {
  rm -rf "$work/state"
  : > "$work/run.log"
  /usr/bin/time -f "%M %U %S %R" -o "$work/time.txt" "$1" run --workers 2 --state "$work/state" \
    --brokers "127.0.0.1:$port" $(tansu_run_args "$1") --status-interval "${STATUS_INTERVAL:-0.2}" 2> "$work/run.log" &
  local pid=$! start end
  start=$(date +%s.%N)
  wait_committed "$work/run.log" "$expected" "$pid"
  end=$(date +%s.%N)
  # Stop rdg itself (the child of /usr/bin/time, which then reports).
  pkill -TERM -P "$pid" || true
  wait "$pid" || true
  python3 - "$work/time.txt" "$start" "$end" "$expected" "$1" "$2" <<'PY'
import sys
rss_kb, user, sys_s, faults = open(sys.argv[1]).read().split()[-4:]
secs = float(sys.argv[3]) - float(sys.argv[2])
print(f"{sys.argv[5]} {sys.argv[6]}: {secs:.2f} s = {int(sys.argv[4]) / secs:.0f} records/s, "
      f"{float(user) + float(sys_s):.1f} CPU-s ({float(sys_s):.1f} sys), {int(faults)} minor faults, "
      f"peak RSS {int(rss_kb) / 2**20:.2f} GiB")
PY
}

for round in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    catch_up "$bin" "round $round"
  done
done
