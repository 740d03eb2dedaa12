#!/usr/bin/env bash
# Produce-to-queryable latency against a real broker (tansu, loopback): a
# live `rdg run --listen` with W workers; scripts/latency_probe.py sends
# playback events at each RATE with kafka-python and times, for about 25
# events a second, broker acknowledgement -> its profile node readable over
# HTTP (one kept-alive connection). PROBE_TRACE=FILE keeps each probe.
#   scripts/bench-latency.sh [WORKERS] [SECONDS] [RATE...]
# BENCH_LOAD_RATE=N adds a steady background load while each probe runs:
# `rdg produce --rate N` sends generated events to every topic (the probe's
# own events come on top), so latency is measured under N events/s; the
# load batches 50 ms (`rdg produce --rate`'s linger.ms), the probe 20 ms
# (PROBE_LINGER_MS), and polls a probe not yet readable every 1 ms
# (PROBE_POLL_MS); BENCH_LOAD_ARGS adds arguments to that `rdg produce`
# (e.g. "-X linger.ms=5", librdkafka's default and the load before 5 December).
# Beside each probe, scripts/read_probe.py times lookups of other nodes
# (one connection, a read every ~5 ms): how long a query waits while rdg
# ingests.
# After each probe: the commits rdg made meanwhile, the share of the time
# its writer spent in them, their durations, the playback records' age at
# commit, and how long rdg's live times took to reach the writer and then
# their commit (from /metrics; bucket bounds): where the latency arose.
# RDG_BIN=PATH runs that binary instead of building target/release/rdg.
# BENCH_CPU=1 also prints, over each probe, the CPU seconds of each process
# on the machine's cores (rdg run, the broker, the load, the two probes),
# each rdg thread's seconds on a core and waiting in the run queue for one
# (/proc/PID/task/*/schedstat), and rdg's commits, events and keys written
# (/metrics): where the cores went while the latency was measured.
# A probe the broker acknowledged that rdg never made readable within
# PROBE_TIMEOUT_S (120) is named, and the script exits non-zero at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-2}
seconds=${2:-15}
shift $(( $# >= 2 ? 2 : $# ))
rates=${*:-1000 5000 10000}
port=${BENCH_BROKER_PORT:-19095}
api_port=${BENCH_API_PORT:-17878}
work=target/bench-latency
python3 -c 'import kafka' 2>/dev/null || python3 -m pip install --quiet kafka-python
if [ -z "${RDG_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${RDG_BIN:-target/release/rdg}
# shellcheck source=scripts/lib/tansu.sh
. scripts/lib/tansu.sh
scripts/broker.sh stop "$port" >/dev/null 2>&1 || true
scripts/broker.sh start "$port"
rm -rf "$work" && mkdir -p "$work"
"$bin" produce --brokers "127.0.0.1:$port" --events 0 --partitions 4 2>/dev/null
"$bin" run --workers "$workers" --state "$work/state" --brokers "127.0.0.1:$port" \
  --listen "127.0.0.1:$api_port" --status-interval 0 $(tansu_run_args "$bin") ${RDG_RUN_ARGS:-} 2> "$work/run.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; scripts/broker.sh stop "$port" || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$api_port/readyz" >/dev/null && break; sleep 0.2; done
echo "machine: $(nproc) cores; rdg run --workers $workers; broker tansu (memory) on loopback"
load_rate=${BENCH_LOAD_RATE:-0}
# cpu_snapshot FILE LABEL=PID...: "process LABEL TICKS" per process (rdg run
# and the broker always), "thread NAME TICKS RUN_NS WAIT_NS" per rdg thread,
# and rdg's metric totals.
cpu_snapshot() {
  local out=$1 p t
  shift
  {
    for p in "rdg_run=$pid" "broker=$(cat "target/broker/tansu-$port.pid")" "$@"; do
      [ -r "/proc/${p#*=}/stat" ] || continue
      echo "process ${p%%=*} $(awk '{print $14 + $15}' "/proc/${p#*=}/stat")"
    done
    for t in /proc/"$pid"/task/*; do
      # A short-lived thread may be gone between the listing and the reads.
      { name=$(tr ' ' _ <"$t/comm") && ticks=$(awk '{print $14 + $15}' "$t/stat") &&
        sched=$(cut -d' ' -f1,2 "$t/schedstat"); } 2>/dev/null || continue
      echo "thread $name#${t##*/} $ticks $sched"
    done
    curl -sf "127.0.0.1:$api_port/metrics" | grep -E '^rdg_(commits|events|store_keys_written)_total' | sed 's/^/metric /'
  } >"$out"
}
# cpu_report BEFORE AFTER BEGAN ENDED: the differences, largest first.
cpu_report() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import collections, os, sys
hz = os.sysconf("SC_CLK_TCK")
def read(path):
    rows = {}
    for line in open(path):
        kind, name, *vals = line.split()
        key = (kind, name)
        v = [float(x) for x in vals]
        rows[key] = [a + b for a, b in zip(rows[key], v)] if key in rows else v
    return rows
a, b = read(sys.argv[1]), read(sys.argv[2])
secs = float(sys.argv[4]) - float(sys.argv[3])
d = {k: [y - x for x, y in zip(a[k], v)] for k, v in b.items() if k in a}
print(f"CPU over the probe ({secs:.1f} s; {os.cpu_count()} cores = {secs * os.cpu_count():.0f} CPU-s):")
for (kind, name), v in sorted(d.items(), key=lambda kv: -kv[1][0]):
    if kind == "process":
        print(f"  {name:<20} {v[0] / hz:6.2f} CPU-s")
threads = collections.defaultdict(lambda: [0.0, 0.0])
for (kind, name), v in d.items():
    if kind == "thread":
        threads[name.split("#")[0]][0] += v[1] / 1e9
        threads[name.split("#")[0]][1] += v[2] / 1e9
print("  rdg's threads: seconds on a core / waiting for one")
for name, (run, wait) in sorted(threads.items(), key=lambda kv: -kv[1][0]):
    if run >= 0.05:
        print(f"    {name:<18} {run:6.2f} / {wait:6.2f}")
metrics = collections.Counter()
for (kind, name), v in d.items():
    if kind == "metric":
        metrics[name.split("{")[0]] += v[0]
print("  " + ", ".join(f"{k.removeprefix('rdg_').removesuffix('_total')} {v:.0f}" for k, v in sorted(metrics.items())))
PY
}
# commit_report BEFORE AFTER BEGAN ENDED: from two scrapes of /metrics, the
# commits in between, how much of the time the store's writer spent in them,
# and (bucket upper bounds) the commits' durations and the playback
# records' age when committed: where a probe's latency arises.
commit_report() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import re, sys
def read(path):
    rows = {}
    for line in open(path):
        m = re.match(r'^(rdg_(?:commit_duration_seconds|record_age_at_commit_seconds|live_time_dataflow_seconds|live_time_commit_wait_seconds)_(?:bucket|sum|count))(\{[^}]*\})? (\S+)$', line)
        if m and ('dataflow=' not in (m.group(2) or '') or 'dataflow="playback"' in m.group(2)):
            le = re.search(r'le="([^"]+)"', m.group(2) or '')
            rows[(m.group(1), le.group(1) if le else None)] = float(m.group(3))
    return rows
a, b = read(sys.argv[1]), read(sys.argv[2])
d = {k: v - a.get(k, 0.0) for k, v in b.items()}
def quantile(name, q):
    buckets = sorted(((float(le), n) for (k, le), n in d.items() if k == name + "_bucket" and le), key=lambda x: x[0])
    total = buckets[-1][1] if buckets else 0
    for le, n in buckets:
        if total and n >= q * total:
            return f"{le * 1e3:g}" if le != float("inf") else "inf"
    return "-"
commits = d.get(("rdg_commit_duration_seconds_count", None), 0)
busy = d.get(("rdg_commit_duration_seconds_sum", None), 0)
secs = float(sys.argv[4]) - float(sys.argv[3])
print(f"commits over the probe ({secs:.1f} s): {commits:.0f}, the writer in them {busy:.1f} s ({100 * busy / secs:.0f}%); "
      f"duration p50 <= {quantile('rdg_commit_duration_seconds', 0.5)} ms, p99 <= {quantile('rdg_commit_duration_seconds', 0.99)} ms; "
      f"playback records' age at commit p50 <= {quantile('rdg_record_age_at_commit_seconds', 0.5)} ms, "
      f"p99 <= {quantile('rdg_record_age_at_commit_seconds', 0.99)} ms")
print(f"  live times: opening -> last changes at the writer p50 <= {quantile('rdg_live_time_dataflow_seconds', 0.5)} ms, "
      f"p99 <= {quantile('rdg_live_time_dataflow_seconds', 0.99)} ms; -> their commit's start "
      f"p50 <= {quantile('rdg_live_time_commit_wait_seconds', 0.5)} ms, p99 <= {quantile('rdg_live_time_commit_wait_seconds', 0.99)} ms")
PY
}
for rate in $rates; do
  load=
  if [ "$load_rate" -gt 0 ]; then
    # shellcheck disable=SC2086 # BENCH_LOAD_ARGS is a list of arguments
    "$bin" produce --brokers "127.0.0.1:$port" --rate "$load_rate" ${BENCH_LOAD_ARGS:-} \
      --events $(( load_rate * (seconds + 10) )) --seed "$rate" 2>>"$work/produce.log" &
    load=$!
    sleep 3
    echo "background load: rdg produce --rate $load_rate"
  fi
  # Lookups of other nodes while the probe runs (scripts/read_probe.py).
  python3 scripts/read_probe.py "http://127.0.0.1:$api_port" "$((seconds > 4 ? seconds - 4 : 1))" 2 &
  reads=$!
  curl -sf "127.0.0.1:$api_port/metrics" >"$work/metrics-start" || true
  probe_began=$(date +%s.%N)
  if [ -n "${BENCH_CPU:-}" ]; then
    python3 scripts/latency_probe.py "127.0.0.1:$port" playback "http://127.0.0.1:$api_port" "$rate" "$seconds" &
    probe=$!
    sleep 1
    # From the probe's first second on (its start-up is not counted).
    procs=("read_probe=$reads" "latency_probe=$probe")
    [ -n "$load" ] && procs+=("load=$load")
    cpu_snapshot "$work/cpu-start" "${procs[@]}"
    began=$(date +%s.%N)
    # Ends while the read probe (seconds - 4 long) still runs.
    sleep "$(( seconds > 7 ? seconds - 6 : 1 ))"
    cpu_snapshot "$work/cpu-after" "${procs[@]}"
    ended=$(date +%s.%N)
    # A probe never readable fails the script, after the report.
    wait "$probe" || status=$?
    cpu_report "$work/cpu-start" "$work/cpu-after" "$began" "$ended"
  else
    python3 scripts/latency_probe.py "127.0.0.1:$port" playback "http://127.0.0.1:$api_port" "$rate" "$seconds" ||
      status=$?
  fi
  curl -sf "127.0.0.1:$api_port/metrics" >"$work/metrics-after" || true
  commit_report "$work/metrics-start" "$work/metrics-after" "$probe_began" "$(date +%s.%N)" || true
  wait "$reads" || true
  if [ -n "$load" ]; then
    kill "$load" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
  fi
done
exit "${status:-0}"
