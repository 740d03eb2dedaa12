#!/usr/bin/env bash
# The dataflow alone (benches/dataflow: no store) for two or more builds,
# one after the other, ROUNDS times, on the same generated events. Prints
# each run's rate, stage seconds and CPU seconds, then per build the mean
# of each stage's share of the run's worker time: a change to one stage
# shows against the other stages of the same runs, which this host's
# speed (±15–20% between runs of one binary) moves alike.
# Build each bench binary with `cargo bench --bench dataflow --no-run` at
# the commit to compare and copy the executable it names.
#   scripts/ab-dataflow.sh EVENTS ROUNDS BENCH_A BENCH_B [BENCH...]
set -euo pipefail
events=$1; rounds=$2; shift 2
[ $# -ge 2 ] || { echo "usage: scripts/ab-dataflow.sh EVENTS ROUNDS BENCH_A BENCH_B [BENCH...]" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores; events=$events rounds=$rounds; load $(cut -d' ' -f1 /proc/loadavg)"
for round in $(seq 1 "$rounds"); do
  i=0
  for bench in "$@"; do
    i=$((i + 1))
    /usr/bin/time -f "cpu %U %S" "$bench" "$events" 2 > "$out/run.txt" 2>&1
    python3 - "$out/run.txt" "$out/runs-$i.txt" "$bench" "$round" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rate = re.search(r"([0-9]+) events/s", text)
stages = re.search(r"decode ([0-9.]+), fold ([0-9.]+), identity ([0-9.]+), collect ([0-9.]+)", text)
cpu = re.search(r"cpu ([0-9.]+) ([0-9.]+)", text)
if not (rate and stages and cpu):
    sys.exit(f"{sys.argv[3]}: unexpected output:\n{text}")
s = [float(x) for x in stages.groups()]
print(f"round {sys.argv[4]} {sys.argv[3]}: {rate.group(1)} events/s, decode {s[0]:.2f} fold {s[1]:.2f} "
      f"identity {s[2]:.2f} collect {s[3]:.2f} s, {float(cpu.group(1)) + float(cpu.group(2)):.1f} CPU-s")
with open(sys.argv[2], "a") as f:
    f.write(" ".join(str(x) for x in s) + "\n")
PY
  done
done
i=0
for bench in "$@"; do
  i=$((i + 1))
  python3 - "$out/runs-$i.txt" "$bench" <<'PY'
import sys
runs = [[float(x) for x in l.split()] for l in open(sys.argv[1])]
shares = [[x / sum(r) for x in r] for r in runs]
mean = [sum(c) / len(c) for c in zip(*shares)]
spread = [max(c) - min(c) for c in zip(*shares)]
names = ["decode", "fold", "identity", "collect"]
print(f"{sys.argv[2]}: share of worker time (mean, spread over {len(runs)} runs): "
      + ", ".join(f"{n} {m:.1%} ±{d / 2:.1%}" for n, m, d in zip(names, mean, spread)))
PY
done
