#!/usr/bin/env bash
# A local Kafka-compatible broker (tansu, in-memory storage) for rdg's demos
# and its real-broker tests. It listens on 127.0.0.1 only and keeps nothing
# after it stops.
#
#   scripts/broker.sh start  [PORT]   start in the background, wait until it accepts connections
#   scripts/broker.sh stop   [PORT]   stop the broker started on PORT
#   scripts/broker.sh status [PORT]   exit 0 if it runs
#
# PORT defaults to 9092. The pid file and log are under target/broker/.
# TANSU_BIN=PATH runs that tansu binary; TANSU_STORAGE=URL another storage
# engine than the in-memory one (e.g. sqlite://target/broker/tansu.db, for
# a tansu built with --features libsql).
# tansu is installed with cargo the first time (about 15 minutes on 2 cores;
# the binary stays in ~/.cargo/bin). Then, for example:
#   RDG_TEST_BROKERS=127.0.0.1:9092 cargo test --test kafka_source real_broker
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:-}
port=${2:-9092}
case "$port" in
  '' | *[!0-9]*) echo "broker.sh: PORT must be a number, not '$port'" >&2; exit 2 ;;
esac
dir=target/broker
pidfile=$dir/tansu-$port.pid
log=$dir/tansu-$port.log
# Seconds to wait for the port to open, and for the process to exit.
start_wait=${BROKER_START_WAIT:-30}
stop_wait=10

tansu_bin() {
  if [ -n "${TANSU_BIN:-}" ]; then
    echo "$TANSU_BIN"
  elif command -v tansu >/dev/null 2>&1; then
    command -v tansu
  elif [ -x "$HOME/.cargo/bin/tansu" ]; then
    echo "$HOME/.cargo/bin/tansu"
  fi
}

install_tansu() {
  if [ -n "$(tansu_bin)" ]; then
    return
  fi
  echo "broker.sh: installing tansu with cargo (about 15 minutes on 2 cores)..."
  # dynostore: without it tansu's memory storage engine refuses to start.
  cargo install tansu --locked --features dynostore
}

port_open() {
  # bash's /dev/tcp: succeeds if something accepts connections on the port.
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start() {
  if running; then
    echo "broker.sh: tansu already runs on 127.0.0.1:$port (pid $(cat "$pidfile"))"
    return
  fi
  if port_open; then
    echo "broker.sh: port $port is already in use by another process" >&2
    exit 1
  fi
  install_tansu
  mkdir -p "$dir"
  nohup "$(tansu_bin)" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "${TANSU_STORAGE:-memory://tansu/}" \
    >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq $((start_wait * 10))); do
    if ! running; then
      echo "broker.sh: tansu exited while starting; the end of $log:" >&2
      tail -n 20 "$log" >&2
      rm -f "$pidfile"
      exit 1
    fi
    if port_open; then
      echo "broker.sh: tansu runs on 127.0.0.1:$port (pid $(cat "$pidfile"), log $log)"
      return
    fi
    sleep 0.1
  done
  echo "broker.sh: tansu did not open port $port within ${start_wait} s; the end of $log:" >&2
  tail -n 20 "$log" >&2
  stop
  exit 1
}

stop() {
  if ! running; then
    echo "broker.sh: no tansu started by this script runs on port $port"
    rm -f "$pidfile"
    return
  fi
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq $((stop_wait * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      echo "broker.sh: stopped tansu (pid $pid)"
      return
    fi
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "broker.sh: tansu (pid $pid) did not stop within ${stop_wait} s; killed it"
}

status() {
  if running; then
    echo "broker.sh: tansu runs on 127.0.0.1:$port (pid $(cat "$pidfile"))"
  else
    echo "broker.sh: not running on port $port"
    exit 1
  fi
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: scripts/broker.sh start|stop|status [PORT]" >&2
    exit 2
    ;;
esac
