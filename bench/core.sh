#!/usr/bin/env bash
# bench/core.sh: core throughput benchmark, Intake vs Postfix's smtp-sink.
#
# Both servers get the same load from Postfix's smtp-source, in the same run,
# on loopback only. For each configuration (parallel sessions x messages per
# session) and each server it reports messages/second, the server's CPU
# seconds per 1,000 messages and the Intake/smtp-sink ratios. At the end it
# reports the peak RSS of both servers. A third server, "relay", is Intake
# relaying every message to the same smtp-sink before it replies (the gateway
# setup: INTAKE_DELIVERY__TARGETS='["relay"]'); its CPU is Intake's only.
# Run it from the repo root:
#
#     bench/core.sh
#
# Settings (environment variables) are listed in bench/README.md and in the
# defaults below.
set -Eeuo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

BENCH_MESSAGES=${BENCH_MESSAGES:-20000}        # messages per configuration
BENCH_SIZE=${BENCH_SIZE:-4096}                 # message payload in bytes (smtp-source -l)
BENCH_SESSIONS=${BENCH_SESSIONS:-"1 10 100"}   # parallel sessions
BENCH_PER_SESSION=${BENCH_PER_SESSION:-"1 100"} # messages per session (SMTP connection)
BENCH_RCPT=${BENCH_RCPT:-bench@example.test}
BENCH_FROM=${BENCH_FROM:-sender@example.test}
BENCH_HELO=${BENCH_HELO:-client.example.test}
BENCH_MAX_SECS=${BENCH_MAX_SECS:-60}           # reduce the count where one run would take longer (0: never)
BENCH_PROBE=${BENCH_PROBE:-1000}               # messages in the probe/warm-up run that estimates the time
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}            # hard limit, seconds, for any single smtp-source run
BENCH_START_SECS=${BENCH_START_SECS:-30}       # how long to wait for a server's 220 greeting
BENCH_SETTLE=${BENCH_SETTLE:-0.2}              # pause after a run before the CPU counters are read
BENCH_IDLE_TICKS=${BENCH_IDLE_TICKS:-2}        # "idle again": two half-second samples of at most this many CPU ticks each
BENCH_IDLE_MAX=${BENCH_IDLE_MAX:-300}          # seconds to wait at most for a server to be idle after a run
BENCH_ONLY=${BENCH_ONLY:-}                     # "sink", "intake" or "relay": run one server only (relay also starts the sink)
BENCH_RELAY=${BENCH_RELAY:-1}                  # 0: leave out the relay figures
BENCH_RELAY_PORT=${BENCH_RELAY_PORT:-}
BENCH_OUT=${BENCH_OUT:-$REPO_ROOT/bench/out}
BENCH_KEEP=${BENCH_KEEP:-0}                    # 1: keep the temporary directory (store, logs)
BENCH_INTAKE_PORT=${BENCH_INTAKE_PORT:-}       # default: a free port in 20000-29999
BENCH_SINK_PORT=${BENCH_SINK_PORT:-}
BENCH_CHECKS=${BENCH_CHECKS:-0}                # 1: also run Intake with every local policy check on
BENCH_PREFILL=${BENCH_PREFILL:-0}              # messages stored (in another mailbox) before measuring, e.g. 1000000
BENCH_PREFILL_INDEX=${BENCH_PREFILL_INDEX:-wait} # "wait": measure once search indexing has caught up; "lag": at once
BENCH_PREFILL_MAX_WAIT=${BENCH_PREFILL_MAX_WAIT:-3600} # seconds to wait for indexing at most

log() { printf '%s\n' "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in BENCH_MESSAGES BENCH_SIZE BENCH_MAX_SECS BENCH_PROBE BENCH_TIMEOUT BENCH_START_SECS BENCH_PREFILL BENCH_PREFILL_MAX_WAIT; do
    is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
((BENCH_MESSAGES > 0 && BENCH_SIZE > 0 && BENCH_TIMEOUT > 0)) || die "BENCH_MESSAGES, BENCH_SIZE and BENCH_TIMEOUT must be > 0"
for s in $BENCH_SESSIONS $BENCH_PER_SESSION; do
    is_uint "$s" && ((s > 0)) || die "BENCH_SESSIONS / BENCH_PER_SESSION must list positive integers"
done
case "$BENCH_ONLY" in
    "") SERVERS=(sink intake); [[ $BENCH_RELAY == 1 ]] && SERVERS+=(relay) ;;
    sink) SERVERS=(sink) ;;
    intake) SERVERS=(intake) ;;
    relay) SERVERS=(relay) ;;
    *) die "BENCH_ONLY must be empty, 'sink', 'intake' or 'relay'" ;;
esac
case "$BENCH_PREFILL_INDEX" in wait | lag) ;; *) die "BENCH_PREFILL_INDEX must be 'wait' or 'lag'" ;; esac
case "$BENCH_CHECKS" in
    0) ;;
    1) [[ $BENCH_ONLY != sink ]] || die "BENCH_CHECKS=1 needs Intake"; SERVERS+=(checks) ;;
    *) die "BENCH_CHECKS must be 0 or 1" ;;
