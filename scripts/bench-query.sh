#!/usr/bin/env bash
# Query service benchmark over HTTP with wrk (Debian's `wrk`; installed with
# apt-get when missing and run as root), on a generated state:
#   scripts/bench-query.sh [EVENTS] [SECONDS]
# 1. `rdg gen --events EVENTS` + `rdg replay` into target/bench-query/
#    (kept and reused for the same EVENTS),
# 2. `rdg serve` (release build) on a loopback port,
# 3. edge lookups (GET /v1/edges/watched/profile/ID?limit=10, random
#    profiles): the most wrk reaches, then the latency at half that rate,
# 4. 2-hop traversals (account -has_profile-> profile -watched-> title,
#    default limits): throughput and latency.
# wrk runs on the same 2 cores as the server, so the numbers are a floor.
# RDG_BIN=PATH serves with that binary instead of building
# target/release/rdg (to compare two builds on the same state).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-400000}
secs=${2:-15}
work=${BENCH_DIR:-target/bench-query}
mkdir -p "$work"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  fi
  command -v wrk >/dev/null || { echo "bench-query: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
fi
bin=${RDG_BIN:-target/release/rdg}
[ -n "${RDG_BIN:-}" ] || cargo build --release --quiet
state="$work/state-$events"
if [ ! -f "$state/ready" ]; then
  rm -rf "$state"
  [ -f "$work/events-$events/playback.jsonl" ] ||
    "$bin" gen --events "$events" --seed 7 --out "$work/events-$events" >/dev/null
  echo "replaying $events events into $state"
  "$bin" replay --workers 2 --state "$state" --json \
    "$work/events-$events"/playback.jsonl "$work/events-$events"/gaming.jsonl \
    "$work/events-$events"/login.jsonl | tee "$work/replay-$events.json"
  # Identifiers to ask for: profiles with watched edges, accounts with profiles.
  "$bin" export --state "$state" | python3 -c '
import json, sys
profiles, accounts = set(), set()
for line in sys.stdin:
    if not line.startswith("{\"ns\":\"edge\""):
        continue
    e = json.loads(line)
    if e["type"] == "watched":
        profiles.add(e["from"].split(":", 1)[1])
    elif e["type"] == "has_profile":
        accounts.add(e["from"].split(":", 1)[1])
def lua(name, ids):
    ids = sorted(ids)[:50000]
    return name + " = {" + ",".join(json.dumps(i) for i in ids) + "}\n"
open(sys.argv[1], "w").write(lua("profiles", profiles) + lua("accounts", accounts))
' "$work/ids-$events.lua"
  touch "$state/ready"
fi
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("state: %d live edges, %d nodes, %d identifiers (%d events)" % (s["edges"], s["nodes"], s["identifiers"], s["events"]))' \
  "$work/replay-$events.json"

cat >"$work/edges.lua" <<EOF
dofile("$work/ids-$events.lua")
local n = 0
request = function()
  n = n + 1
  local id = profiles[(n * 7919) % #profiles + 1]
  return wrk.format("GET", "/v1/edges/watched/profile/" .. id .. "?limit=10")
end
EOF
# The same requests, each connection pausing DELAY ms after each answer.
cat >"$work/edges-paced.lua" <<EOF
dofile("$work/edges.lua")
delay = function() return tonumber(os.getenv("DELAY_MS")) end
EOF
cat >"$work/traverse.lua" <<EOF
dofile("$work/ids-$events.lua")
local n = 0
request = function()
  n = n + 1
  local id = accounts[(n * 7919) % #accounts + 1]
  local body = '{"start":"account:' .. id .. '","hops":[{"edge_type":"has_profile"},{"edge_type":"watched"}]}'
  return wrk.format("POST", "/v1/traverse", {["Content-Type"] = "application/json"}, body)
end
EOF

"$bin" serve --state "$state" --listen 127.0.0.1:0 2>"$work/serve.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/serve.log" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { echo "rdg serve did not start: $(cat "$work/serve.log")" >&2; exit 1; }
echo "machine: $(nproc) cores; server: $url (2 worker threads); wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)"

summary() { # label file
  python3 - "$1" "$2" <<'PY'
import re, sys
label, text = sys.argv[1], open(sys.argv[2]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
pct = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errs = re.search(r"Socket errors: (.*)", text)
print(f"{label}: {rps:,.0f} req/s; latency p50 {pct['50']:.3f} ms, p90 {pct['90']:.3f} ms, p99 {pct['99']:.3f} ms"
      + (f"; NON-2xx {bad.group(1)}" if bad else "") + (f"; socket errors {errs.group(1)}" if errs else ""))
PY
}

wrk -t2 -c32 -d3s -s "$work/edges.lua" "$url" >/dev/null # warm the cache
wrk -t2 -c64 -d"${secs}s" --latency -s "$work/edges.lua" "$url" >"$work/edges-max.txt"
summary "edge lookups, max (wrk -t2 -c64)" "$work/edges-max.txt"
max=$(grep -o 'Requests/sec:[ ]*[0-9.]*' "$work/edges-max.txt" | grep -o '[0-9.]*$')
# Half that rate: each connection pauses 2 ms after each answer; the number
# of connections is calibrated by a short run so the rate is max / 2.
conns=$(python3 -c "print(max(1, round($max / 2 * 0.002)))")
DELAY_MS=2 wrk -t2 -c"$conns" -d3s -s "$work/edges-paced.lua" "$url" >"$work/edges-calibrate.txt"
got=$(grep -o 'Requests/sec:[ ]*[0-9.]*' "$work/edges-calibrate.txt" | grep -o '[0-9.]*$')
conns=$(python3 -c "print(max(1, round($conns * $max / 2 / max($got, 1))))")
DELAY_MS=2 wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$work/edges-paced.lua" "$url" >"$work/edges-half.txt"
summary "edge lookups, ~half load (wrk -t2 -c$conns, 2 ms pause)" "$work/edges-half.txt"
wrk -t2 -c16 -d"${secs}s" --latency -s "$work/traverse.lua" "$url" >"$work/traverse-max.txt"
summary "2-hop traversals, max (wrk -t2 -c16)" "$work/traverse-max.txt"
wrk -t1 -c4 -d"${secs}s" --latency -s "$work/traverse.lua" "$url" >"$work/traverse-c4.txt"
summary "2-hop traversals, 4 connections" "$work/traverse-c4.txt"
