#!/usr/bin/env bash
# Coverage-guided fuzzing of rdg's input surfaces with afl.rs (AFL++),
# which builds on stable Rust (cargo-fuzz/libFuzzer needs nightly flags).
#   scripts/fuzz.sh [SECONDS]      every target for SECONDS (default 60) each
#   FUZZ_TARGETS="event http" scripts/fuzz.sh 30   only some targets
# Installs cargo-afl (crates.io) when missing, builds fuzz/ (its own cargo
# workspace, instrumented), runs each target in turn from its committed
# corpus (fuzz/corpus/TARGET) into fuzz/out/TARGET, and prints how many
# inputs each ran, with crashes and hangs. A crash is an input under
# fuzz/out/TARGET/default/crashes/: fix the bug, then copy the input into
# fuzz/corpus/TARGET/ so that tests/fuzz_corpus.rs keeps it fixed.
# Runs niced: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
case "$secs" in
  '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a number, not '$secs'" >&2; exit 2 ;;
esac
targets=${FUZZ_TARGETS:-event definitions store_codec http}

if ! cargo afl --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-afl (crates.io)"
  cargo install cargo-afl --locked
fi
(cd fuzz && nice -n 10 cargo afl build --release --locked)

# AFL++ on a shared machine, as root, without a UI: no core binding, no
# check of the kernel's core pattern or CPU governor.
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 \
  AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CRASHES=1

mkdir -p fuzz/out
found=0
summary=""
for t in $targets; do
  out=fuzz/out/$t
  rm -rf "$out"
  echo "fuzz.sh: $t for ${secs}s"
  # -t: an input taking over 2 s is a hang; -m none: rdg's runtimes reserve
  # address space freely (inputs are cut at rdg::fuzzing::MAX_INPUT).
  nice -n 10 cargo afl fuzz -V "$secs" -t 2000 -m none \
    -i "fuzz/corpus/$t" -o "$out" "fuzz/target/release/$t" >"$out.log" 2>&1 || {
    echo "fuzz.sh: afl-fuzz failed for $t, see $out.log" >&2
    tail -20 "$out.log" >&2
    exit 2
  }
  stats=$out/default/fuzzer_stats
  execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$stats")
  paths=$(awk -F: '/^corpus_count/ {gsub(/ /, "", $2); print $2}' "$stats")
  crashes=$(find "$out/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
  hangs=$(find "$out/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
  line="$t: $execs inputs in ${secs}s, corpus $paths, crashes $crashes, hangs $hangs"
  summary="$summary$line"$'\n'
  echo "fuzz.sh: $line"
  found=$((found + crashes + hangs))
done
echo
echo "== fuzz.sh summary ($(date -u +%FT%TZ))"
printf '%s' "$summary"
if [ "$found" -gt 0 ]; then
  echo "fuzz.sh: crashes or hangs found: inputs under fuzz/out/*/default/{crashes,hangs}/" >&2
  exit 1
fi
