#!/usr/bin/env bash
# Kill loop at scale: one long `rdg run` against tansu (private port, one
# partition per topic), killed with SIGKILL at random moments KILLS times,
# restarted each time, then run until every event is committed; its export
# must equal the file replay of the same events (dead letters compared by
# dataflow: their source names a file line in one, an offset in the other).
# After every kill the state must open (`rdg query`), never refused.
#   scripts/killloop.sh [KILLS] [EVENTS]        (default 50 300000)
#   RDG_ENGINE=sled scripts/killloop.sh 20 50000
# The test command runs a smaller loop (tests/kafka_e2e.rs, 4 kills per
# scenario, both engines).
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-50}
events=${2:-300000}
engine=${RDG_ENGINE:-fjall}
port=${KILLLOOP_BROKER_PORT:-19094}
work=target/killloop
nice -n 10 cargo build --release --quiet
bin=target/release/rdg
# shellcheck source=scripts/lib/tansu.sh
. scripts/lib/tansu.sh
scripts/broker.sh stop "$port" >/dev/null 2>&1 || true
scripts/broker.sh start "$port"
trap 'scripts/broker.sh stop "$port" >/dev/null || true' EXIT
rm -rf "$work" && mkdir -p "$work"
brokers="127.0.0.1:$port"
echo "killloop: $kills kills, $events events, engine $engine, tansu on $brokers"

"$bin" gen --events "$events" --seed 7 --out "$work/files" >/dev/null
"$bin" replay --engine "$engine" --workers 2 --state "$work/file-state" --json \
  "$work/files/playback.jsonl" "$work/files/gaming.jsonl" "$work/files/login.jsonl" > "$work/file.json"
expected=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["events"]+s["dead_letters"])' "$work/file.json")
"$bin" produce --brokers "$brokers" --events "$events" --seed 7 --partitions 1 2>/dev/null

normalize() {
  python3 -c '
import json, sys
out = []
for l in sys.stdin:
    v = json.loads(l)
    out.append("dead_letter " + v["dataflow"] if v.get("ns") == "dead_letter" else l.rstrip("\n"))
print("\n".join(sorted(out)))'
}
"$bin" export --state "$work/file-state" | normalize > "$work/reference.txt"

run() {
  nice -n 10 "$bin" run --engine "$engine" --workers 2 --state "$work/state" --brokers "$brokers" $(tansu_run_args "$bin") \
    --status-interval 1 >/dev/null 2>> "$work/run.log" &
  pid=$!
}

# The lag of every dataflow in the last status line (`?` before one).
lags() {
  python3 - "$work/run.log" <<'PY'
import re, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("status: ")]
print(" ".join(re.findall(r"lag (\S+),", lines[-1])) if lines else "?")
PY
}

started=$(date +%s)
for i in $(seq 1 "$kills"); do
  : > "$work/run.log"
  run
  # A random moment between 0.3 and 3 s into this run.
  sleep "$(python3 -c 'import random; print(round(random.uniform(0.3, 3.0), 2))')"
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "killloop: rdg run exited by itself before kill $i:"; tail -20 "$work/run.log"; exit 1
  fi
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  code=0; "$bin" query --state "$work/state" node account acc0 >/dev/null 2>"$work/query.err" || code=$?
  if [ "$code" -ge 2 ]; then
    echo "killloop: after kill $i the state does not open:"; cat "$work/query.err"; exit 1
  fi
  echo "killloop: kill $i/$kills done (lags before it: $(lags))"
done

: > "$work/run.log"
run
deadline=$(( $(date +%s) + 1800 ))
# Complete when every dataflow's lag is 0 (the status line comes every
# second; lags are refreshed every 5 s).
until [ "$(lags)" = "0 0 0" ]; do
  if ! kill -0 "$pid" 2>/dev/null; then echo "killloop: rdg run exited early:"; tail "$work/run.log"; exit 1; fi
  if [ "$(date +%s)" -gt "$deadline" ]; then echo "killloop: not complete after 30 min"; exit 1; fi
  sleep 0.5
done
sleep 6
kill -TERM "$pid"
wait "$pid" || { echo "killloop: rdg run did not stop cleanly:"; tail "$work/run.log"; exit 1; }
"$bin" export --state "$work/state" | normalize > "$work/kafka.txt"
if cmp -s "$work/reference.txt" "$work/kafka.txt"; then
  echo "killloop: $kills SIGKILLs survived in $(( $(date +%s) - started )) s; export equal to the file replay ($(wc -l < "$work/reference.txt") lines, $expected records)"
else
  echo "killloop: export differs from the file replay after $kills kills:"
  diff "$work/reference.txt" "$work/kafka.txt" | head -20
  exit 1
fi
