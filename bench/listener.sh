#!/usr/bin/env bash
# Listener benchmark: 10,000 idle connections (Intake's RSS, and how long a fresh client
# waits for its greeting meanwhile), the cost of STARTTLS against plain SMTP with the
# same client, and the HTTP side: memory per idle connection, time to shed a flood of
# half-sent requests. Loopback only, bounded. Prints markdown; saves bench/out/listener-<date>.md.
#
#   INTAKE_BIN=target/release/intake bench/listener.sh
#   BENCH_IDLE_ONLY=1 bench/listener.sh     # only the idle connections' memory
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${BENCH_IDLE:-10000}
# Seconds the connections are held idle before Intake's RSS is read (BENCH_IDLE_SETTLE).
OUT=${BENCH_OUT:-bench/out}
if [ -z "${INTAKE_BIN:-}" ]; then
  cargo build --release -q -p intake-server
  INTAKE_BIN=target/release/intake
fi
# Raise the open-file limit as far as allowed: the client and Intake each hold IDLE sockets.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE + 200)) ]; then
  echo "the open-file limit ($(ulimit -n)) is below $((IDLE + 200)): raise the hard limit"; exit 1
fi
WORK=$(mktemp -d /tmp/intake-listener-bench.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }

# A throw-away certificate for STARTTLS.
python3 - "$WORK" <<'PY'
import subprocess, sys
d = sys.argv[1]
subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=bench.test",
                "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-days", "2"], check=True, capture_output=True)
PY

# The executable's pages are dropped from the page cache first (BENCH_COLD_BIN=0 keeps
# them): the same file maps about 2 MiB more of its code at start when it has just been
# written (a fresh build or copy) than when it is read back from disk, so without this the
# idle figure depends on how recently the binary was built. See docs/performance.md.
if [ "${BENCH_COLD_BIN:-1}" = 1 ]; then
  sync "$INTAKE_BIN"
  dd if="$INTAKE_BIN" iflag=nocache count=0 status=none
fi

SMTP=$(free_port)
env INTAKE_SMTP__LISTEN=127.0.0.1:$SMTP INTAKE_HTTP__LISTEN= INTAKE_STORE__PATH="$WORK/data" \
    INTAKE_SMTP__MAX_CONNECTIONS=$((IDLE + 1000)) INTAKE_TLS__CERTIFICATE="$WORK/cert.pem" INTAKE_TLS__KEY="$WORK/key.pem" \
    INTAKE_LOG__LEVEL=warn "$INTAKE_BIN" serve 2>"$WORK/intake.log" &
PID=$!
for _ in $(seq 100); do python3 -c "import socket;socket.create_connection(('127.0.0.1',$SMTP),1).close()" 2>/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
base_rss=$(rss)

python3 - "$SMTP" "$IDLE" "$PID" "$WORK/idle.txt" "${BENCH_IDLE_SETTLE:-2}" <<'PY'
import socket, sys, time, statistics, selectors
port, n, pid, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
settle = float(sys.argv[5])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def greet_ms():
    t = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.recv(512)
    ms = (time.perf_counter() - t) * 1000
    s.close()
    return ms
before = [greet_ms() for _ in range(20)]
socks = []
sel = selectors.DefaultSelector()
greeted = 0
deadline = time.time() + 180
# Open in waves of 500, each greeted before the next: connections held, not a SYN flood.
while len(socks) < n and time.time() < deadline:
    wave = []
    for _ in range(min(500, n - len(socks))):
        s = socket.socket()
        s.setblocking(False)
        try: s.connect(("127.0.0.1", port))
        except BlockingIOError: pass
        socks.append(s); wave.append(s)
        sel.register(s, selectors.EVENT_READ)
    pending = len(wave)
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            try:
                if key.fileobj.recv(512).startswith(b"220"): greeted += 1
            except OSError: pass
            sel.unregister(key.fileobj)
            pending -= 1
# Idle means quiet for a while: a session that has waited a second for its next command
# gives back its buffers (Connection::park), so measure after that.
time.sleep(settle)
held_rss = rss()
during = [greet_ms() for _ in range(20)]
with open(out, "w") as f:
    f.write(f"{len(socks)} {greeted} {held_rss} {statistics.median(before):.2f} {max(before):.2f} {statistics.median(during):.2f} {max(during):.2f}\n")