esac
want() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }
need_sink() { want sink || want relay; }

# ---------------------------------------------------------------- cleanup --

WORK=""
SINK_PID=""
INTAKE_PID=""
RELAY_PID=""
CHECKS_PID=""         # Intake with the policy checks on (BENCH_CHECKS=1)
DNS_PID=""            # its DNS server (bench/dns-fixture.py)
RUN_PID=""            # the `timeout` wrapping the current smtp-source run
POLICY_RC_CREATED=0

stop_pid() { # pid: TERM, wait up to 5 s, then KILL. Only for processes this script started.
    local pid=$1 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $RUN_PID ]]; then
        # `timeout` leads its own process group: that group holds only the
        # smtp-source (and xargs) processes of the current run.
        kill -TERM -- "-$RUN_PID" 2>/dev/null || true
        wait "$RUN_PID" 2>/dev/null || true
    fi
    [[ -z ${SCRAPER_PID:-} ]] || kill "$SCRAPER_PID" 2>/dev/null || true
    stop_pid "$INTAKE_PID"
    stop_pid "$RELAY_PID"
    stop_pid "$CHECKS_PID"
    stop_pid "$DNS_PID"
    stop_pid "$SINK_PID"
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $BENCH_KEEP == 1 ]]; then
            log "kept $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------ Postfix test tools --

SUDO=()
if ((EUID != 0)); then SUDO=(sudo); fi

find_tool() { # name -> path or empty (smtp-source lives in /usr/sbin, often not in a user's PATH)
    command -v "$1" 2>/dev/null || { [[ -x /usr/sbin/$1 ]] && echo "/usr/sbin/$1"; } || true
}

postfix_master_running() {
    local pidfile=/var/spool/postfix/pid/master.pid pid
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

install_postfix_tools() {
    command -v apt-get >/dev/null || die "smtp-source/smtp-sink not found and apt-get is unavailable: install Postfix's test programs by hand"
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "smtp-source/smtp-sink not found; run as root (or with sudo available) to install postfix"
    fi
    local master_before=0
    postfix_master_running && master_before=1
    log "installing postfix for its test programs smtp-source and smtp-sink (mail system left unconfigured)"
    # "No configuration": the package writes no main.cf and sets up no mail system.
    echo "postfix postfix/main_mailer_type select No configuration" | "${SUDO[@]}" debconf-set-selections
    # Also forbid maintainer scripts to start any daemon (the Docker convention),
    # unless the machine already has a policy in place.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q postfix)
    if ! "${apt[@]}"; then
        log "apt-get install failed; running apt-get update and retrying"
        "${SUDO[@]}" timeout 600 apt-get update -q
        "${apt[@]}"
    fi
    if ((POLICY_RC_CREATED)); then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
    # Belt and braces: if the install started a Postfix master, stop it again.
    if ((!master_before)) && postfix_master_running; then
        log "stopping the Postfix master that the install started"
        if command -v systemctl >/dev/null && systemctl is-active --quiet postfix 2>/dev/null; then
            "${SUDO[@]}" systemctl stop postfix || true
        fi
        postfix_master_running && { "${SUDO[@]}" postfix stop || true; }
    fi
}

SMTP_SOURCE=$(find_tool smtp-source)
SMTP_SINK=$(find_tool smtp-sink)
if [[ -z $SMTP_SOURCE || -z $SMTP_SINK ]]; then
    install_postfix_tools
    SMTP_SOURCE=$(find_tool smtp-source)
    SMTP_SINK=$(find_tool smtp-sink)
    [[ -n $SMTP_SOURCE && -n $SMTP_SINK ]] || die "postfix installed but smtp-source/smtp-sink still not found"
fi
for t in timeout xargs getconf awk; do command -v "$t" >/dev/null || die "$t is required"; done

# ------------------------------------------------------------ Intake binary --

BIN=""
if want intake || want relay || want checks; then
    if [[ -n ${INTAKE_BIN:-} ]]; then
        BIN=$INTAKE_BIN
    else
        log "building: cargo build --release -p intake-server (set INTAKE_BIN=/path to skip)"
        (cd "$REPO_ROOT" && cargo build --release -p intake-server)
        BIN=$REPO_ROOT/target/release/intake
    fi
    [[ -x $BIN ]] || die "Intake binary '$BIN' is missing or not executable"
    BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
fi

# ------------------------------------------------------------------ helpers --

CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/intake-bench.XXXXXX")
chmod 755 "$WORK"

now_ns() { date +%s%N; }

# wait_idle pid: waits until the server has nothing left to do after a run (search
# indexing, commits): two half-second samples in a row of at most BENCH_IDLE_TICKS CPU ticks
# each, within BENCH_IDLE_MAX seconds. Sets IDLE_TICKS (the server's ticks then) and
# IDLE_WAIT (seconds waited; "timeout" when the server was still busy at the limit).
IDLE_TICKS=0
IDLE_WAIT=0
wait_idle() {
    local pid=$1 quiet=0 a b t0=$SECONDS
    a=$(cpu_ticks "$pid")
    while ((quiet < 2)); do
        if ((SECONDS - t0 >= BENCH_IDLE_MAX)); then IDLE_WAIT="timeout"; IDLE_TICKS=$a; return; fi
        sleep 0.5
        b=$(cpu_ticks "$pid")
        if ((b - a <= BENCH_IDLE_TICKS)); then quiet=$((quiet + 1)); else quiet=0; fi
        a=$b
    done
    IDLE_WAIT=$((SECONDS - t0))
    IDLE_TICKS=$a
}

cpu_ticks() { # pid -> utime+stime of the whole process (all threads), in clock ticks
    # Fields after the parenthesised command name: state is $1, utime $12, stime $13.
    local stat
    { stat=$(<"/proc/$1/stat"); } 2>/dev/null || { echo 0; return; }
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

peak_rss_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

declare -A RSS # last VmHWM seen per server, kB (kept if the process exits)
note_rss() { local kb; kb=$(peak_rss_kb "$2"); [[ -z $kb ]] || RSS[$1]=$kb; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 10000))
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    die "no free loopback port found"
}

