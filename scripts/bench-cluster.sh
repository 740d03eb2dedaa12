#!/usr/bin/env bash
# Cluster benchmark on one machine, against a real broker (tansu, in memory,
# loopback only):
#  (i)  ingest: events/s of 1 process × 2 workers against 2 processes ×
#       1 worker reading the same 4-partition topics (`rdg produce
#       --partitions 4`), each timed from its start until its status lines
#       show every record committed (for the cluster: the sum over its
#       processes' status lines);
#  (ii) queries: node lookups of keys that process 1 owns, sent to process 0
#       (which forwards each to process 1) and to process 1 directly, with
#       wrk (keep-alive connections, a Lua script cycling over the keys).
# Prints both rates and their ratios.
#   scripts/bench-cluster.sh [EVENTS] [QUERY_SECONDS] [CONNECTIONS]
# Everything runs on 127.0.0.1; each step is bounded in time. RDG_BIN=PATH
# measures that binary instead of building target/release/rdg (to compare
# two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/catch-up.sh
. scripts/lib/catch-up.sh
events=${1:-200000}
seconds=${2:-10}
connections=${3:-16}
port=${BENCH_BROKER_PORT:-19094}
work=target/bench-cluster
command -v wrk >/dev/null || { echo "bench-cluster.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
bin=${RDG_BIN:-target/release/rdg}
[ -n "${RDG_BIN:-}" ] || cargo build --release --quiet
scripts/broker.sh stop "$port" >/dev/null 2>&1 || true
scripts/broker.sh start "$port"
cleanup() {
  [ -n "${single_pid:-}" ] && kill -TERM "$single_pid" 2>/dev/null || true
  scripts/cluster.sh stop "$work/cluster" >/dev/null 2>&1 || true
  scripts/broker.sh stop "$port" || true
}
trap cleanup EXIT
rm -rf "$work" && mkdir -p "$work"
echo "machine: $(nproc) cores; events=$events broker=tansu (memory) on 127.0.0.1:$port"

# What every run must commit: a file replay of the same events.
expected=$(file_records "$bin" 2 "$events" "$work")
"$bin" produce --brokers "127.0.0.1:$port" --events "$events" --seed 7 --partitions 4 2>/dev/null

# Waits until the logs show `expected` records; prints the seconds taken.
time_until_committed() {
  local start=$1; shift
  local limit=$((SECONDS + 600))
  while sleep 0.2; do
    if [ "$(committed "$@")" -ge "$expected" ]; then break; fi
    if [ "$SECONDS" -gt "$limit" ]; then echo "bench-cluster.sh: not everything committed in 600 s" >&2; exit 1; fi
  done
  python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$start"
}

# (i) 1 process × 2 workers.
start=$(date +%s.%N)
"$bin" run --workers 2 --state "$work/single" --brokers "127.0.0.1:$port" \
  --status-interval 1 --listen 127.0.0.1:0 2> "$work/single.log" &
single_pid=$!
single_s=$(time_until_committed "$start" "$work/single.log")
kill -TERM "$single_pid"; wait "$single_pid" || true; single_pid=

# (i) 2 processes × 1 worker (scripts/cluster.sh: --listen and --http-hosts too).
http_base=${RDG_CLUSTER_HTTP_BASE_PORT:-24200}
start=$(date +%s.%N)
RDG_BIN=$bin scripts/cluster.sh start 2 1 "$work/cluster" --brokers "127.0.0.1:$port" --status-interval 1 >/dev/null
cluster_s=$(time_until_committed "$start" "$work/cluster/process-0.log" "$work/cluster/process-1.log")

# (ii) Keys process 1 owns: the nodes of its local export.
p0=http://127.0.0.1:$http_base
p1=http://127.0.0.1:$((http_base + 1))
curl -sf "$p1/v1/export?scope=local" | python3 -c '
import json, sys, urllib.parse
q = lambda s: urllib.parse.quote(s, safe="")
for line in sys.stdin:
    v = json.loads(line)
    if v["ns"] == "node":
        print("/v1/nodes/%s/%s" % (q(v["type"]), q(v["id"])))
' > "$work/keys.txt"
keys=$(wc -l < "$work/keys.txt")
[ "$keys" -gt 0 ] || { echo "bench-cluster.sh: process 1 owns no node" >&2; exit 1; }
# Every key is answered 200 by process 0 (forwarded) before timing.
head -n 20 "$work/keys.txt" | while read -r k; do curl -sf -o /dev/null "$p0$k"; done
cat > "$work/keys.lua" <<LUA
local paths = {}
for line in io.lines("$work/keys.txt") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
LUA
rate() {
  local out
  out=$(wrk -t 2 -c "$connections" -d "${seconds}s" -s "$work/keys.lua" "$1")
  echo "$out" > "$work/wrk-$2.txt"
  if echo "$out" | grep -q "Non-2xx"; then echo "bench-cluster.sh: errors against $1:" >&2; echo "$out" >&2; exit 1; fi
  echo "$out" | awk '/Requests\/sec/ {print $2}'
}
direct=$(rate "$p1" direct)
forwarded=$(rate "$p0" forwarded)
latency_direct=$(awk '/Latency/ {print $2; exit}' "$work/wrk-direct.txt")
latency_forwarded=$(awk '/Latency/ {print $2; exit}' "$work/wrk-forwarded.txt")

python3 - "$expected" "$single_s" "$cluster_s" "$direct" "$forwarded" "$keys" "$latency_direct" "$latency_forwarded" <<'PY'
import sys
n = int(sys.argv[1]); one, two = float(sys.argv[2]), float(sys.argv[3])
direct, fwd = float(sys.argv[4]), float(sys.argv[5])
print(f"(i) ingest of {n} records from 4-partition topics:")
print(f"    1 process x 2 workers:   {one:.2f}s = {n / one:.0f} records/s")
print(f"    2 processes x 1 worker:  {two:.2f}s = {n / two:.0f} records/s")
print(f"    2x1 / 1x2: {one / two:.2f}")
print(f"(ii) node lookups of {sys.argv[6]} keys owned by process 1 (wrk, keep-alive):")
print(f"    to the owner directly:        {direct:.0f} req/s (mean latency {sys.argv[7]})")
print(f"    through process 0 (forwards): {fwd:.0f} req/s (mean latency {sys.argv[8]})")
print(f"    forwarded / direct: {fwd / direct:.2f}")
PY
