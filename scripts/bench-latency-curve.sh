#!/usr/bin/env bash
# Latency against load: runs scripts/bench-latency.sh (BENCH_CPU=1) once per
# background load and prints one row per load: the rate rdg ingested, the
# probe's p50/p90/p99 (produce -> queryable), rdg's CPU (cores, and
# microseconds per event), its commits a second and keys written per event.
# The highest load whose p99 stays under 100 ms is what the issue's 50 000
# events/s row asks of; the rows below it show where the CPU goes as the
# load grows (a live run writes ~8 keys per event, see docs/performance.md).
#   scripts/bench-latency-curve.sh [WORKERS] [SECONDS] [LOAD...]
# Defaults: 2 workers, 15 s per probe, loads 10000 20000 30000 40000 50000.
# PROBE_RATE (default 500) is the probe's own events/s on top of each load;
# CURVE_ROUNDS=N runs the loads N times over (rows in the order run: the
# host's speed drifts, so compare rows of one round). RDG_BIN as in
# bench-latency.sh; each run's full output is kept in target/bench-latency-curve/.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-2}
seconds=${2:-15}
shift $(( $# >= 2 ? 2 : $# ))
loads=${*:-10000 20000 30000 40000 50000}
out=target/bench-latency-curve
mkdir -p "$out"
if [ -z "${RDG_BIN:-}" ]; then cargo build --release --quiet; fi
export RDG_BIN=${RDG_BIN:-target/release/rdg}
echo "machine: $(nproc) cores; rdg run --workers $workers; $(date -u +%FT%TZ); $RDG_BIN"
printf '%-5s %7s %9s %9s %9s %9s %6s %8s %9s %8s %s\n' \
  round load ingested p50_ms p90_ms p99_ms cores us/event commits/s keys/ev "p99<100ms"
for round in $(seq "${CURVE_ROUNDS:-1}"); do
  for load in $loads; do
    log="$out/r$round-load-$load.txt"
    # A probe never readable (an event lost) fails bench-latency.sh: say so
    # and go on with the row and the next load.
    BENCH_CPU=1 BENCH_LOAD_RATE=$load scripts/bench-latency.sh "$workers" "$seconds" "${PROBE_RATE:-500}" >"$log" 2>&1 ||
      echo "load $load: bench-latency.sh failed: $(grep -h 'not readable' "$log" || echo "see $log")"
    python3 - "$log" "$round" "$load" <<'PY' || true
import re, sys
text = open(sys.argv[1]).read()
def num(pattern):
    m = re.search(pattern, text)
    if not m:
        sys.exit(f"bench-latency-curve: no '{pattern}' in {sys.argv[1]}")
    return float(m.group(1))
secs = num(r"CPU over the probe \(([\d.]+) s;")
cpu = num(r"rdg_run\s+([\d.]+) CPU-s")
events = num(r"events (\d+)")
commits = num(r"commits (\d+)")
keys = num(r"store_keys_written (\d+)")
probes = next((l for l in text.splitlines() if " probes: " in l), "")
p = {}
for q in ("p50", "p90", "p99"):
    m = re.search(rf"{q} ([\d.]+) ms", probes)
    if not m:
        sys.exit(f"bench-latency-curve: no probe {q} in {sys.argv[1]}")
    p[q] = float(m.group(1))
rate = events / secs
print(f"{sys.argv[2]:<5} {int(sys.argv[3]):7d} {rate:9.0f} {p['p50']:9.1f} {p['p90']:9.1f} {p['p99']:9.1f} "
      f"{cpu / secs:6.2f} {cpu / events * 1e6 if events else 0:8.1f} {commits / secs:9.1f} "
      f"{keys / events if events else 0:8.2f} {'met' if p['p99'] < 100 else 'missed'}")
PY
  done
done
