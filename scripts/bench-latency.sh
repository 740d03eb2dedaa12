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
# (PROBE_LINGER_MS); BENCH_LOAD_ARGS adds arguments to that `rdg produce`
# (e.g. "-X linger.ms=5", librdkafka's default and the load before 5 December).
# Beside each probe, scripts/read_probe.py times lookups of other nodes
# (one connection, a read every ~5 ms): how long a query waits while rdg
# ingests.
# RDG_BIN=PATH runs that binary instead of building target/release/rdg.
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
scripts/broker.sh stop "$port" >/dev/null 2>&1 || true
scripts/broker.sh start "$port"
rm -rf "$work" && mkdir -p "$work"
"$bin" produce --brokers "127.0.0.1:$port" --events 0 --partitions 4 2>/dev/null
"$bin" run --workers "$workers" --state "$work/state" --brokers "127.0.0.1:$port" \
  --listen "127.0.0.1:$api_port" --status-interval 0 ${RDG_RUN_ARGS:-} 2> "$work/run.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; scripts/broker.sh stop "$port" || true' EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$api_port/readyz" >/dev/null && break; sleep 0.2; done
echo "machine: $(nproc) cores; rdg run --workers $workers; broker tansu (memory) on loopback"
load_rate=${BENCH_LOAD_RATE:-0}
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
  python3 scripts/latency_probe.py "127.0.0.1:$port" playback "http://127.0.0.1:$api_port" "$rate" "$seconds"
  wait "$reads" || true
  if [ -n "$load" ]; then
    kill "$load" 2>/dev/null || true
    wait "$load" 2>/dev/null || true
  fi
done
