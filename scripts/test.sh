#!/usr/bin/env bash
# The test command: every test, including those that need a real
# Kafka-compatible broker and an independent Kafka client.
#   scripts/test.sh [extra cargo test args]
# It installs what it needs: kafka-python (PyPI) and tansu (crates.io, built
# once, ~15 minutes on 2 cores, cached in ~/.cargo/bin), starts tansu on a
# loopback port, runs `cargo test -- --include-ignored`, stops tansu, then
# runs the browser test (scripts/browser-test.sh: Debian's chromium and
# playwright-core from npm, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${RDG_TEST_BROKER_PORT:-19092}

if ! python3 -c 'import kafka' 2>/dev/null; then
  echo "test.sh: installing kafka-python (independent Kafka client for the real-broker test)"
  python3 -m pip install --quiet --disable-pip-version-check kafka-python
fi

scripts/broker.sh start "$port"
trap 'scripts/broker.sh stop "$port" || true' EXIT

RDG_TEST_BROKERS="127.0.0.1:$port" cargo test --locked "$@" -- --include-ignored

# The explorer page in a real headless Chromium (installs chromium with
# apt-get and playwright-core from npm when missing; fails, never skips).
scripts/browser-test.sh
