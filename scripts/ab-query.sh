#!/usr/bin/env bash
# Edge lookups of two builds of rdg on the same state, measured in
# alternation (A, B, A, B, ...) so that other load on the machine falls on
# both alike. Each run reports the rate wrk reached and the server's CPU
# time per request (user + system, from /proc: steadier than the rate when
# other programs share the cores), with the load average before it; then
# the median of each build. Needs the state and Lua scripts of
# scripts/bench-query.sh.
#   scripts/ab-query.sh BIN_A BIN_B [EVENTS] [ROUNDS] [SECONDS] [CONNECTIONS]
# Extra `rdg serve` flags: RDG_SERVE_ARGS (e.g. "--query-threads 1").
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1; b=$2
events=${3:-1600000}; rounds=${4:-5}; secs=${5:-8}; conns=${6:-64}
work=${BENCH_DIR:-target/bench-query}
state="$work/state-$events"
[ -f "$state/ready" ] || { echo "ab-query: run scripts/bench-query.sh $events first" >&2; exit 1; }
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in ticks
run() { # binary -> "req/s cpu_us_per_request"
  "$1" serve --state "$state" --listen 127.0.0.1:0 ${RDG_SERVE_ARGS:-} 2>"$work/serve-ab.log" &
  local server=$! url=""
  for _ in $(seq 1 600); do
    url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/serve-ab.log" | head -1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "rdg serve did not start: $(cat "$work/serve-ab.log")" >&2; exit 1; }
  wrk -t2 -c32 -d5s -s "$work/edges.lua" "$url" >/dev/null # warm sled's cache
  local before out after
  before=$(cpu "$server")
  out=$(wrk -t2 -c"$conns" -d"${secs}s" -s "$work/edges.lua" "$url")
  after=$(cpu "$server")
  kill "$server"; wait "$server" 2>/dev/null || true
  echo "$out" | grep -q "Non-2xx" && { echo "ab-query: errors: $out" >&2; exit 1; }
  local requests rps
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  [ -n "$rps" ] || { echo "ab-query: wrk said: $out" >&2; exit 1; }
  python3 -c "import sys; print(f'{float(sys.argv[1]):.0f} {(int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4]) * 1e6 / int(sys.argv[5]):.1f}')" \
    "$rps" "$before" "$after" "$ticks" "$requests"
}
: > "$work/ab.txt"
for r in $(seq 1 "$rounds"); do
  for which in A B; do
    bin=$a; [ "$which" = B ] && bin=$b
    load=$(cut -d' ' -f1 /proc/loadavg)
    set -- $(run "$bin")
    echo "round $r $which $1 req/s, $2 µs CPU/request (load $load)" | tee -a "$work/ab.txt"
  done
done
python3 - "$work/ab.txt" "$a" "$b" <<'PY'
import statistics, sys
runs = [l.split() for l in open(sys.argv[1])]
for which, name in (("A", sys.argv[2]), ("B", sys.argv[3])):
    rate = [float(x[3]) for x in runs if x[2] == which]
    cpu = [float(x[5]) for x in runs if x[2] == which]
    print(f"{which} {name}: median {statistics.median(rate):,.0f} req/s (min {min(rate):,.0f}, max {max(rate):,.0f}); "
          f"median {statistics.median(cpu):.1f} µs server CPU per request ({len(rate)} runs)")
PY
