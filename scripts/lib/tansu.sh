# Sourced by the scripts that run `rdg run` against tansu (scripts/broker.sh).
#
# tansu 0.6 can make a partition's later batch readable before an earlier
# one under load (its produce advances the high watermark before it stores
# the batch), so a consumer can go past records it holds. rdg fetches such a
# gap again for --recheck-gaps-ms before it counts it (docs/performance.md);
# against tansu these scripts ask for TANSU_RECHECK_MS (default 2000).

# tansu_run_args BIN: the `rdg run` arguments for tansu, if BIN knows them
# (an older build compared by the A/B scripts may not).
tansu_run_args() {
  if "$1" run --help 2>/dev/null | grep -q -- --recheck-gaps-ms; then
    echo "--recheck-gaps-ms ${TANSU_RECHECK_MS:-2000}"
  fi
}
