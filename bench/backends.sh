#!/usr/bin/env bash
# bench/backends.sh: Intake on each store engine against Postfix's smtp-sink, same run.
#
# For every backend in BENCH_BACKENDS it starts Intake on a fresh store (a new SQLite
# directory, a new PostgreSQL or MariaDB database, a durable redis-server of its own with
# appendfsync always), puts BENCH_SESSIONS sessions x BENCH_PER_SESSION messages on it with
# smtp-source, and reports msg/s, Intake's CPU per 1,000 messages, the engine's own CPU per
# 1,000 messages (every process of the engine: PostgreSQL's backends, mariadbd, our
# redis-server), and the ratios to smtp-sink measured in the same run. Then, for
# PostgreSQL, the same load split over two Intake nodes on one database (1 vs 2 nodes).
# Finally it counts what each store holds against what smtp-source saw accepted.
#
#     bench/backends.sh                     # from the repo root
#     BENCH_BACKENDS="sqlite postgres" bench/backends.sh
#
# Loopback only; every run is bounded by BENCH_TIMEOUT. It stops only what it started.
set -Eeuo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_BACKENDS=${BENCH_BACKENDS:-"sqlite postgres mysql redis"}
BENCH_SESSIONS=${BENCH_SESSIONS:-100}
BENCH_PER_SESSION=${BENCH_PER_SESSION:-100}
BENCH_SIZE=${BENCH_SIZE:-4096}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
BENCH_TWO_NODES=${BENCH_TWO_NODES:-1}           # 0: leave out the 1 vs 2 nodes figure
BENCH_OUTAGE=${BENCH_OUTAGE:-3}                 # seconds the engine is down during a second load (0: no outage run)
BENCH_PG_ADMIN=${BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432/test}
BENCH_MYSQL_ADMIN=${BENCH_MYSQL_ADMIN:-mysql://root@127.0.0.1:3306/test}
BENCH_OUT=${BENCH_OUT:-$REPO_ROOT/bench/out}
BENCH_IDLE_TICKS=${BENCH_IDLE_TICKS:-2}         # "idle again": two half-second samples of at most this many CPU ticks each
BENCH_IDLE_MAX=${BENCH_IDLE_MAX:-300}           # seconds to wait at most for Intake and the engine to be idle after a run
BENCH_SEARCH=${BENCH_SEARCH:-}                  # store.search for every Intake ("full", "headers", "off"); empty: the default
RCPT=bench@example.test

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_tool() { command -v "$1" 2>/dev/null || { [[ -x /usr/sbin/$1 ]] && echo "/usr/sbin/$1"; } || true; }
SMTP_SOURCE=$(find_tool smtp-source)
SMTP_SINK=$(find_tool smtp-sink)
[[ -n $SMTP_SOURCE && -n $SMTP_SINK ]] || die "smtp-source and smtp-sink are needed (apt-get install postfix; bench/core.sh can install it)"
for t in psql mysql redis-server timeout xargs; do
    command -v "$t" >/dev/null || log "note: $t not found; backends that need it are skipped"
done

BIN=${INTAKE_BIN:-}
if [[ -z $BIN ]]; then
    log "building: cargo build --release -p intake-server (set INTAKE_BIN to skip)"
    (cd "$REPO_ROOT" && cargo build --release -q -p intake-server)
    BIN=$REPO_ROOT/target/release/intake
fi
[[ -x $BIN ]] || die "no Intake binary at $BIN"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/intake-backends.XXXXXX")
chmod 755 "$WORK"
STARTED=()     # PIDs this script started
DATABASES=()   # "pg NAME" / "my NAME" to drop at the end

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? pid db
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
    for db in "${DATABASES[@]}"; do
        case $db in
            pg\ *) psql "$BENCH_PG_ADMIN" -qc "DROP DATABASE IF EXISTS ${db#pg } WITH (FORCE)" >/dev/null 2>&1 || true ;;
            my\ *) mysql -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS ${db#my }" >/dev/null 2>&1 || true ;;
        esac
    done
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$BENCH_OUT"
ticks_of() { # pid... -> summed utime+stime ticks
    local sum=0 pid stat
    for pid in "$@"; do
        { stat=$(<"/proc/$pid/stat"); } 2>/dev/null || continue
        stat=${stat##*) }
        sum=$((sum + $(awk '{ print $12 + $13 }' <<<"$stat")))
    done
    echo "$sum"
}
pids_named() { # exact process names -> their PIDs (for reading CPU only; never signalled)
    local name f comm
    for f in /proc/[0-9]*/comm; do
        { comm=$(<"$f"); } 2>/dev/null || continue
        for name in "$@"; do [[ $comm == "$name" ]] && echo "${f//[^0-9]/}"; done
    done
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { local p; for _ in $(seq 200); do p=$((20000 + RANDOM % 10000)); port_free "$p" && { echo "$p"; return; }; done; die "no free port"; }
wait_greeting() { # pid port
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        kill -0 "$1" 2>/dev/null || return 1
        timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 2 l <&3 && [[ $l == 220* ]]' _ "$2" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

# wait_idle pid...: waits until these processes have nothing left to do after a run (SQLite's
# search indexing after the commits, an engine's background writes): two half-second samples
# in a row of at most BENCH_IDLE_TICKS CPU ticks each (all of them together), within
# BENCH_IDLE_MAX seconds. Prints their ticks then; IDLE_WAIT is the seconds waited, or
# "timeout" when they were still busy at the limit (the whole cost is then a lower bound).
wait_idle() {
    local quiet=0 a b t0=$SECONDS
    a=$(ticks_of "$@")
    while ((quiet < 2)); do
        if ((SECONDS - t0 >= BENCH_IDLE_MAX)); then IDLE_WAIT="timeout"; echo "$a"; return; fi
        sleep 0.5
        b=$(ticks_of "$@")
        if ((b - a <= BENCH_IDLE_TICKS)); then quiet=$((quiet + 1)); else quiet=0; fi
        a=$b
    done
    IDLE_WAIT=$((SECONDS - t0))
    echo "$a"
}

# smtp-source: `sessions` connections at once, `per` messages each; returns wall ns.
load() { # port sessions per [recipient] -> sets L_NS, L_OK (1/0), L_RC
    local port=$1 sessions=$2 per=$3 rcpt=${4:-$RCPT} t0 rc=0
    seq 1 "$sessions" >"$WORK/jobs.$port"
    t0=$(date +%s%N)
    timeout -k 5 "$BENCH_TIMEOUT" xargs -a "$WORK/jobs.$port" -P "$sessions" -I{} \
        "$SMTP_SOURCE" -d -s 1 -m "$per" -l "$BENCH_SIZE" -f sender@example.test -t "$rcpt" \
        -M client.example.test "inet:127.0.0.1:$port" >"$WORK/load.$port.log" 2>&1 || rc=$?
    L_NS=$(($(date +%s%N) - t0))
    L_RC=$rc
    L_OK=1
    ((rc == 0)) && [[ ! -s $WORK/load.$port.log ]] || L_OK=0
}

start_intake() { # name env... -> sets I_PID I_PORT
    local name=$1; shift
    I_PORT=$(pick_port)
    mkdir -p "$WORK/$name"
    local search=()
    [[ -z $BENCH_SEARCH ]] || search=("INTAKE_STORE__SEARCH=$BENCH_SEARCH")
    env -u INTAKE_BIN INTAKE_SMTP__LISTEN="127.0.0.1:$I_PORT" INTAKE_HTTP__LISTEN="" INTAKE_STORE__PATH="$WORK/$name" \
        INTAKE_LOG__LEVEL=warn "${search[@]}" "$@" "$BIN" serve >"$WORK/$name.log" 2>&1 &
    I_PID=$!
    STARTED+=("$I_PID")
    wait_greeting "$I_PID" "$I_PORT" || { tail -20 "$WORK/$name.log" >&2; die "Intake ($name) did not start"; }
}

# A fresh store per backend: sets STORE_ENV (array) and ENGINE (process names for CPU).
fresh_store() {
    local kind=$1 name
    STORE_ENV=() ENGINE=()
    case $kind in
        sqlite) STORE_ENV=(INTAKE_STORE__TYPE=sqlite) ;;
        postgres)
            command -v psql >/dev/null || return 1
            name=intake_bench_$RANDOM$RANDOM
            DB_NAME=$name
            psql "$BENCH_PG_ADMIN" -qc "CREATE DATABASE $name" >/dev/null || return 1
            DATABASES+=("pg $name")
            STORE_ENV=(INTAKE_STORE__TYPE=postgres "INTAKE_STORE__URL=${BENCH_PG_ADMIN%/*}/$name")
            ENGINE=(postgres) ;;
        mysql)
            command -v mysql >/dev/null || return 1
            name=intake_bench_$RANDOM$RANDOM
            DB_NAME=$name
            mysql -h 127.0.0.1 -u root -e "CREATE DATABASE $name" || return 1
            DATABASES+=("my $name")
            STORE_ENV=(INTAKE_STORE__TYPE=mysql "INTAKE_STORE__URL=${BENCH_MYSQL_ADMIN%/*}/$name")
            ENGINE=(mariadbd mysqld) ;;
        redis)
            command -v redis-server >/dev/null || return 1
            local port; port=$(pick_port)
            mkdir -p "$WORK/redis-$port"
            REDIS_PORT=$port
            start_redis
            STORE_ENV=(INTAKE_STORE__TYPE=redis "INTAKE_STORE__URL=redis://127.0.0.1:$port/0")
            ENGINE=(redis-server) ;;
        *) die "unknown backend $kind" ;;
    esac
}
start_redis() { # on REDIS_PORT, its directory kept across restarts (the AOF is reloaded)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis-$REDIS_PORT" --save '' \
        --appendonly yes --appendfsync always >>"$WORK/redis-$REDIS_PORT.log" 2>&1 &
    REDIS_PID=$!
    STARTED+=("$REDIS_PID")
    # Ready once it answers PONG (not LOADING, while it replays its append-only file).
    for _ in $(seq 200); do
        [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
        sleep 0.05
    done
}

# The engine goes away for BENCH_OUTAGE seconds, as Intake sees a restart: PostgreSQL refuses
# new connections and its sessions on our database are terminated; MariaDB's connections to
# our database are killed again and again; our redis-server is killed (SIGKILL) and started
# again on the same append-only file.
outage() { # kind
    local kind=$1 until=$((SECONDS + BENCH_OUTAGE))
    case $kind in
        postgres)
            psql "$BENCH_PG_ADMIN" -qc "ALTER DATABASE $DB_NAME ALLOW_CONNECTIONS false" \
                -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$DB_NAME'" >/dev/null
            sleep "$BENCH_OUTAGE"
            psql "$BENCH_PG_ADMIN" -qc "ALTER DATABASE $DB_NAME ALLOW_CONNECTIONS true" >/dev/null ;;
        mysql)
            while ((SECONDS < until)); do
                mysql -h 127.0.0.1 -u root -N -e "SELECT CONCAT('KILL ', id, ';') FROM information_schema.processlist WHERE db = '$DB_NAME'" \
                    | mysql -h 127.0.0.1 -u root -f >/dev/null 2>&1 || true
                sleep 0.2
            done ;;
        redis)
            kill -KILL "$REDIS_PID" 2>/dev/null || true
            wait "$REDIS_PID" 2>/dev/null || true
            sleep "$BENCH_OUTAGE"
            start_redis ;;
    esac
}

