#!/usr/bin/env bash
# Runs the web inbox's browser test: Debian's Chromium driven by playwright-core, under node's
# own test runner. The test starts its own Intake on free loopback ports and stops it.
#   INTAKE_BIN      the intake binary (default: target/debug/intake under the repository root;
#                   a relative path is taken from the repository root)
#   SCREENSHOT_DIR  where inbox.png goes (default: tests/browser/out)
#   CHROMIUM        the browser (default: /usr/bin/chromium, installed with apt if missing)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../intake-bin.sh
. "$here/../intake-bin.sh"

if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y chromium >/dev/null 2>&1 \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y chromium >/dev/null; }
fi

command -v node >/dev/null || { echo "node (20 or newer) is required" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "node $(node --version) is too old: playwright-core needs node 20 or newer" >&2
  exit 1
fi

cd "$here"
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
exec node --test inbox.test.mjs features.test.mjs tags.test.mjs checks.test.mjs
