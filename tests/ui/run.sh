#!/usr/bin/env bash
# The dashboard end to end in headless Chromium: builds payhook, then ui.test.mjs starts
# `payhook serve` (temporary SQLite) and `payhook listen`, seeds a delivered callback through
# the API, logs in at /ui, searches the order, opens its timeline, clicks Resend, waits for the
# second attempt, and checks the screenshot is not blank; then the Merchants page: paging and
# filters, pause and resume, recovery, and the health column. Exits non-zero, saying what failed.
#
# Uses Debian's chromium (installed here when /usr/bin/chromium is missing) with playwright-core
# from npm: playwright's own browser downloads are not used.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
fail() { echo "tests/ui: FAILED: $*" >&2; exit 1; }

if [ ! -x /usr/bin/chromium ]; then
    echo "tests/ui: installing Debian's chromium"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq || fail "apt-get update"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null \
        || fail "apt-get install chromium"
fi

cd "$here"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error || fail "npm ci"
else
    npm install --no-audit --no-fund --loglevel=error || fail "npm install"
fi

target=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && cargo build -q -p payhook) || fail "cargo build -p payhook"
bin="$target/debug/payhook"
[ -x "$bin" ] || fail "no payhook binary at $bin"

node "$here/ui.test.mjs" --payhook "$bin" --out "${UI_OUT:-$here/out}"