for s in socks: s.close()
PY
read -r opened greeted held_rss g_before g_before_max g_during g_during_max < "$WORK/idle.txt"
if [ -n "${BENCH_IDLE_ONLY:-}" ]; then
  # Memory only (no throughput): the idle-connection figures, then stop.
  echo "| connections opened / greeted | $opened / $greeted |"
  echo "| Intake RSS before / holding them | $((base_rss / 1024)) / $((held_rss / 1024)) MiB ($base_rss / $held_rss KiB) |"
  echo "| per connection | $(((held_rss - base_rss) * 1024 / IDLE)) bytes |"
  exit 0
fi

# STARTTLS against plain with the same client: 8 processes x 250 messages of 4 KB.
python3 - "$SMTP" "$WORK/tls.txt" <<'PY'
import smtplib, ssl, sys, time
from multiprocessing import Pool
port, out = int(sys.argv[1]), sys.argv[2]
body = "Subject: bench\r\n\r\n" + ("x" * 76 + "\r\n") * 53
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def worker(tls):
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("bench.test")
    if tls:
        s.starttls(context=ctx); s.ehlo("bench.test")
    for _ in range(250):
        s.sendmail("a@bench.test", ["tls@bench.test"], body)
    s.quit()
    return 250
res = {}
for tls in (False, True):
    t = time.perf_counter()
    with Pool(8) as p:
        n = sum(p.map(worker, [tls] * 8))
    res[tls] = n / (time.perf_counter() - t)
with open(out, "w") as f:
    f.write(f"{res[False]:.0f} {res[True]:.0f}\n")
PY
read -r plain_rate tls_rate < "$WORK/tls.txt"

# HTTP: memory per idle connection, and how fast a flood of half-sent requests is shed.
kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true
HTTP_IDLE=${BENCH_HTTP_IDLE:-5000}
HTTP=$(free_port); SMTP2=$(free_port)
env INTAKE_SMTP__LISTEN=127.0.0.1:$SMTP2 INTAKE_HTTP__LISTEN=127.0.0.1:$HTTP INTAKE_STORE__PATH="$WORK/data-http" \
    INTAKE_HTTP__MAX_CONNECTIONS=$((HTTP_IDLE + 1000)) INTAKE_HTTP__MAX_CONNECTIONS_PER_IP=0 \
    INTAKE_HTTP__HEADER_TIMEOUT=60s INTAKE_LOG__LEVEL=warn "$INTAKE_BIN" serve 2>"$WORK/intake-http.log" &
