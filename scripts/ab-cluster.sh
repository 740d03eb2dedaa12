#!/usr/bin/env bash
# Forwarded node lookups of two builds of rdg, measured in alternation
# (A, B, A, B, ...) on the 2 × 1 cluster states that scripts/bench-cluster.sh
# left in target/bench-cluster (run it first, with the same EVENTS): the
# broker is started again and given the same events, so each process
# resumes at its stored offsets with nothing to read and only serves. Each
# round: the keys process 1 owns, asked of process 1 (direct) and of
# process 0 (which forwards them), with wrk; then the median of each build.
#   scripts/ab-cluster.sh BIN_A BIN_B [EVENTS] [ROUNDS] [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1; b=$2
events=${3:-200000}; rounds=${4:-3}; secs=${5:-10}; conns=${6:-16}
port=${BENCH_BROKER_PORT:-19094}
work=target/bench-cluster
[ -f "$work/keys.lua" ] || { echo "ab-cluster: run scripts/bench-cluster.sh $events first" >&2; exit 1; }
http_base=${RDG_CLUSTER_HTTP_BASE_PORT:-24200}
p0=http://127.0.0.1:$http_base
p1=http://127.0.0.1:$((http_base + 1))
scripts/broker.sh stop "$port" >/dev/null 2>&1 || true
scripts/broker.sh start "$port"
cleanup() {
  scripts/cluster.sh stop "$work/cluster" >/dev/null 2>&1 || true
  scripts/broker.sh stop "$port" || true
}
trap cleanup EXIT
"$a" produce --brokers "127.0.0.1:$port" --events "$events" --seed 7 --partitions 4 >/dev/null 2>&1
rate() { # url -> req/s
  wrk -t2 -c"$conns" -d"${secs}s" -s "$work/keys.lua" "$1" | awk '/Requests\/sec/ {print $2}'
}
: > "$work/ab.txt"
for r in $(seq 1 "$rounds"); do
  for which in A B; do
    bin=$a; [ "$which" = B ] && bin=$b
    RDG_BIN=$bin scripts/cluster.sh start 2 1 "$work/cluster" --brokers "127.0.0.1:$port" --status-interval 0 >/dev/null
    for _ in $(seq 1 600); do
      curl -sf -o /dev/null "$p0/readyz" && curl -sf -o /dev/null "$p1/readyz" && break
      sleep 0.1
    done
    head -n 20 "$work/keys.txt" | while read -r k; do curl -sf -o /dev/null "$p0$k"; done
    load=$(cut -d' ' -f1 /proc/loadavg)
    direct=$(rate "$p1")
    forwarded=$(rate "$p0")
    scripts/cluster.sh stop "$work/cluster" >/dev/null
    echo "round $r $which direct $direct forwarded $forwarded (load $load)" | tee -a "$work/ab.txt"
  done
done
python3 - "$work/ab.txt" "$a" "$b" <<'PY'
import statistics, sys
runs = [l.split() for l in open(sys.argv[1])]
for which, name in (("A", sys.argv[2]), ("B", sys.argv[3])):
    d = [float(x[4]) for x in runs if x[2] == which]
    f = [float(x[6]) for x in runs if x[2] == which]
    print(f"{which} {name}: forwarded median {statistics.median(f):,.0f} req/s (min {min(f):,.0f}, max {max(f):,.0f}); "
          f"direct median {statistics.median(d):,.0f}; forwarded/direct {statistics.median(f) / statistics.median(d):.2f}")
PY
