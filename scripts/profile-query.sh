#!/usr/bin/env bash
# Where `rdg serve` spends its time under wrk: perf samples of the server
# process (call graphs from DWARF) while wrk asks for edge lookups, as in
# scripts/bench-query.sh (run that first: it builds the state and the Lua
# scripts under target/bench-query/).
#   scripts/profile-query.sh [EVENTS] [SECONDS]
# RDG_BIN=PATH profiles that binary (build it with
# CARGO_PROFILE_RELEASE_DEBUG=line-tables-only for file:line frames).
# Writes target/bench-query/perf.data and prints the top symbols (self
# time) and the share of each thread; `perf report -i ... --children`
# shows inclusive time.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1600000}
secs=${2:-10}
work=${BENCH_DIR:-target/bench-query}
bin=${RDG_BIN:-target/release/rdg}
state="$work/state-$events"
[ -f "$state/ready" ] || { echo "profile-query: run scripts/bench-query.sh $events first" >&2; exit 1; }
"$bin" serve --state "$state" --listen 127.0.0.1:0 2>"$work/serve-profile.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/serve-profile.log" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "rdg serve did not start" >&2; exit 1; }
wrk -t2 -c32 -d3s -s "$work/edges.lua" "$url" >/dev/null # warm the cache
wrk -t2 -c64 -d"$((secs + 2))s" -s "$work/edges.lua" "$url" >"$work/profile-wrk.txt" &
load=$!
sleep 1
perf record -q -F 499 --call-graph dwarf -p "$server" -o "$work/perf.data" -- sleep "$secs" 2>/dev/null
wait "$load"
grep -E "Requests/sec" "$work/profile-wrk.txt"
perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
perf report -i "$work/perf.data" --no-children --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