wait_greeting() { # name pid port: wait for "220" on 127.0.0.1:port while pid lives
    local name=$1 pid=$2 port=$3 deadline=$((SECONDS + BENCH_START_SECS))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 2 line <&3 && [[ $line == 220* ]]' _ "$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    log "$name did not greet on 127.0.0.1:$port within ${BENCH_START_SECS}s"
    return 1
}

# ------------------------------------------------------------ start servers --

declare -A PORT PID
if need_sink; then
    PORT[sink]=${BENCH_SINK_PORT:-$(pick_port)}
    sink_args=(-a -C -F -m 256)
    # smtp-sink refuses to run as root without -u.
    if ((EUID == 0)); then sink_args+=(-u nobody); fi
    SINK_CMD=("$SMTP_SINK" "${sink_args[@]}" "inet:127.0.0.1:${PORT[sink]}" 1024)
    log "starting: ${SINK_CMD[*]}"
    "${SINK_CMD[@]}" >"$WORK/sink.log" 2>&1 &
    SINK_PID=$!
    want sink && PID[sink]=$SINK_PID
    wait_greeting smtp-sink "$SINK_PID" "${PORT[sink]}" || { cat "$WORK/sink.log" >&2; die "smtp-sink did not start"; }
fi
if want intake; then
    PORT[intake]=${BENCH_INTAKE_PORT:-$(pick_port)}
    [[ ${PORT[intake]} != "${PORT[sink]:-}" ]] || PORT[intake]=$(pick_port)
    mkdir -p "$WORK/intake-data"
    HTTP_PORT=$(pick_port)
    log "starting: INTAKE_SMTP__LISTEN=127.0.0.1:${PORT[intake]} INTAKE_HTTP__LISTEN=127.0.0.1:$HTTP_PORT INTAKE_STORE__PATH=$WORK/intake-data $BIN serve"
    INTAKE_SMTP__LISTEN="127.0.0.1:${PORT[intake]}" INTAKE_HTTP__LISTEN="127.0.0.1:$HTTP_PORT" \
        INTAKE_STORE__PATH="$WORK/intake-data" "$BIN" serve >"$WORK/intake.log" 2>&1 &
    INTAKE_PID=$!
    PID[intake]=$INTAKE_PID
    if ! wait_greeting Intake "$INTAKE_PID" "${PORT[intake]}"; then
        log "Intake log (last 30 lines):"
        tail -n 30 "$WORK/intake.log" >&2 || true
        die "Intake did not start"
    fi
fi

