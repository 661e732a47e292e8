# Sourced by the run.sh scripts under tests/: exports INTAKE_BIN, the intake binary (default:
# target/debug/intake under the repository root; a relative path is taken from the repository
# root), or stops the script when there is none.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${INTAKE_BIN:-target/debug/intake}
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
export INTAKE_BIN="$bin"
if [ ! -x "$INTAKE_BIN" ]; then
  echo "no intake binary at $INTAKE_BIN: build it (cargo build -p intake-server) or set INTAKE_BIN" >&2
  exit 1
fi
