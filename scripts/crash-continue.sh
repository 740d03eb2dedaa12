#!/usr/bin/env bash
# Kills (SIGKILL) a replay continuing a fjall state at the points of its
# final commit that `store/redo.rs` guards, and checks what the next open
# leaves: killed while the redo file is still `rdg-redo.tmp`, the state
# before the replay; killed after `rdg-redo` is in place (before or during
# fjall's ingestion), the state after it, finished from the redo file.
# Compares `rdg export | md5sum` with an uninterrupted run each time. The
# commit must reach 8 MiB (the ingestion threshold): 200 000 events do.
#   scripts/crash-continue.sh [EVENTS]
# RDG_BIN=PATH runs that binary instead of building target/release/rdg.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-200000}
if [ -z "${RDG_BIN:-}" ]; then
  cargo build --release --quiet
  RDG_BIN=target/release/rdg
fi
work=target/crash-continue
rm -rf "$work" && mkdir -p "$work"
"$RDG_BIN" gen --events "$events" --seed 7 --out "$work/first" >/dev/null
"$RDG_BIN" gen --events "$events" --seed 8 --out "$work/more" >/dev/null
files() { echo "$1"/playback.jsonl "$1"/gaming.jsonl "$1"/login.jsonl; }
# shellcheck disable=SC2046
"$RDG_BIN" replay --workers 2 --state "$work/base" $(files "$work/first") >/dev/null
sum() { "$RDG_BIN" export --state "$1" 2>/dev/null | md5sum | cut -d' ' -f1; }
before=$(sum "$work/base")
cp -r "$work/base" "$work/after"
# shellcheck disable=SC2046
"$RDG_BIN" replay --workers 2 --state "$work/after" $(files "$work/more") >/dev/null
after=$(sum "$work/after")
[ "$before" != "$after" ] || { echo "the continue changed nothing" >&2; exit 1; }

# crash FILE DELAY EXPECTED LABEL: kill the continue DELAY s after FILE
# appears in the state, then compare the export with EXPECTED.
fail=0
crash() {
  local state="$work/cut" pid found=no
  rm -rf "$state" && cp -r "$work/base" "$state"
  # shellcheck disable=SC2046
  "$RDG_BIN" replay --workers 2 --state "$state" $(files "$work/more") >/dev/null 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if [ -e "$state/$1" ]; then found=yes; sleep "$2"; kill -9 "$pid" 2>/dev/null || true; break; fi
    sleep 0.01
  done
  wait "$pid" 2>/dev/null || true
  local got
  got=$(sum "$state")
  if [ "$found" = no ]; then
    echo "$4: never saw $1 (the commit ended first): not checked"
  elif [ "$got" = "$3" ] && [ ! -e "$state/rdg-redo" ] && [ ! -e "$state/rdg-redo.tmp" ]; then
    echo "$4: ok"
  else
    echo "$4: FAILED (export $got, expected $3; $(ls "$state" | tr '\n' ' '))"
    fail=1
  fi
}
crash rdg-redo.tmp 0 "$before" "killed while the redo file is written"
for delay in 0 0.2 0.5 1; do
  crash rdg-redo "$delay" "$after" "killed ${delay}s after the redo file is in place"
done
exit "$fail"