# A scraper, as Prometheus would run it: /metrics every 5 s for the whole run.
SCRAPER_PID=""
if want intake; then
    scrape() { curl -s --max-time 5 "http://127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null || true; }
    scrape >"$WORK/metrics-first.txt"
    (while kill -0 "$INTAKE_PID" 2>/dev/null; do scrape >"$WORK/metrics-last.txt.new" && mv "$WORK/metrics-last.txt.new" "$WORK/metrics-last.txt"; sleep 5; done) &
    SCRAPER_PID=$!
fi
if want relay; then
    PORT[relay]=${BENCH_RELAY_PORT:-$(pick_port)}
    while [[ ${PORT[relay]} == "${PORT[sink]:-}" || ${PORT[relay]} == "${PORT[intake]:-}" ]]; do PORT[relay]=$(pick_port); done
    mkdir -p "$WORK/relay-data"
    # The downstream pool must hold every session: at its limit Intake answers 451 at once.
    log "starting: Intake relaying to smtp-sink on 127.0.0.1:${PORT[relay]}"
    INTAKE_SMTP__LISTEN="127.0.0.1:${PORT[relay]}" INTAKE_STORE__PATH="$WORK/relay-data" \
        INTAKE_HTTP__LISTEN="" INTAKE_DELIVERY__TARGETS='["relay"]' \
        INTAKE_RELAY__SERVER="127.0.0.1:${PORT[sink]}" INTAKE_RELAY__TLS=off \
        INTAKE_RELAY__MAX_CONNECTIONS=256 \
        "$BIN" serve >"$WORK/relay.log" 2>&1 &
    RELAY_PID=$!
    PID[relay]=$RELAY_PID
    if ! wait_greeting "Intake (relay)" "$RELAY_PID" "${PORT[relay]}"; then
        tail -n 30 "$WORK/relay.log" >&2 || true
        die "Intake (relay) did not start"
    fi
fi

# ---------------------------------------------------------------- workload --

if want checks; then
    # Every local check on: DNS lists (answered by a local DNS server, then from the
    # resolver's cache), HELO checks, valid recipients, greylisting (loopback allowlisted,
    # so the check runs but never defers), SPF/DKIM/DMARC/ARC with Authentication-Results.
    # Content scanners (rspamd, spamd) are other processes and not counted here.
    command -v python3 >/dev/null || die "BENCH_CHECKS=1 needs python3 (for bench/dns-fixture.py)"
    DNS_PORT=$(pick_port)
    python3 "$REPO_ROOT/bench/dns-fixture.py" "$DNS_PORT" "${BENCH_FROM#*@}" >"$WORK/dns.log" 2>&1 &
    DNS_PID=$!
    PORT[checks]=$(pick_port)
    mkdir -p "$WORK/checks-data"
    CHECKS_ENV=(
        INTAKE_SMTP__LISTEN="127.0.0.1:${PORT[checks]}" INTAKE_STORE__PATH="$WORK/checks-data"
        INTAKE_DNS__SERVERS="[\"127.0.0.1:$DNS_PORT\"]"
        INTAKE_DNSBL__ZONES='["bl.bench.test=127.0.0.[2..11]*2", "wl.bench.test*-1"]'
        INTAKE_HELO__REJECT_NON_FQDN=true INTAKE_HELO__REJECT_BARE_IP=true
        INTAKE_RECIPIENTS__ADDRESSES="[\"$BENCH_RCPT\"]"
        INTAKE_GREYLIST__ENABLED=true INTAKE_GREYLIST__ALLOW_NETWORKS='["127.0.0.0/8"]'
        INTAKE_SENDER_AUTH__ENABLED=true INTAKE_HTTP__LISTEN=""
    )
    log "starting (checks on): ${CHECKS_ENV[*]} $BIN serve"
    env "${CHECKS_ENV[@]}" "$BIN" serve >"$WORK/checks.log" 2>&1 &
    CHECKS_PID=$!
    PID[checks]=$CHECKS_PID
    if ! wait_greeting "Intake+checks" "$CHECKS_PID" "${PORT[checks]}"; then
        tail -n 30 "$WORK/checks.log" >&2 || true
        die "Intake with checks did not start"
    fi
fi

SOURCE_COMMON=(-l "$BENCH_SIZE" -M "$BENCH_HELO" -f "$BENCH_FROM" -t "$BENCH_RCPT" -S "intake core bench")
RUN_N=0
INTAKE_SENT=0        # messages of the successful runs against Intake (probes included)
INTAKE_ALL_OK=1      # 0 once a run against Intake failed: then the expected total is unknown

# run_source server sessions per_session count
# Sets R_STATUS (ok / FAIL (...) / TIMEOUT / DIED), R_NS (wall time), R_TICKS (server CPU
# while the client sent), R_WHOLE (server CPU until it was idle again: the whole cost,
# including work deferred past the 250 such as search indexing), R_LOG.
run_source() {
    local server=$1 sessions=$2 per=$3 count=$4 rc=0 t0 t1 c0 c1 c2
    local addr="inet:127.0.0.1:${PORT[$server]}" pid=${PID[$server]}
    local cmd
    RUN_N=$((RUN_N + 1))
    R_LOG="$WORK/run-$RUN_N-$server.log"
    R_NS=0
    R_TICKS=0
    R_WHOLE=0
    : >"$R_LOG"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "(not run: the server had already exited)" >"$WORK/run-$RUN_N-$server.cmd"
        R_STATUS="DIED"
        INTAKE_ALL_OK=0
        return
    fi
    if ((per == 1)); then
        # One message per connection: smtp-source disconnects after each message
        # (no -d) and keeps `sessions` connections going in parallel.
        cmd=("$SMTP_SOURCE" -s "$sessions" -m "$count" "${SOURCE_COMMON[@]}" "$addr")
    else
        # `per` messages per connection: each smtp-source process opens one
        # connection and sends `per` messages over it (-d -s 1 -m per); xargs
        # keeps `sessions` such processes running until count/per are done.
        seq 1 $((count / per)) >"$WORK/jobs"
        cmd=(xargs -a "$WORK/jobs" -P "$sessions" -I{} "$SMTP_SOURCE" -d -s 1 -m "$per" "${SOURCE_COMMON[@]}" "$addr")
    fi
    printf '%q ' "${cmd[@]}" >"$WORK/run-$RUN_N-$server.cmd"
    c0=$(cpu_ticks "$pid")
    t0=$(now_ns)
    timeout -k 5 "$BENCH_TIMEOUT" "${cmd[@]}" </dev/null >"$R_LOG" 2>&1 &
    RUN_PID=$!
    wait "$RUN_PID" || rc=$?
    RUN_PID=""
    t1=$(now_ns)
    sleep "$BENCH_SETTLE"
    note_rss "$server" "$pid"
    if ! kill -0 "$pid" 2>/dev/null; then
        R_STATUS="DIED"
        R_TICKS=0
    else
        c1=$(cpu_ticks "$pid")
        R_TICKS=$((c1 - c0))
        wait_idle "$pid"
        c2=$IDLE_TICKS
        R_WHOLE=$((c2 - c0))
        if [[ $IDLE_WAIT == timeout ]]; then
            echo "- $server was still busy ${BENCH_IDLE_MAX}s after a run: its whole cost is a lower bound" >>"$ERRORS"
        fi
        if ((rc == 124 || rc == 137)); then
            R_STATUS="TIMEOUT"
        elif ((rc != 0)); then
            R_STATUS="FAIL (exit $rc)"
        elif [[ -s $R_LOG ]]; then
            R_STATUS="FAIL (errors logged)"
        else
            R_STATUS="ok"
        fi
    fi
    R_NS=$((t1 - t0))
    if [[ $server == intake ]]; then
        if [[ $R_STATUS == ok ]]; then INTAKE_SENT=$((INTAKE_SENT + count)); else INTAKE_ALL_OK=0; fi
    fi
}

record_failure() { # server what: describe the last run (R_*) in the failure list
    {
        echo "- $1, $2: $R_STATUS; command: \`$(<"$WORK/run-$RUN_N-$1.cmd")\`"
        if [[ -s $R_LOG ]]; then
            echo "  smtp-source output ($(wc -l <"$R_LOG") lines, first 5):"
            head -n 5 "$R_LOG" | sed 's/^/      /'
        fi
    } >>"$ERRORS"
}

rate_of() { awk -v n="$1" -v ns="$2" 'BEGIN { printf "%.0f", (ns > 0 ? n / (ns / 1e9) : 0) }'; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
ERRORS="$WORK/errors.txt"
: >"$ERRORS"
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')

# ------------------------------------------------------------- pre-fill --
# A store that already holds BENCH_PREFILL messages (in prefill@example.test), sent the fast
# way: 100 sessions of 100 messages each over SMTP, as fast as Intake takes them. Then either
# wait until Intake is idle (its writer has indexed everything for search: CPU under 3% for
# 3 s), or measure at once with indexing lagging behind.
PREFILL_NOTE=""
PREFILLED=0
if ((BENCH_PREFILL > 0)) && want intake; then
    jobs=$(((BENCH_PREFILL + 99) / 100))
    PREFILLED=$((jobs * 100))
    log "pre-filling Intake's store with $((jobs * 100)) messages ($BENCH_SIZE-byte bodies)"
    seq 1 "$jobs" >"$WORK/prefill-jobs"
    t0=$(now_ns)
    timeout -k 5 $((BENCH_TIMEOUT * 20)) xargs -a "$WORK/prefill-jobs" -P 100 -I{} "$SMTP_SOURCE" -d -s 1 -m 100 \
        -l "$BENCH_SIZE" -f "$BENCH_FROM" -t prefill@example.test -M "$BENCH_HELO" \
        "inet:127.0.0.1:${PORT[intake]}" >"$WORK/prefill.log" 2>&1 || die "pre-fill failed: $(head -3 "$WORK/prefill.log")"
    fill_s=$(awk -v ns="$(($(now_ns) - t0))" 'BEGIN { printf "%.0f", ns / 1e9 }')
    log "pre-filled in ${fill_s}s"
    if [[ $BENCH_PREFILL_INDEX == wait ]]; then
        t0=$SECONDS
        idle=0
        while ((idle < 3 && SECONDS - t0 < BENCH_PREFILL_MAX_WAIT)); do
            c0=$(cpu_ticks "$INTAKE_PID"); sleep 1; c1=$(cpu_ticks "$INTAKE_PID")
            if (((c1 - c0) * 100 < CLK_TCK * 3)); then idle=$((idle + 1)); else idle=0; fi
        done
        PREFILL_NOTE="$((jobs * 100)) messages stored before the runs (in ${fill_s}s), search indexing caught up ($((SECONDS - t0))s after)"
    else
        PREFILL_NOTE="$((jobs * 100)) messages stored before the runs (in ${fill_s}s), measured at once: search indexing still catching up during the runs"
    fi
    log "$PREFILL_NOTE"
fi

nconf=0
for per in $BENCH_PER_SESSION; do for s in $BENCH_SESSIONS; do nconf=$((nconf + 1)); done; done
iconf=0
for per in $BENCH_PER_SESSION; do
    for sessions in $BENCH_SESSIONS; do
        iconf=$((iconf + 1))
        unit=$((sessions * per))      # messages in one "wave" of all sessions
        ((unit >= 1000)) || unit=1000 # counts are multiples of 1000 (or of one wave)
        count=$BENCH_MESSAGES
        reduced=0
        label="$sessions session(s) x $per msg/session"

        # Probe (also the warm-up): estimate how long the full count would take
        # on the slower server and scale the count down to about BENCH_MAX_SECS.
        probe=$(((BENCH_PROBE + unit - 1) / unit * unit))
        if ((BENCH_MAX_SECS > 0 && probe < count && sessions * per <= BENCH_PROBE)); then
            slowest=""
            for srv in "${SERVERS[@]}"; do
                run_source "$srv" "$sessions" "$per" "$probe"
                r=$(rate_of "$probe" "$R_NS")
                if [[ $R_STATUS == ok ]]; then
                    log "[$iconf/$nconf] $label: probe $srv $probe msgs: $r msg/s"
                else
                    log "[$iconf/$nconf] $label: probe $srv $probe msgs: $R_STATUS"
                    record_failure "$srv" "$label, probe of $probe msgs"
                fi
                if [[ $R_STATUS == ok ]] && { [[ -z $slowest ]] || ((r < slowest)); }; then slowest=$r; fi
            done
            if [[ -n $slowest ]]; then
                fit=$((slowest * BENCH_MAX_SECS / unit * unit))
                ((fit >= unit)) || fit=$unit
                if ((fit < count)); then count=$fit; reduced=1; fi
            fi
        fi
        count=$((count / (sessions * per) * (sessions * per)))
        ((count > 0)) || count=$((sessions * per))

        row="$sessions	$per	$count	$reduced"
        for srv in "${SERVERS[@]}"; do
            log "[$iconf/$nconf] $label: $srv, $count msgs ..."
            run_source "$srv" "$sessions" "$per" "$count"
            if [[ $R_STATUS == ok ]]; then
                log "[$iconf/$nconf] $label: $srv: $(rate_of "$count" "$R_NS") msg/s, $R_TICKS CPU ticks while sending, $R_WHOLE until idle"
            else
                log "[$iconf/$nconf] $label: $srv: $R_STATUS"
            fi
            row+="	$R_STATUS	$R_NS	$R_TICKS	$R_WHOLE"
            [[ $R_STATUS == ok ]] || record_failure "$srv" "$label, $count msgs"
        done
        echo "$row" >>"$RESULTS"

        for srv in "${SERVERS[@]}"; do
            kill -0 "${PID[$srv]}" 2>/dev/null || { log "$srv is no longer running; stopping the benchmark"; break 3; }
        done
    done
done

# ------------------------------------------------------------------ report --

for srv in "${SERVERS[@]}"; do note_rss "$srv" "${PID[$srv]}"; done
# The last scrape, and what Prometheus saw against what smtp-source counted.
PROM=""
if want intake; then
    [[ -z $SCRAPER_PID ]] || { kill "$SCRAPER_PID" 2>/dev/null; wait "$SCRAPER_PID" 2>/dev/null || true; }
    scrape >"$WORK/metrics-last.txt"
    metric() { awk -v n="$1" '$1 == n { print $2; f = 1 } END { if (!f) print 0 }' "$2"; }
    accepted() { awk 'index($1, "intake_smtp_messages_total{") == 1 && index($1, "result=\"accepted\"") { s += $2 } END { print s + 0 }' "$1"; }
    prom_accepted=$(awk -v a="$(accepted "$WORK/metrics-last.txt")" -v b="$(accepted "$WORK/metrics-first.txt")" 'BEGIN { printf "%.0f", a - b }')
    d_sum=$(metric intake_smtp_deliver_seconds_sum "$WORK/metrics-last.txt")
    d_cnt=$(metric intake_smtp_deliver_seconds_count "$WORK/metrics-last.txt")
    b_sum=$(metric intake_store_commit_batch_size_sum "$WORK/metrics-last.txt")
    b_cnt=$(metric intake_store_commit_batch_size_count "$WORK/metrics-last.txt")
    # smtp-source's count of accepted messages, plus the pre-fill's.
    SENT_ALL=$((INTAKE_SENT + PREFILLED))
    PROM=$(awk -v p="$prom_accepted" -v s="$SENT_ALL" -v ds="$d_sum" -v dc="$d_cnt" -v bs="$b_sum" -v bc="$b_cnt" 'BEGIN {
        printf "accepted %d (smtp-source: %d, %s); mean end of data to durable %.2f ms; mean commit batch %.1f messages",
            p, s, (p == s ? "the same" : "DIFFERENT"), (dc > 0 ? ds / dc * 1000 : 0), (bc > 0 ? bs / bc : 0) }')
    if ((INTAKE_ALL_OK)) && [[ $prom_accepted != "$SENT_ALL" ]]; then
        echo "- Prometheus counted $prom_accepted accepted messages, smtp-source $SENT_ALL" >>"$ERRORS"
    fi
fi
STORE_BYTES=""
STORED=""
if want intake; then
    STORE_BYTES=$(du -sb "$WORK/intake-data" 2>/dev/null | cut -f1 || true)
    # Every message smtp-source saw accepted must be in the store: count the
    # recipient's mailbox with Intake's own CLI (one line per message).
    if STORED=$(INTAKE_STORE__PATH="$WORK/intake-data" timeout 300 "$BIN" mailbox list "$BENCH_RCPT" 2>"$WORK/list.err" | wc -l); then
        if ((INTAKE_ALL_OK && STORED != INTAKE_SENT)); then
            echo "- Intake's store holds $STORED messages for <$BENCH_RCPT>, but smtp-source had $INTAKE_SENT accepted" >>"$ERRORS"
        fi
    else
        echo "- could not count the stored messages (\`intake mailbox list\`): $(head -c 300 "$WORK/list.err")" >>"$ERRORS"
        STORED=""
    fi
fi

git_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then git_rev+="-dirty"; fi
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
pf_version=$(dpkg-query -W -f '${Version}' postfix 2>/dev/null || echo unknown)

render_table() {
    awk -F'\t' -v servers="${SERVERS[*]}" -v tck="$CLK_TCK" '
    function rate(n, ns) { return ns > 0 ? n / (ns / 1e9) : 0 }
    function cpu(t, n) { return t / tck / n * 1000 }
    function ok(s) { return s == "ok" }
    BEGIN {
        ns = split(servers, srv, " "); is = 0; ii = 0; ic = 0
        for (i = 1; i <= ns; i++) {
            name[i] = (srv[i] == "sink" ? "smtp-sink" : (srv[i] == "relay" ? "Intake relay" : (srv[i] == "checks" ? "Intake+checks" : "Intake")))
            if (srv[i] == "sink") is = i
            if (srv[i] == "intake") ii = i
            if (srv[i] == "checks") ic = i
        }
        both = is && ii
        h = "| sessions | msgs/session | messages |"; sep = "|---:|---:|---:|"
        for (i = 1; i <= ns; i++) { h = h " " name[i] " msg/s |"; sep = sep "---:|" }
        if (both) { h = h " Intake/sink msg/s |"; sep = sep "---:|" }
        for (i = 1; i <= ns; i++) { h = h " " name[i] " CPU s/1k msgs |"; sep = sep "---:|" }
        if (both) { h = h " Intake/sink CPU |"; sep = sep "---:|" }
        for (i = 1; i <= ns; i++) { h = h " " name[i] " whole CPU s/1k msgs |"; sep = sep "---:|" }
        if (both) { h = h " Intake/sink whole CPU | Intake deferred |"; sep = sep "---:|---:|" }
        if (ic && ii) { h = h " checks/plain CPU |"; sep = sep "---:|" }
        print h; print sep
    }
    {
        n = $3; line = "| " $1 " | " $2 " | " n ($4 == 1 ? "*" : "") " |"
        for (i = 1; i <= ns; i++) {
            st[i] = $(5 + 4 * (i - 1)); w[i] = $(6 + 4 * (i - 1)); t[i] = $(7 + 4 * (i - 1))
            wt[i] = $(8 + 4 * (i - 1))
            r[i] = rate(n, w[i]); c[i] = cpu(t[i], n); cw[i] = cpu(wt[i], n)
        }
        for (i = 1; i <= ns; i++) line = line " " (ok(st[i]) ? sprintf("%.0f", r[i]) : "**" st[i] "**") " |"
        if (both) line = line " " (ok(st[is]) && ok(st[ii]) && r[is] > 0 ? sprintf("%.2f", r[ii] / r[is]) : "n/a") " |"
        for (i = 1; i <= ns; i++) line = line " " (ok(st[i]) ? sprintf("%.3f", c[i]) : "**" st[i] "**") " |"
        if (both) line = line " " (ok(st[is]) && ok(st[ii]) && c[is] > 0 ? sprintf("%.2f", c[ii] / c[is]) : "n/a") " |"
        for (i = 1; i <= ns; i++) line = line " " (ok(st[i]) ? sprintf("%.3f", cw[i]) : "**" st[i] "**") " |"
        if (both) {
            line = line " " (ok(st[is]) && ok(st[ii]) && cw[is] > 0 ? sprintf("%.2f", cw[ii] / cw[is]) : "n/a") " |"
            line = line " " (ok(st[ii]) && cw[ii] > 0 ? sprintf("%.0f%%", (cw[ii] - c[ii]) / cw[ii] * 100) : "n/a") " |"
        }
        if (ic && ii) line = line " " (ok(st[ic]) && ok(st[ii]) && c[ii] > 0 ? sprintf("%.2f", c[ic] / c[ii]) : "n/a") " |"
        print line
    }' "$RESULTS"
}

mkdir -p "$BENCH_OUT"
OUT_FILE="$BENCH_OUT/core-$(date -u +%Y%m%d-%H%M%S).md"
{
    echo "### Core benchmark, $START_DATE"
    echo
    echo "- Machine: $(nproc) CPUs${cpu_model:+ ($cpu_model)}, Linux $(uname -r)"
    if want intake; then echo "- Intake: \`$BIN\` at commit $git_rev, SQLite store (durable) in a fresh temporary directory, store.search = ${INTAKE_STORE__SEARCH:-full}"; fi
    echo "- Client: Postfix $pf_version \`smtp-source\`, over loopback; reference server: \`smtp-sink\` (discards mail)"
    echo "- Each message: ${BENCH_SIZE}-byte body (\`smtp-source -l $BENCH_SIZE\`) plus ~180 bytes of headers, one recipient <$BENCH_RCPT>"
    if [[ -n $PREFILL_NOTE ]]; then echo "- Intake's store: $PREFILL_NOTE"; fi
    echo
    render_table
    echo
    if awk -F'\t' '$4 == 1 { f = 1 } END { exit !f }' "$RESULTS"; then
        echo "\\* fewer than $BENCH_MESSAGES messages: a probe run estimated more than ${BENCH_MAX_SECS}s for the full count."
        echo
    fi
    echo "msg/s: messages divided by smtp-source's wall time. CPU s/1k msgs: the server process's user+system CPU"
    echo "(/proc/<pid>/stat) per 1,000 messages while smtp-source sent (the receive path). Whole CPU: the same"
    echo "counted until the server was idle again (two half-second samples of at most $BENCH_IDLE_TICKS ticks each),"
    echo "so work done after the 250 (search indexing) is in it; smtp-sink has nothing left to do. Intake"
    echo "deferred: the part of Intake's whole CPU spent after smtp-source finished. Ratios are Intake divided"
    echo "by smtp-sink (msg/s: higher is better for Intake; CPU: lower is better)."
    if want relay; then
        echo "Intake relay: Intake with \`delivery.targets = [\"relay\"]\` handing every message to the smtp-sink above"
        echo "before its 250 (no local store); its CPU column is Intake's process only."
    fi
    if want checks; then
        echo "Intake+checks: a second Intake with every local policy check on (DNS lists answered from the"
        echo "resolver's cache after the first lookup, HELO checks, valid recipients, greylisting with loopback"
        echo "allowlisted, SPF/DKIM/DMARC/ARC and Authentication-Results); checks/plain CPU is its CPU per message"
        echo "divided by plain Intake's."
    fi
    echo
    for srv in "${SERVERS[@]}"; do
        case $srv in sink) n="smtp-sink" ;; relay) n="Intake relay" ;; checks) n="Intake+checks" ;; *) n="Intake" ;; esac
        if [[ -n ${RSS[$srv]:-} ]]; then
            echo "- $n peak RSS (VmHWM): $(awk -v k="${RSS[$srv]}" 'BEGIN { printf "%.1f MiB", k / 1024 }')$(kill -0 "${PID[$srv]}" 2>/dev/null || echo ' (last seen; the process exited)')"
        else
            echo "- $n peak RSS (VmHWM): n/a (the process exited)"
        fi
    done
    if [[ -n $STORE_BYTES ]]; then
        echo "- Intake store size at the end: $(awk -v b="$STORE_BYTES" 'BEGIN { printf "%.1f MiB", b / 1048576 }') (all runs, probes included)"
    fi
    if [[ -n $PROM ]]; then
        echo "- Scraped from Intake's /metrics (every 5 s, as Prometheus would): $PROM"
    fi
    if [[ -n $STORED ]]; then
        echo "- Messages in Intake's store at the end: $STORED (accepted in successful runs: $INTAKE_SENT$( ((INTAKE_ALL_OK)) || echo ', plus failed runs'))"
    fi
    if [[ -s $ERRORS ]]; then
        echo
        echo "**Failures:**"
        echo
        cat "$ERRORS"
    fi
} >"$OUT_FILE"

echo
cat "$OUT_FILE"
echo
log "saved to $OUT_FILE"

if [[ -s $ERRORS ]]; then
    if want intake && [[ -s $WORK/intake.log ]]; then
        log "Intake log (last 20 lines):"
        tail -n 20 "$WORK/intake.log" >&2 || true
    fi
    exit 1
fi
