#!/usr/bin/env bash
# Runs an rdg cluster of N processes × W workers on this machine.
#   scripts/cluster.sh start N W STATE_DIR [rdg run options...]
#   scripts/cluster.sh stop STATE_DIR
# Writes STATE_DIR/hosts (127.0.0.1 ports from $RDG_CLUSTER_BASE_PORT, default
# 24100) and STATE_DIR/http-hosts (the query API of each process, ports from
# $RDG_CLUSTER_HTTP_BASE_PORT, default 24200), starts process I with
# --state STATE_DIR/process-I --listen 127.0.0.1:<its port> --http-hosts
# STATE_DIR/http-hosts (so every process answers queries for the whole
# graph), logs to STATE_DIR/process-I.log, pids in STATE_DIR/process-I.pid.
# `stop` sends SIGTERM to every process (each commits what is complete) and
# waits.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-}
case "$cmd" in
  start)
    n=$2; w=$3; dir=$4; shift 4
    base=${RDG_CLUSTER_BASE_PORT:-24100}
    http_base=${RDG_CLUSTER_HTTP_BASE_PORT:-24200}
    bin=${RDG_BIN:-target/release/rdg}
    [ -x "$bin" ] || cargo build --release --quiet
    mkdir -p "$dir"
    : > "$dir/hosts"
    : > "$dir/http-hosts"
    for i in $(seq 0 $((n - 1))); do
      echo "127.0.0.1:$((base + i))" >> "$dir/hosts"
      echo "127.0.0.1:$((http_base + i))" >> "$dir/http-hosts"
    done
    for i in $(seq 0 $((n - 1))); do
      "$bin" run --processes "$n" --process "$i" --hosts "$dir/hosts" --workers "$w" \
        --state "$dir/process-$i" --listen "127.0.0.1:$((http_base + i))" \
        --http-hosts "$dir/http-hosts" "$@" > "$dir/process-$i.log" 2>&1 &
      echo $! > "$dir/process-$i.pid"
    done
    echo "cluster.sh: $n processes × $w workers; hosts in $dir/hosts, query APIs on http://127.0.0.1:$http_base.. ($dir/http-hosts), logs in $dir/process-*.log"
    ;;
  stop)
    dir=$2
    for f in "$dir"/process-*.pid; do
      [ -f "$f" ] || continue
      kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$dir"/process-*.pid; do
      [ -f "$f" ] || continue
      pid=$(cat "$f")
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$f"
    done
    echo "cluster.sh: stopped"
    ;;
  *)
    echo "usage: scripts/cluster.sh start N W STATE_DIR [rdg run options...] | stop STATE_DIR" >&2
    exit 2
    ;;
esac