engine_pids() {
    if [[ ${ENGINE[0]:-} == redis-server ]]; then echo "$REDIS_PID"; else pids_named "${ENGINE[@]}"; fi
}

ROWS=()
per_k() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz / n * 1000 }'; }
rate() { awk -v n="$1" -v ns="$2" 'BEGIN { printf "%.1f", n / (ns / 1e9) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

N=$((BENCH_SESSIONS * BENCH_PER_SESSION))
log "smtp-sink reference: $BENCH_SESSIONS x $BENCH_PER_SESSION"
SINK_PORT=$(pick_port)
sink_args=(-a -C -F -m 256); ((EUID == 0)) && sink_args+=(-u nobody)
"$SMTP_SINK" "${sink_args[@]}" "inet:127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.log" 2>&1 &
SINK_PID=$!; STARTED+=("$SINK_PID")
wait_greeting "$SINK_PID" "$SINK_PORT" || die "smtp-sink did not start"
c0=$(ticks_of "$SINK_PID"); load "$SINK_PORT" "$BENCH_SESSIONS" "$BENCH_PER_SESSION"; sleep 0.2; c1=$(ticks_of "$SINK_PID")
c2=$(wait_idle "$SINK_PID")
SINK_RATE=$(rate "$N" "$L_NS"); SINK_CPU=$(per_k $((c1 - c0)) "$N"); SINK_WHOLE=$(per_k $((c2 - c0)) "$N")
ROWS+=("| smtp-sink | 1 | $SINK_RATE | $SINK_CPU | - | $SINK_WHOLE | - | 1.00x | 1.00x | 1.00x |")
# whole_ratio intake_ticks engine_ticks messages: Intake's and its engine's whole CPU per
# message together, against smtp-sink's.
whole_ratio() { awk -v i="$1" -v e="$2" -v n="$3" -v s="$SINK_WHOLE" -v hz="$CLK_TCK" 'BEGIN { if (s > 0) printf "%.2fx", (i + e) / hz / n * 1000 / s; else print "-" }'; }

CHECKS=()
OUTAGES=()
for kind in $BENCH_BACKENDS; do
    if ! fresh_store "$kind"; then log "skipping $kind (engine or client missing)"; continue; fi
    log "$kind: one node, $BENCH_SESSIONS x $BENCH_PER_SESSION"
    start_intake "$kind" "${STORE_ENV[@]}"
    mapfile -t EP < <(engine_pids)
    c0=$(ticks_of "$I_PID"); e0=$(ticks_of "${EP[@]}")
    load "$I_PORT" "$BENCH_SESSIONS" "$BENCH_PER_SESSION"
    sleep 0.2
    c1=$(ticks_of "$I_PID"); e1=$(ticks_of "${EP[@]}")
    ok=$L_OK
    # Then until Intake and its engine are both idle again: the work after the 250s counts.
    wait_idle "$I_PID" "${EP[@]}" >/dev/null
    [[ $IDLE_WAIT != timeout ]] || CHECKS+=("- $kind: still busy ${BENCH_IDLE_MAX}s after the run; its whole CPU is a lower bound")
    c2=$(ticks_of "$I_PID"); e2=$(ticks_of "${EP[@]}")
    r=$(rate "$N" "$L_NS"); cpu=$(per_k $((c1 - c0)) "$N")
    eng=$([[ ${#EP[@]} -gt 0 ]] && per_k $((e1 - e0)) "$N" || echo "-")
    whole=$(per_k $((c2 - c0)) "$N")
    eng_whole=$([[ ${#EP[@]} -gt 0 ]] && per_k $((e2 - e0)) "$N" || echo "-")
    ROWS+=("| $kind$( ((ok)) || echo ' (errors)') | 1 | $r | $cpu | $eng | $whole | $eng_whole | $(ratio "$r" "$SINK_RATE") | $(ratio "$cpu" "$SINK_CPU") | $(whole_ratio $((c2 - c0)) $((e2 - e0)) "$N") |")
    # One line per message, from Intake's own CLI on the same store.
    stored=$(env -u INTAKE_BIN "${STORE_ENV[@]}" INTAKE_STORE__PATH="$WORK/$kind" timeout 300 "$BIN" mailbox list "$RCPT" 2>/dev/null | wc -l || echo "?")
    CHECKS+=("- $kind: the store holds $stored messages for <$RCPT>; smtp-source sent $N$( ((ok)) && echo ", all accepted" || echo ", with errors (see the log)")")

    if ((BENCH_OUTAGE > 0)) && [[ $kind != sqlite ]]; then
        log "$kind: twice the load again, the engine away for ${BENCH_OUTAGE}s from 0.3 s in"
        t0=$(date +%s%N)
        load "$I_PORT" "$BENCH_SESSIONS" $((BENCH_PER_SESSION * 2)) outage@example.test & LO=$!
        sleep 0.3
        outage "$kind"
        lrc=0; wait "$LO" || lrc=$?
        wall=$(awk -v ns="$(($(date +%s%N) - t0))" 'BEGIN { printf "%.1f", ns / 1e9 }')
        # smtp-source logs every reply it did not expect, with its code.
        soft=$(grep -cE ': 4[0-9][0-9] [0-9]\.' "$WORK/load.$I_PORT.log" || true)
        hard=$(grep -cE ': 5[0-9][0-9] [0-9]\.' "$WORK/load.$I_PORT.log" || true)
        hung=$( ((lrc == 124 || lrc == 137)) && echo "yes, killed after ${BENCH_TIMEOUT}s" || echo no)
        kept=$(env -u INTAKE_BIN "${STORE_ENV[@]}" INTAKE_STORE__PATH="$WORK/$kind" timeout 300 "$BIN" mailbox list outage@example.test 2>"$WORK/outage-list.err" | wc -l) || kept="? ($(head -c 200 "$WORK/outage-list.err"))"
        cp "$WORK/load.$I_PORT.log" "$BENCH_OUT/outage-$kind-smtp-source.log" 2>/dev/null || true
        OUTAGES+=("| $kind | ${BENCH_OUTAGE}s | $wall | $soft | $hard | $hung | $kept of $((N * 2)) |")
    fi
    stop_pid "$I_PID"

    if [[ $kind == postgres && $BENCH_TWO_NODES == 1 ]]; then
        fresh_store postgres
        log "postgres: two nodes on one database, $((BENCH_SESSIONS / 2)) sessions each"
        start_intake pg-a "${STORE_ENV[@]}"; A_PID=$I_PID; A_PORT=$I_PORT
        start_intake pg-b "${STORE_ENV[@]}"; B_PID=$I_PID; B_PORT=$I_PORT
        mapfile -t EP < <(engine_pids)
        c0=$(ticks_of "$A_PID" "$B_PID"); e0=$(ticks_of "${EP[@]}")
        t0=$(date +%s%N)
        load "$A_PORT" $((BENCH_SESSIONS / 2)) "$BENCH_PER_SESSION" & LA=$!
        load "$B_PORT" $((BENCH_SESSIONS / 2)) "$BENCH_PER_SESSION" & LB=$!
        wait "$LA"; wait "$LB"
        ns=$(($(date +%s%N) - t0))
        sleep 0.2
        c1=$(ticks_of "$A_PID" "$B_PID"); e1=$(ticks_of "${EP[@]}")
        wait_idle "$A_PID" "$B_PID" "${EP[@]}" >/dev/null
        c2=$(ticks_of "$A_PID" "$B_PID"); e2=$(ticks_of "${EP[@]}")
        n2=$(((BENCH_SESSIONS / 2) * 2 * BENCH_PER_SESSION))
        r=$(rate "$n2" "$ns"); cpu=$(per_k $((c1 - c0)) "$n2"); eng=$(per_k $((e1 - e0)) "$n2")
        ok2=1; [[ -s $WORK/load.$A_PORT.log || -s $WORK/load.$B_PORT.log ]] && ok2=0
        ROWS+=("| postgres$( ((ok2)) || echo ' (errors)') | 2 | $r | $cpu | $eng | $(per_k $((c2 - c0)) "$n2") | $(per_k $((e2 - e0)) "$n2") | $(ratio "$r" "$SINK_RATE") | $(ratio "$cpu" "$SINK_CPU") | $(whole_ratio $((c2 - c0)) $((e2 - e0)) "$n2") |")
        stop_pid "$A_PID"; stop_pid "$B_PID"
    fi
done

OUT=$BENCH_OUT/backends-$(date +%Y%m%d-%H%M%S).md
{
    echo "## Store engines: $BENCH_SESSIONS sessions x $BENCH_PER_SESSION messages of ${BENCH_SIZE} bytes, $(date -u +%Y-%m-%d)"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo). Intake CPU and engine CPU are user+system seconds per 1,000 messages (all threads / all engine processes) while smtp-source sent; the *whole* columns count on until Intake and the engine were idle again (two half-second samples of at most $BENCH_IDLE_TICKS ticks each), so work done after the 250s (SQLite's search indexing, the engine's background writes) is in them. CPU vs sink: Intake's CPU while sending against smtp-sink's; whole vs sink: Intake's and the engine's whole CPU together against smtp-sink's (which has nothing left to do). store.search: ${BENCH_SEARCH:-full (the default)}."
    echo
    echo "| server | nodes | msg/s | Intake CPU s/1k | engine CPU s/1k | Intake whole CPU s/1k | engine whole CPU s/1k | msg/s vs sink | CPU vs sink | whole vs sink |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    printf '%s\n' "${CHECKS[@]}"
    if ((${#OUTAGES[@]})); then
        echo
        echo "### The engine away mid-load ($BENCH_SESSIONS x $BENCH_PER_SESSION, outage from 0.3 s in)"
        echo
        echo "smtp-source sends twice the load; its sessions end at the first 4xx (a real client would retry later), so the run ends soon after the outage begins. 4xx / 5xx: sessions that got one; hung: whether smtp-source had to be killed; stored: the messages the store holds afterwards (each was acknowledged, or answered 4xx with its commit gone through anyway)."
        echo
        echo "| store | outage | wall s | 4xx | 5xx | hung | stored |"
        echo "|---|---:|---:|---:|---:|---|---:|"
        printf '%s\n' "${OUTAGES[@]}"
    fi
} | tee "$OUT"
log "saved $OUT"
