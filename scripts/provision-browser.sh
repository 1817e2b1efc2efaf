#!/usr/bin/env bash
# Provision the dashboard's browser test (tests/browser/): Debian's Chromium and playwright-core.
#
#   bash scripts/provision-browser.sh           install whatever is missing (idempotent, root, no stdin)
#   bash scripts/provision-browser.sh --check   exit 0 only if everything is in place; changes nothing
#
# What it ensures:
#   * /usr/bin/chromium (Debian package `chromium`), installed with apt when missing.
#   * tests/browser/node_modules/playwright-core, installed with `npm ci` from the committed
#     tests/browser/package-lock.json when missing or older than the lockfile. playwright-core never
#     downloads a browser: the test drives /usr/bin/chromium (executablePath).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=provision
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
APT_LOG=/var/log/zedops-provision-apt.log
BROWSER_DIR=tests/browser

step() { printf '[provision-browser] %s\n' "$*"; }
die()  { printf '[provision-browser] ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

chromium_ok() { [ -x /usr/bin/chromium ]; }
# node_modules is current when playwright-core is there and npm's own record of the install
# (.package-lock.json) is not older than the committed lockfile.
modules_ok() {
  [ -f "$BROWSER_DIR/node_modules/playwright-core/package.json" ] \
    && [ -f "$BROWSER_DIR/node_modules/.package-lock.json" ] \
    && ! [ "$BROWSER_DIR/package-lock.json" -nt "$BROWSER_DIR/node_modules/.package-lock.json" ]
}

if [ "$MODE" = check ]; then
  ok=1
  chromium_ok || { echo "missing /usr/bin/chromium"; ok=0; }
  have node || { echo "missing node"; ok=0; }
  modules_ok || { echo "missing or stale $BROWSER_DIR/node_modules"; ok=0; }
  [ "$ok" = 1 ] && { echo "provisioned: all in place"; exit 0; }
  exit 1
fi

# 1. Chromium from Debian.
if chromium_ok; then
  step "chromium: present ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
else
  [ "$(id -u)" = 0 ] || die "must run as root to install chromium"
  apt_run() {
    if ! apt-get -q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "$@" >>"$APT_LOG" 2>&1; then
      tail -n 30 "$APT_LOG" >&2
      die "apt-get $* failed (full log: $APT_LOG)"
    fi
  }
  step "apt-get update"
  apt_run update
  step "apt-get install chromium"
  apt_run install --no-install-recommends chromium
  chromium_ok || die "chromium installed but /usr/bin/chromium is missing"
  step "chromium: installed ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
fi

# 2. Node and playwright-core.
have node || die "node is missing (the machine's Node.js 20 with npm is expected)"
have npm || die "npm is missing"
if modules_ok; then
  step "playwright-core: present ($(node -p "require('./$BROWSER_DIR/node_modules/playwright-core/package.json').version"))"
else
  step "npm ci in $BROWSER_DIR"
  (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in $BROWSER_DIR"
  modules_ok || die "npm ci finished but playwright-core is missing"
  step "playwright-core: installed ($(node -p "require('./$BROWSER_DIR/node_modules/playwright-core/package.json').version"))"
fi
