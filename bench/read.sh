#!/usr/bin/env bash
# Read-side benchmark: listing a 10,000-message mailbox, searching 100,000 messages, and how
# much SMTP throughput drops while a reader polls the API (wrk). Loopback only; every loop is
# bounded. Prints a markdown block and saves it to bench/out/read-<date>.md.
#
#   bench/read.sh                 # builds the release binary first
#   INTAKE_BIN=target/release/intake bench/read.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${BENCH_OUT:-bench/out}
LIST_MESSAGES=${BENCH_LIST_MESSAGES:-10000}
SEARCH_MESSAGES=${BENCH_SEARCH_MESSAGES:-100000}
SIZE=${BENCH_SIZE:-4096}

log() { echo "read-bench: $*" >&2; }
need() { command -v "$1" >/dev/null || { log "installing $2"; DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >/dev/null; }; }; }
if ! command -v smtp-source >/dev/null && [ ! -x /usr/sbin/smtp-source ]; then
  log "smtp-source missing: run bench/core.sh once (it installs Postfix's test programs without configuring Postfix)"
  exit 1
fi
SMTP_SOURCE=$(command -v smtp-source || echo /usr/sbin/smtp-source)
need wrk wrk
need curl curl

if [ -z "${INTAKE_BIN:-}" ]; then
  log "building the release binary"
  cargo build --release -q -p intake-server
  INTAKE_BIN=target/release/intake
fi
WORK=$(mktemp -d /tmp/intake-read-bench.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }

start() { # data dir
  SMTP=$(free_port); HTTP=$(free_port)
  env INTAKE_SMTP__LISTEN=127.0.0.1:$SMTP INTAKE_HTTP__LISTEN=127.0.0.1:$HTTP INTAKE_STORE__PATH="$1" \
      INTAKE_HTTP__RATE_LIMIT=${RATE_LIMIT:-0} INTAKE_RETENTION__PER_MAILBOX=0 INTAKE_RETENTION__MAX_AGE=0 \
      INTAKE_RETENTION__MAX_STORE_SIZE=0 INTAKE_LOG__LEVEL=warn "$INTAKE_BIN" serve 2>>"$WORK/intake.log" &
  PID=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$HTTP/" && return 0; sleep 0.1; done
  log "intake did not start"; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

# send COUNT messages to RCPT over 100 sessions x 100 messages (as bench/core.sh), extra flags
send() { # count rcpt [extra smtp-source flags]
  local count=$1 rcpt=$2; shift 2
  seq $((count / 100)) > "$WORK/jobs"
  timeout 600 xargs -a "$WORK/jobs" -P 100 -I{} "$SMTP_SOURCE" -d -s 1 -m 100 -l "$SIZE" \
    -M client.example.test -f sender@example.test -t "$rcpt" -S "bench read" "$@" "127.0.0.1:$SMTP"
}

cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

# median and p95 (ms) of N GETs of a path
timing() { # path n
  python3 - "$HTTP" "$1" "$2" <<'PY'
import sys, time, urllib.request, statistics, json
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ts, total = [], None
for _ in range(n):
    t = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        body = r.read()
    ts.append((time.perf_counter() - t) * 1000)
    total = json.loads(body).get("total")
ts.sort()
print(f"{statistics.median(ts):.1f} | {ts[int(len(ts) * 0.95) - 1]:.1f} | {total}")
PY
}

machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -sr)"
results="$WORK/results.md"
{
  echo "### Read-side benchmark, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "- Machine: $machine"
  echo "- Messages: ${SIZE}-byte bodies from Postfix's smtp-source, 100 sessions x 100 messages"
  echo
} > "$results"

# 1. Listing a 10,000-message mailbox
start "$WORK/list-data"
log "filling big@example.test with $LIST_MESSAGES messages"
send "$LIST_MESSAGES" big@example.test
{
  echo "#### Listing a mailbox of $LIST_MESSAGES messages (50 requests each)"
  echo
  echo "| request | median ms | p95 ms | total |"
  echo "|---|---:|---:|---:|"
  echo "| first page, 50 per page | $(timing '/api/v1/mailboxes/big@example.test/messages?per_page=50' 50) |"
  echo "| page 200, 50 per page | $(timing '/api/v1/mailboxes/big@example.test/messages?per_page=50&page=200' 50) |"
  echo "| first page, 500 per page | $(timing '/api/v1/mailboxes/big@example.test/messages?per_page=500' 50) |"
  echo "| all mail, first page | $(timing '/api/v1/messages?per_page=50' 50) |"
  echo
} >> "$results"
stop

