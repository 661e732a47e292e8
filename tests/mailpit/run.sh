#!/usr/bin/env bash
# Mailpit's own client libraries against Intake's Mailpit-compatible API: the npm package
# mailpit-api (node's test runner) and the PyPI package mailpit-api-client (unittest, in a
# virtual environment of its own). INTAKE_BIN: the intake binary (default target/debug/intake).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../intake-bin.sh
. "$here/../intake-bin.sh"
cd "$here"
[ -d node_modules/mailpit-api ] || npm ci --no-audit --no-fund
node --test client.test.mjs extras.test.mjs
venv=${MAILPIT_VENV:-$here/.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q mailpit-api-client==1.0.0
fi
"$venv/bin/python" -m unittest -v test_client.py
