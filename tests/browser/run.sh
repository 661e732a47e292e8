#!/usr/bin/env bash
# Runs the web inbox's browser test: Debian's Chromium + playwright-core, node's test runner.
# INTAKE_BIN: the intake binary (default: target/debug/intake). Screenshots go to SCREENSHOT_DIR
# (default: tests/browser/out).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export INTAKE_BIN=${INTAKE_BIN:-$root/target/debug/intake}
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y chromium >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
fi
command -v node >/dev/null || { echo "node is required (Debian package nodejs)"; exit 1; }
cd "$here"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
node --test inbox.test.mjs
