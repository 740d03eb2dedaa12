#!/usr/bin/env bash
# Browser test of the explorer page (`/`): a real headless Chromium, driven
# by playwright-core, against `rdg serve` over the sample in data/.
#
#   scripts/browser-test.sh
#
# Installs what it needs when it can (Debian's chromium with apt-get when run
# as root; playwright-core from npm into target/browser-test/) and FAILS when
# something is missing: it never skips. Leaves a screenshot at
# target/browser-test/explorer.png (failure.png on a failure). Its last line
# is `browser: N passed, M failed`. Environment: CHROMIUM (path of the
# browser, default: `command -v chromium`), RDG_BIN (a built rdg; default:
# cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/browser-test
playwright_version=1.65.1
mkdir -p "$out"

fail() {
  echo "browser-test: FAIL: $*" >&2
  echo "browser: 0 passed, 1 failed"
  exit 1
}

chromium=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$chromium" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "browser-test: installing chromium with apt-get" >&2
  apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 ||
    fail "apt-get install chromium failed"
  chromium=$(command -v chromium || true)
fi
[ -n "$chromium" ] && [ -x "$chromium" ] ||
  fail "chromium is not installed (Debian: apt-get install chromium; or set CHROMIUM=/path/to/chromium)"
command -v node >/dev/null || fail "node is not installed (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null || fail "npm is not installed (Debian: apt-get install npm)"

if [ ! -f "$out/node_modules/playwright-core/package.json" ] ||
  ! grep -q "\"version\": \"$playwright_version\"" "$out/node_modules/playwright-core/package.json"; then
  echo "browser-test: installing playwright-core@$playwright_version from npm" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$out" --no-save --no-audit --no-fund \
    --loglevel=error "playwright-core@$playwright_version" >&2 ||
    fail "npm install playwright-core@$playwright_version failed"
fi

if [ -n "${RDG_BIN:-}" ]; then
  bin=$RDG_BIN
else
  cargo build --quiet >&2 || fail "cargo build failed"
  bin=target/debug/rdg
fi

rm -rf "$out/state" "$out/state-auth" "$out/profile" "$out/explorer.png" "$out/failure.png"
"$bin" replay --state "$out/state" data/*.jsonl >/dev/null || fail "rdg replay of data/ failed"
"$bin" replay --state "$out/state-auth" data/*.jsonl >/dev/null || fail "rdg replay of data/ failed"
echo "browser-test-token" >"$out/token"

servers=()
trap 'for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done' EXIT
# serve NAME ARGS...: starts `rdg serve`, sets $url to where it listens.
serve() {
  local name=$1
  shift
  "$bin" serve --listen 127.0.0.1:0 "$@" 2>"$out/$name.log" &
  local pid=$!
  servers+=("$pid")
  url=""
  for _ in $(seq 1 100); do
    url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out/$name.log" | head -1 || true)
    [ -n "$url" ] && return 0
    kill -0 "$pid" 2>/dev/null || fail "rdg serve exited: $(cat "$out/$name.log")"
    sleep 0.1
  done
  fail "rdg serve did not say where it listens: $(cat "$out/$name.log")"
}
serve serve --state "$out/state"
open_url=$url
serve serve-auth --state "$out/state-auth" --auth-token-file "$out/token"
auth_url=$url

mkdir -p "$out/profile"
NODE_PATH="$PWD/$out/node_modules" node scripts/browser-test.mjs "$open_url" "$chromium" "$out" "$auth_url"
