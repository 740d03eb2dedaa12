#!/usr/bin/env bash
# rdg side by side with FalkorDB, LadybugDB, Kuzu (graph databases) and
# networkx, igraph (identity), on one event set, in one run; writes
# BENCHMARKS.md and docs/benchmarks/*.png.
#
#   scripts/compare/run.sh [EVENTS] [--events N] [--input FILE.jsonl]... [--seed S]
#                          [--identity-events N] [--lookup-seconds S] [--identity-changes N]
#
# EVENTS (default 400000) events are generated with `rdg gen`; --input
# replaces them with JSONL files whose topic is their name up to the first
# dot (playback.jsonl), as for `rdg replay`. Identity is measured on its own
# generated set of --identity-events (default 4400000: about 1M identity
# links; 0 = the main set), which needs the shipped login topic.
#
# Smoke run (about 1 minute once everything is installed and built; 6+ minutes
# on a fresh machine, where FalkorDBLite compiles its redis-server and cargo
# builds the query bench, so it is not part of the test command):
#   scripts/compare/run.sh --events 20000 --identity-events 0 --lookup-seconds 1 \
#     --out target/compare/smoke.md --plots target/compare/smoke-plots
# (--out elsewhere than BENCHMARKS.md leaves BENCHMARKS.md and README alone.)
#
# What it installs, all under target/compare/ (nothing system-wide):
#   a venv with networkx, igraph, matplotlib, kafka-python and the peers
#   (falkordblite, ladybug, kuzu; pinned in requirements-*.txt). A peer that
#   does not install is reported in BENCHMARKS.md with pip's reason.
#   FalkorDBLite needs Python >= 3.12: the first of $COMPARE_PYTHON,
#   python3.13/python3.12 on PATH, ~/.pyenv/versions/3.1[2-9]*/bin/python3
#   with version >= 3.12 is used; without one the venv uses python3 (>= 3.11)
#   and FalkorDB is reported as not installed, with that reason.
# The tansu broker: scripts/broker.sh (installs it with cargo the first time).
# The rdg binary: RDG_BIN=/path/to/rdg, or this worktree's release build
# (`cargo build --release`, niced). The in-process lookup row uses
# `cargo bench --bench query` of this worktree.
#
# The default size keeps the whole run within about 45 minutes on the shared
# 2-core machine: LadybugDB and Kuzu ingest about 1,000 events/s by MERGE and
# slow down as their graph grows, so 1M events would take over an hour for
# them alone. Identity keeps its own ~1M-link set (--identity-events).
#
# Not part of the test command (scripts/test.sh): it needs network installs
# (pip; FalkorDBLite builds a redis-server) and minutes; even the smoke run
# above needs the venv and the peers installed first.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here=scripts/compare
base=target/compare
mkdir -p "$base"

die() { echo "compare: $*" >&2; exit 1; }

py_version_ok() { # PY MIN_MINOR -> exit 0 when PY is CPython 3.MIN_MINOR or later
  "$1" -c "import sys; sys.exit(0 if sys.version_info >= (3, $2) else 1)" 2>/dev/null
}

find_python() { # prints the first Python >= 3.12 found, or nothing
  local c
  for c in "${COMPARE_PYTHON:-}" python3.13 python3.12 \
    $(ls -d "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV) python3; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && py_version_ok "$c" 12; then
      command -v "$c"
      return
    fi
  done
}

unavailable=$base/unavailable.json
echo "{}" >"$unavailable"
note_unavailable() { # SYSTEM REASON
  python3 - "$unavailable" "$1" "$2" <<'PY'
import json, sys
p, system, reason = sys.argv[1:]
d = json.load(open(p)); d[system] = reason; json.dump(d, open(p, "w"))
PY
}

py=$(find_python)
if [ -z "$py" ]; then
  py=$(command -v python3) || die "no python3 found"
  py_version_ok "$py" 11 || die "needs Python >= 3.11 (tomllib); $py is older"
  note_unavailable falkordb "FalkorDBLite needs Python >= 3.12 and none was found (COMPARE_PYTHON, python3.12/3.13 on PATH, ~/.pyenv/versions/3.12+); install one, e.g. with pyenv, or set COMPARE_PYTHON=/path/to/python3.12"
fi
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=$base/venv
echo "compare: Python $pyver ($py), venv $venv"
if [ -x "$venv/bin/python" ] && [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$pyver" ]; then
  rm -rf "$venv" # made with another Python
fi
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv" || die "could not create a venv with $py (Debian: apt-get install python3-venv)"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" -r "$here/requirements-core.txt" || die "could not install $here/requirements-core.txt"
for system in ladybug kuzu falkordb; do
  grep -q "\"$system\"" "$unavailable" && continue
  log=$base/pip-$system.log
  echo "compare: installing $system (log $log; FalkorDBLite builds its redis-server: minutes the first time)"
  if ! "${pip[@]}" -r "$here/requirements-$system.txt" >"$log" 2>&1; then
    note_unavailable "$system" "pip install -r $here/requirements-$system.txt failed: $(grep -iE 'error' "$log" | tail -n 3 | tr '\n' ' ' | cut -c1-400)"
  fi
done

if [ -n "${RDG_BIN:-}" ]; then
  rdg_bin=$RDG_BIN
  [ -x "$rdg_bin" ] || die "RDG_BIN=$rdg_bin is not an executable"
else
  echo "compare: building rdg (cargo build --release, niced)"
  nice -n 10 cargo build --release --quiet
  rdg_bin=$root/target/release/rdg
fi

if ! command -v wrk >/dev/null 2>&1; then
  echo "compare: wrk is not installed; the rdg max-throughput row will say so (apt-get install wrk)"
fi

exec "$venv/bin/python" "$here/main.py" --rdg-bin "$rdg_bin" --unavailable "$unavailable" \
  --command "scripts/compare/run.sh $*" "$@"
