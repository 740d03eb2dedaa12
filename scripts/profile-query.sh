#!/usr/bin/env bash
# Where `rdg serve` spends its time under wrk: perf samples of the server
# process (call graphs from DWARF) while wrk asks for edge lookups, as in
# scripts/bench-query.sh (run that first: it builds the state and the Lua
# scripts under target/bench-query/).
#   scripts/profile-query.sh [EVENTS] [SECONDS]
# RDG_BIN=PATH profiles that binary (build it with
# CARGO_PROFILE_RELEASE_DEBUG=line-tables-only for file:line frames).
# Writes target/bench-query/perf.data and prints where the samples fall: each
# sample is given to the innermost frame of its stack that names one of a
# few parts (kernel socket calls, the store, JSON, input checks, metrics,
# axum, hyper...); then the top symbols by self time. `perf report -i ...
# --children` shows inclusive time.
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
perf script -i "$work/perf.data" -F comm,ip,sym 2>/dev/null | python3 -c '
import collections, re, sys
samples, cur = [], []
for line in sys.stdin:
    if not line.strip():
        if cur: samples.append(cur)
        cur = []
    elif not line.startswith((" ", "\t")):
        cur = [line.strip()]
    else:
        parts = line.strip().split(None, 1)
        cur.append(parts[-1])
if cur: samples.append(cur)
parts = [
    ("kernel: socket write (writev; loopback TCP to wrk)", ["writev"]),
    ("kernel: socket read", ["recvfrom", "tcp_recvmsg", "sys_read", "ksys_read", "sock_read", "__libc_recv"]),
    ("kernel: epoll wait", ["epoll_wait", "do_epoll"]),
    ("store read (sled range scan, merging contributions)", ["rdg::store::", "sled::"]),
    ("answer JSON encoding", ["respond::Answer", "serde_json::ser", "serde_core::ser"]),
    ("freshness headers", ["query::fresh"]),
    ("input checks (path decoding, parameters, identifier)", ["query::params", "axum::extract::path", "percent_encoding", "PathDeserializer", "axum::extract::raw"]),
    ("metrics (request counter, latency histogram)", ["query::metrics", "prometheus_client"]),
    ("request timeout timer", ["tokio::time", "TimerEntry", "time::wheel"]),
    ("rdg handler and guard (the rest)", ["rdg::query::"]),
    ("axum routing, middleware and extractors", ["axum::", "matchit", "tower::"]),
    ("hyper: parse request", ["::parse", "httparse"]),
    ("hyper: encode response", ["::encode", "Http1Transaction"]),
    ("hyper/tokio: connection and task machinery", ["hyper::", "hyper_util::", "tokio::"]),
]
total = len(samples)
got = collections.Counter()
leaf_alloc = 0
for s in samples:
    frames = s[1:]
    if frames and any(k in frames[0] for k in ["mi_", "malloc", "free", "memcpy", "memmove"]):
        leaf_alloc += 1
    name = "other"
    for f in frames:
        hit = next((n for n, keys in parts if any(k in f for k in keys)), None)
        if hit:
            name = hit
            break
    got[name] += 1
print(f"{total} samples of rdg serve")
for name, v in got.most_common():
    print(f"{v * 100 / total:5.1f}%  {name}")
print(f"(the allocator or memcpy as the innermost frame, within the above: {leaf_alloc * 100 / total:.1f}%)")
'
perf report -i "$work/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -25