PID=$!
for _ in $(seq 100); do python3 -c "import socket;socket.create_connection(('127.0.0.1',$HTTP),1).close()" 2>/dev/null && break; sleep 0.1; done
python3 - "$HTTP" "$HTTP_IDLE" "$PID" "$WORK/http-idle.txt" <<'PY'
import socket, sys, time
port, n, pid, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def get():
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.sendall(b"GET /api/v1/messages HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
    s.close(); return data
get(); time.sleep(0.5)
before = rss()
socks = []
deadline = time.time() + 120
# Idle kept-alive connections: one request answered on each, then silence.
while len(socks) < n and time.time() < deadline:
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.sendall(b"GET /api/v1/messages?per_page=1 HTTP/1.1\r\nHost: b\r\n\r\n")
    socks.append(s)
for s in socks:
    s.settimeout(10); s.recv(65536)
time.sleep(0.5)
held = rss()
with open(out, "w") as f:
    f.write(f"{len(socks)} {before} {held} {(held - before) / max(1, len(socks)):.1f}\n")
for s in socks: s.close()
PY
read -r http_opened http_before http_held http_per_conn < "$WORK/http-idle.txt"
kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true
# The flood, against the defaults (512 connections, 64 per IP, 10 s header timeout).
env INTAKE_SMTP__LISTEN=127.0.0.1:$SMTP2 INTAKE_HTTP__LISTEN=127.0.0.1:$HTTP INTAKE_STORE__PATH="$WORK/data-http" \
    INTAKE_LOG__LEVEL=warn "$INTAKE_BIN" serve 2>>"$WORK/intake-http.log" &
PID=$!
for _ in $(seq 100); do python3 -c "import socket;socket.create_connection(('127.0.0.1',$HTTP),1).close()" 2>/dev/null && break; sleep 0.1; done
python3 - "$HTTP" "$SMTP2" "$WORK/http-flood.txt" <<'PY'
import socket, sys, time, selectors, smtplib
port, smtp, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
N, SOURCES = 5000, 5
sel = selectors.DefaultSelector()
t0 = time.perf_counter()
socks = []
for i in range(N):
    s = socket.socket(); s.bind((f"127.0.0.{2 + i % SOURCES}", 0))
    s.connect(("127.0.0.1", port)); s.setblocking(False)
    try: s.send(b"GET /api/v1/messages HTTP/1.1\r\nHost: b\r\nX-A: ")
    except OSError: pass
    socks.append(s); sel.register(s, selectors.EVENT_READ)
opened = time.perf_counter() - t0
# While the flood is held: a well-behaved client's API request and a message over SMTP.
t = time.perf_counter()
c = socket.create_connection(("127.0.0.1", port), 10)
c.sendall(b"GET /api/v1/messages HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
status = c.recv(64).split()[1].decode(); c.close()
api_ms = (time.perf_counter() - t) * 1000
m = smtplib.SMTP("127.0.0.1", smtp, timeout=30); m.sendmail("a@b.test", ["flood@b.test"], "Subject: x\r\n\r\nx\r\n"); m.quit()
open_now, refused_at, all_closed_at = N, None, None
while open_now and time.perf_counter() - t0 < 60:
    for key, _ in sel.select(timeout=0.5):
        try: key.fileobj.recv(1024)
        except OSError: pass
        sel.unregister(key.fileobj); key.fileobj.close(); open_now -= 1
    if refused_at is None and open_now <= SOURCES * 64: refused_at = time.perf_counter() - t0
all_closed_at = time.perf_counter() - t0
with open(out, "w") as f:
    refused_after = max(0.0, (refused_at or opened) - opened)
    f.write(f"{N} {opened:.2f} {refused_after:.2f} {all_closed_at - opened:.1f} {open_now} {status} {api_ms:.1f}\n")
PY
read -r flood_n flood_opened flood_refused flood_closed flood_left flood_status flood_api_ms < "$WORK/http-flood.txt"

results="$WORK/results.md"
{
  echo "### Listener benchmark, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "- Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -sr)"
  echo
  echo "#### $IDLE idle connections"
  echo
  echo "| | value |"
  echo "|---|---:|"
  echo "| connections opened / greeted | $opened / $greeted |"
  echo "| Intake RSS before | $((base_rss / 1024)) MiB |"
  echo "| Intake RSS holding them | $((held_rss / 1024)) MiB |"
  echo "| a fresh client's wait for the greeting, before (median / max of 20) | $g_before / $g_before_max ms |"
  echo "| the same while they are held (median / max of 20) | $g_during / $g_during_max ms |"
  echo
  echo "#### STARTTLS against plain (same Python client, 8 sessions x 250 messages of 4 KB)"
  echo
  echo "| | msg/s |"
  echo "|---|---:|"
  echo "| plain | $plain_rate |"
  echo "| STARTTLS (TLS 1.3) | $tls_rate |"
  echo
  echo "The client (Python smtplib) is the bottleneck in both rows; the ratio is what TLS costs end to end."
  echo
  echo "#### HTTP: idle connections and a flood of half-sent requests"
  echo
  echo "| | value |"
  echo "|---|---:|"
  echo "| idle kept-alive HTTP connections held | $http_opened |"
  echo "| Intake RSS before / holding them | $((http_before / 1024)) / $((http_held / 1024)) MiB |"
  echo "| memory per idle HTTP connection | $http_per_conn KiB |"
  echo "| flood: half-sent requests from 5 addresses (defaults: 512 in all, 64 per IP, 10 s header timeout) | $flood_n, opened in $flood_opened s |"
  echo "| flood: all but the capped ones refused, after the last connect | $flood_refused s |"
  echo "| flood: every connection closed, after the last connect (the header timeout) | $flood_closed s ($flood_left left) |"
  echo "| meanwhile a fresh API request (another address) | $flood_status in $flood_api_ms ms |"
} > "$results"
cat "$results"
mkdir -p "$OUT"
cp "$results" "$OUT/listener-$(date -u +%Y%m%d-%H%M%S).md"