# 2. Searching 100,000 messages (distinct mailboxes: smtp-source -N numbers the recipient)
start "$WORK/search-data"
log "storing $SEARCH_MESSAGES messages for search"
t0=$(date +%s.%N)
send "$SEARCH_MESSAGES" r@example.test -N
t1=$(date +%s.%N)
log "waiting for the search index to catch up"
for _ in $(seq 1200); do
  n=$(curl -s "http://127.0.0.1:$HTTP/api/v1/search?query=example&per_page=1" | python3 -c 'import json,sys;print(json.load(sys.stdin)["total"])')
  [ "$n" = "$SEARCH_MESSAGES" ] && break
  sleep 0.5
done
t2=$(date +%s.%N)
{
  echo "#### Searching $SEARCH_MESSAGES messages (20 requests each)"
  echo
  echo "Stored in $(python3 -c "print(f'{$t1-$t0:.1f}')") s; the search index caught up $(python3 -c "print(f'{$t2-$t1:.1f}')") s after the last message (index complete: $n of $SEARCH_MESSAGES)."
  echo
  echo "| query | median ms | p95 ms | matches |"
  echo "|---|---:|---:|---:|"
  echo "| \`example\` (a word in every message) | $(timing '/api/v1/search?query=example' 20) |"
  echo "| \`zebra\` (in no message) | $(timing '/api/v1/search?query=zebra' 20) |"
  echo "| \`exam*\` (prefix) | $(timing '/api/v1/search?query=exam*' 20) |"
  echo "| \`to:42r@example.test\` (filter only) | $(timing '/api/v1/search?query=to%3A42r%40example.test' 20) |"
  echo "| \`example subject:bench is:unread\` | $(timing '/api/v1/search?query=example%20subject%3Abench%20is%3Aunread' 20) |"
  echo
} >> "$results"
stop

# 3. SMTP throughput with and without a reader polling the API
run_core() { # label, with_wrk
  start "$WORK/core-$1"
  send 1000 bench@example.test   # warm-up, as bench/core.sh
  sleep 1
  local wrk_out=""
  if [ "$2" = 1 ]; then
    wrk -t1 -c4 -d30s --timeout 5s "http://127.0.0.1:$HTTP/api/v1/mailboxes/bench@example.test/messages" > "$WORK/wrk.txt" 2>&1 &
    WRK=$!
    sleep 1
  fi
  local c0 c1 s0 s1
  c0=$(cpu); s0=$(date +%s.%N)
  send 20000 bench@example.test
  s1=$(date +%s.%N); c1=$(cpu)
  if [ "$2" = 1 ]; then kill -INT "$WRK" 2>/dev/null; wait "$WRK" 2>/dev/null || true; fi
  stop
  python3 -c "
t=$s1-$s0; cpu=($c1-$c0)/$(getconf CLK_TCK)
print(f'{20000/t:.0f} {cpu/20:.3f}')"
}
log "core configuration alone"
read -r alone_rate alone_cpu < <(run_core alone 0)
log "core configuration while wrk polls a mailbox listing (rate limit off)"
read -r busy_rate busy_cpu < <(run_core busy 1)
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
wrk_lat=$(awk '/Latency/ {print $2" avg, "$4" max"; exit}' "$WORK/wrk.txt")
log "core configuration while wrk polls, with the default per-client rate limit"
read -r limited_rate limited_cpu < <(RATE_LIMIT=20 run_core limited 1)
limited_rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
limited_non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.txt")
{
  echo "#### SMTP while a reader polls the API"
  echo
  echo "20,000 messages, 100 sessions x 100 messages; the reader is \`wrk -t1 -c4\` on \`GET /api/v1/mailboxes/bench@example.test/messages\` (50 per page)."
  echo
  echo "| | Intake msg/s | Intake CPU s/1k msgs |"
  echo "|---|---:|---:|"
  echo "| SMTP alone | $alone_rate | $alone_cpu |"
  echo "| SMTP + reader, no rate limit | $busy_rate | $busy_cpu |"
  echo "| SMTP + reader, default rate limit (20/s per client) | $limited_rate | $limited_cpu |"
  echo
  echo "Throughput drop with an unlimited reader: $(python3 -c "print(f'{(1-$busy_rate/$alone_rate)*100:.1f}')") % (the reader got ${wrk_rps:-?} requests/s, latency ${wrk_lat:-?})."
  echo "With the default rate limit: $(python3 -c "print(f'{(1-$limited_rate/$alone_rate)*100:.1f}')") % (${limited_rps:-?} requests/s, of which ${limited_non2xx:-0} answered 429)."
  echo
} >> "$results"

cat "$results"
mkdir -p "$OUT"
cp "$results" "$OUT/read-$(date -u +%Y%m%d-%H%M%S).md"
