#!/usr/bin/env bash
# Kafka ingest benchmark against a real broker (tansu, in memory, loopback):
# produce N generated events to 4-partition topics, then time a live
# `rdg run` with W workers from its start until its status line shows every
# event committed, and compare with `rdg replay` of the same events from
# files.
#   scripts/bench-kafka.sh [EVENTS] [WORKERS]
# (`rdg replay --brokers` is not used here: tansu's ListOffsets answers end
# offsets below the real ones, so a bounded replay stops early against it.)
# RDG_BIN=PATH runs that binary instead of building target/release/rdg.
# The status line comes every 0.2 s (STATUS_INTERVAL=1 for older builds).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/catch-up.sh
. scripts/lib/catch-up.sh
# shellcheck source=scripts/lib/tansu.sh
. scripts/lib/tansu.sh
events=${1:-200000}
workers=${2:-2}
port=${BENCH_BROKER_PORT:-19093}
work=target/bench-kafka
if [ -z "${RDG_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${RDG_BIN:-target/release/rdg}
scripts/broker.sh stop "$port" >/dev/null 2>&1 || true
scripts/broker.sh start "$port"
trap 'scripts/broker.sh stop "$port" || true' EXIT
rm -rf "$work" && mkdir -p "$work"
echo "machine: $(nproc) cores; events=$events workers=$workers broker=tansu (memory) on 127.0.0.1:$port"

expected=$(file_records "$bin" "$workers" "$events" "$work")

"$bin" produce --brokers "127.0.0.1:$port" --events "$events" --seed 7 --partitions 4 2>/dev/null

start=$(date +%s.%N)
"$bin" run --workers "$workers" --state "$work/kafka-state" --brokers "127.0.0.1:$port" $(tansu_run_args "$bin") \
  --status-interval "${STATUS_INTERVAL:-0.2}" 2> "$work/run.log" &
pid=$!
wait_committed "$work/run.log" "$expected" "$pid"
end=$(date +%s.%N)
kill -TERM "$pid"; wait "$pid" || true
python3 - "$work/file.json" "$start" "$end" "$expected" <<'PY'
import json, sys
f = json.load(open(sys.argv[1])); secs = float(sys.argv[3]) - float(sys.argv[2]); n = int(sys.argv[4])
rate = n / secs
print(f"kafka (rdg run, first status line showing all {n} records committed): {secs:.2f}s = {rate:.0f} records/s")
fr = (f['events'] + f['dead_letters']) / f['elapsed_s']
print(f"file replay: {f['elapsed_s']:.2f}s = {fr:.0f} records/s")
print(f"kafka / file: {rate / fr:.2f}")
PY
