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
set -euo pipefail
cd "$(dirname "$0")/.."
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

"$bin" gen --events "$events" --seed 7 --out "$work/files" >/dev/null
"$bin" replay --workers "$workers" --state "$work/file-state" --json \
  "$work/files/playback.jsonl" "$work/files/gaming.jsonl" "$work/files/login.jsonl" > "$work/file.json"
expected=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["events"]+s["dead_letters"])' "$work/file.json")

"$bin" produce --brokers "127.0.0.1:$port" --events "$events" --seed 7 --partitions 4 2>/dev/null

start=$(date +%s.%N)
"$bin" run --workers "$workers" --state "$work/kafka-state" --brokers "127.0.0.1:$port" \
  --status-interval 1 2> "$work/run.log" &
pid=$!
while sleep 0.2; do
  got=$(python3 - "$work/run.log" <<'PY'
import re, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("status: ")]
if not lines:
    print(0); sys.exit()
total = sum(int(e) + int(d) for e, d in re.findall(r"\((\d+) events\).*?dead letters (\d+)", lines[-1]))
print(total)
PY
)
  if [ "$got" -ge "$expected" ]; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "rdg run exited early:"; tail "$work/run.log"; exit 1; fi
done
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
