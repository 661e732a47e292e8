#!/usr/bin/env bash
# Memory per message in flight: one large message (20 MB by default) sent to a fresh Intake,
# and how far the process's peak RSS (VmHWM in /proc/<pid>/status) grew for it, against the
# message's size. Two messages, each to a fresh process: plain text, and a multipart message
# whose bulk is one base64 attachment. Loopback only, no CPU figures. Prints markdown.
#
#   INTAKE_BIN=target/release/intake bench/message-memory.sh
#   BENCH_MESSAGE_MB=50 bench/message-memory.sh
#
# Two peaks are reported: at the moment the client has read its 250 (the message was
# received, parsed, handed to the store and committed: the cost of a message in flight),
# and two seconds later, once the store's writer has also indexed it for search (which
# reads the message back and extracts its text, after the commit).
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${BENCH_MESSAGE_MB:-20}
if [ -z "${INTAKE_BIN:-}" ]; then
  cargo build --release -q -p intake-server
  INTAKE_BIN=${CARGO_TARGET_DIR:-target}/release/intake
fi
WORK=$(mktemp -d /tmp/intake-message-memory.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }

run() {
  local kind=$1 port
  port=$(free_port)
  rm -rf "$WORK/data"
  env INTAKE_SMTP__LISTEN=127.0.0.1:$port INTAKE_HTTP__LISTEN= INTAKE_STORE__PATH="$WORK/data" \
      INTAKE_SMTP__MAX_MESSAGE_SIZE=$(((MB + 8) * 1024 * 1024)) INTAKE_LOG__LEVEL=warn \
      "$INTAKE_BIN" serve 2>"$WORK/intake-$kind.log" &
  PID=$!
  for _ in $(seq 100); do python3 -c "import socket;socket.create_connection(('127.0.0.1',$port),1).close()" 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  python3 - "$port" "$PID" "$MB" "$kind" <<'PY'
import base64, os, socket, sys, time
port, pid, mb, kind = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def status(field):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(field + ":"): return int(l.split()[1])
size = mb * 1000 * 1000
if kind == "text":
    head = b"From: a@bench.test\r\nTo: big@bench.test\r\nSubject: big text\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = line * ((size - len(head)) // len(line))
else:
    head = (b"From: a@bench.test\r\nTo: big@bench.test\r\nSubject: big attachment\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
            b"Content-Type: application/octet-stream; name=\"blob.bin\"\r\n"
            b"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"blob.bin\"\r\n\r\n")
    raw = os.urandom((size - len(head) - 16) * 3 // 4 * 76 // 78)
    body = base64.encodebytes(raw).replace(b"\n", b"\r\n") + b"--b--\r\n"
msg = head + body
s = socket.create_connection(("127.0.0.1", port), 30)
f = s.makefile("rb")
def reply():
    while True:
        l = f.readline()
        if l[3:4] != b"-": return l.decode().strip()
reply()
rss_before, hwm_before = status("VmRSS"), status("VmHWM")
for c in (b"EHLO bench.test", b"MAIL FROM:<a@bench.test>", b"RCPT TO:<big@bench.test>", b"DATA"):
    s.sendall(c + b"\r\n"); r = reply()
assert r.startswith("354"), r
s.sendall(msg + b".\r\n")
r = reply()
hwm_at_250 = status("VmHWM")
assert r.startswith("250"), r
time.sleep(2)
hwm_after = status("VmHWM")
s.sendall(b"QUIT\r\n"); reply(); s.close()
mib = lambda kb: kb / 1024
n = len(msg) / 1024
print(f"| {kind} | {len(msg)/1e6:.1f} MB | {mib(rss_before):.1f} | {mib(hwm_at_250):.1f} | "
      f"{(hwm_at_250 - hwm_before) / n:.2f} | {mib(hwm_after):.1f} | {(hwm_after - hwm_before) / n:.2f} |")
PY
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
}

echo "| message | size | RSS before, MiB | peak at the 250, MiB | growth / size | peak 2 s later (indexed), MiB | growth / size |"
echo "|---|---:|---:|---:|---:|---:|---:|"
run text
run attachment
