#!/usr/bin/env bash
# Soak: `rdg run` against a private tansu at a steady rate for MINUTES, with
# every node, edge and link of the definitions given RETENTION (default 15s
# of event time; `rdg produce --rate` stamps events with the wall clock, so
# records expire ~15 s after they arrive, continually; before 7e800ba the
# generator advanced event time ~1 s per event and the default was 2h). Every
# 10 s it samples rdg's resident memory (VmRSS), the state's disk use,
# the lag, the commits and the engine's write time per commit (from
# /metrics) into target/soak/soak.csv, then draws target/soak/soak.png
# (matplotlib in a venv under target/) and prints the slopes of RSS and
# disk over the second half of the run.
#   scripts/soak.sh [MINUTES]           (default 30)
#   SOAK_RATE=1000 RETENTION=1h RDG_ENGINE=sled scripts/soak.sh 10
#   SOAK_CACHE_MB=16 scripts/soak.sh 30   (the store's cache; default fjall 256)
#   RDG_BIN=/path/to/rdg scripts/soak.sh 30  (soak that build instead of building one)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-30}
rate=${SOAK_RATE:-500}
retention=${RETENTION:-15s}
engine=${RDG_ENGINE:-fjall}
cache_args=()
if [ -n "${SOAK_CACHE_MB:-}" ]; then cache_args=(--cache-mb "$SOAK_CACHE_MB"); fi
port=${SOAK_BROKER_PORT:-19095}
http=${SOAK_HTTP_PORT:-19096}
work=target/soak
bin=${RDG_BIN:-target/release/rdg}
# shellcheck source=scripts/lib/tansu.sh
. scripts/lib/tansu.sh
[ -n "${RDG_BIN:-}" ] || nice -n 10 cargo build --release --quiet
scripts/broker.sh stop "$port" >/dev/null 2>&1 || true
scripts/broker.sh start "$port"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/broker.sh stop "$port" >/dev/null || true
}
trap cleanup EXIT
rm -rf "$work" && mkdir -p "$work/dataflows"
# Every node, edge and identity link gets the retention (those that had
# none would otherwise live forever, and the live set, and with it memory,
# would grow with every new account the generator reaches).
for f in dataflows/*.toml; do
  sed -E -e '/^retention = /d' \
    -e "s/^(\[\[(nodes|edges|identity)\]\])\$/\1\nretention = \"$retention\"/" \
    "$f" > "$work/dataflows/$(basename "$f")"
done
"$bin" check --dataflows "$work/dataflows" >/dev/null
brokers="127.0.0.1:$port"
events=$(( rate * (minutes * 60 + 60) ))
echo "soak: $minutes min at $rate events/s (retention $retention, engine $engine, cache ${SOAK_CACHE_MB:-default} MiB), tansu on $brokers"

nice -n 10 "$bin" produce --dataflows "$work/dataflows" --brokers "$brokers" --events "$events" \
  --rate "$rate" --partitions 1 >/dev/null 2>"$work/produce.log" &
pids+=($!)
nice -n 10 "$bin" run --engine "$engine" "${cache_args[@]}" --dataflows "$work/dataflows" --state "$work/state" $(tansu_run_args "$bin") \
  --brokers "$brokers" --workers 2 --listen "127.0.0.1:$http" --status-interval 10 \
  >/dev/null 2>"$work/run.log" &
run=$!
pids+=($run)

echo "t_s,rss_mb,disk_mb,lag,commits,write_ms_per_commit" > "$work/soak.csv"
start=$(date +%s)
prev_commits=0; prev_write=0
while [ $(( $(date +%s) - start )) -lt $(( minutes * 60 )) ]; do
  sleep 10
  if ! kill -0 "$run" 2>/dev/null; then echo "soak: rdg run exited:"; tail "$work/run.log"; exit 1; fi
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$run/status")
  disk=$(du -sk "$work/state" | cut -f1)
  metrics=$(curl -s "http://127.0.0.1:$http/metrics" || true)
  read -r lag commits write < <(python3 -c '
import re, sys
text = sys.stdin.read()
def total(name):
    return sum(float(v) for v in re.findall(r"^" + name + r"(?:_total)?(?:\{[^}]*\})? ([0-9.e+-]+)$", text, re.M))
print(int(total("rdg_lag_messages")), int(total("rdg_commits")), total("rdg_store_write_seconds"))
' <<< "$metrics")
  per=$(python3 -c "d=$commits-$prev_commits; print(round(1000*($write-$prev_write)/d, 3) if d > 0 else '')")
  prev_commits=$commits; prev_write=$write
  t=$(( $(date +%s) - start ))
  echo "$t,$(( rss / 1024 )),$(( disk / 1024 )),$lag,$commits,$per" | tee -a "$work/soak.csv"
done
kill -TERM "$run"; wait "$run" || { echo "soak: rdg run did not stop cleanly"; tail "$work/run.log"; exit 1; }

venv=target/plot-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check matplotlib
fi
"$venv/bin/python" - "$work/soak.csv" "$work/soak.png" "$rate" "$retention" "$engine" <<'PY'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
t = [int(r["t_s"]) / 60 for r in rows]
def col(name):
    return [float(r[name]) if r[name] else float("nan") for r in rows]
def slope(xs, ys):
    pts = [(x, y) for x, y in zip(xs, ys) if y == y][len(xs) // 2:]
    n = len(pts)
    if n < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / n; my = sum(p[1] for p in pts) / n
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else float("nan")
fig, ax = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
for a, (name, label) in zip(ax, [("rss_mb", "RSS (MiB)"), ("disk_mb", "state on disk (MiB)"),
                                 ("lag", "lag (messages)"), ("write_ms_per_commit", "engine write per commit (ms)")]):
    a.plot(t, col(name)); a.set_ylabel(label); a.grid(True)
ax[-1].set_xlabel("minutes")
fig.suptitle(f"rdg run soak: {sys.argv[3]} events/s, retention {sys.argv[4]}, {sys.argv[5]}")
fig.tight_layout(); fig.savefig(sys.argv[2], dpi=80)
rss = col("rss_mb"); disk = col("disk_mb")
print(f"soak: {len(rows)} samples; RSS {min(rss):.0f}-{max(rss):.0f} MiB, slope over the second half {slope(t, rss) * 60:.1f} MiB/h; "
      f"disk {min(disk):.0f}-{max(disk):.0f} MiB, slope {slope(t, disk) * 60:.1f} MiB/h; plot {sys.argv[2]}")
PY
