# Shared by scripts/bench-kafka.sh, scripts/ab-kafka.sh and
# scripts/bench-cluster.sh (sourced, not run): what a live catch-up from
# Kafka waits for, and the wait.

# file_records BIN WORKERS EVENTS DIR: generates EVENTS events (seed 7) into
# DIR/files, replays them into DIR/file-state (summary in DIR/file.json) and
# prints the records a live run of the same events commits: valid events
# and dead letters.
file_records() {
  "$1" gen --events "$3" --seed 7 --out "$4/files" >/dev/null
  "$1" replay --workers "$2" --state "$4/file-state" --json \
    "$4/files/playback.jsonl" "$4/files/gaming.jsonl" "$4/files/login.jsonl" > "$4/file.json"
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["events"]+s["dead_letters"])' "$4/file.json"
}

# committed LOG...: the records (events and dead letters) the last status
# line of each `rdg run` log shows committed, summed over the logs (a
# missing log counts 0).
committed() {
  python3 - "$@" <<'PY'
import re, sys
total = 0
for path in sys.argv[1:]:
    try:
        lines = [l for l in open(path) if l.startswith("status: ")]
    except FileNotFoundError:
        continue
    if lines:
        total += sum(int(e) + int(d) for e, d in re.findall(r"\((\d+) events\).*?dead letters (\d+)", lines[-1]))
print(total)
PY
}

# wait_committed LOG EXPECTED PID: returns once the last status line of an
# `rdg run --status-interval 0.2` writing LOG shows EXPECTED records committed;
# exits the script if PID ends first.
wait_committed() {
  while sleep 0.2; do
    if [ "$(committed "$1")" -ge "$2" ]; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then echo "rdg run exited early:"; tail "$1"; exit 1; fi
  done
}
