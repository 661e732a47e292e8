#!/usr/bin/env bash
# bench/median.sh: bench/core.sh run several times, read together.
#
# One core run measures each server for a few seconds, and its Intake/smtp-sink ratios move
# with whatever else the machine's host is doing (docs/performance.md, "The durable wait").
# This runs bench/core.sh BENCH_RUNS times in a row (each run is complete: both servers, a
# fresh store, the same settings, taken from the environment as core.sh takes them) and
# reports, for each configuration, every run's ratios and their median: the figure the
# goals are stated in.
#
#     BENCH_RUNS=3 BENCH_SESSIONS=100 BENCH_PER_SESSION=100 BENCH_RELAY=0 bench/median.sh
#
# The table is printed and saved to bench/out/median-<date>-<time>.md; each run's own
# report stays in bench/out/median-<date>-<time>/run-<n>/.
set -Eeuo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_OUT=${BENCH_OUT:-$REPO_ROOT/bench/out}

log() { printf '%s\n' "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $BENCH_RUNS =~ ^[0-9]+$ ]] && ((BENCH_RUNS > 0 && BENCH_RUNS <= 50)) \
    || die "BENCH_RUNS must be a whole number from 1 to 50 (got '$BENCH_RUNS')"
[[ ${BENCH_ONLY:-} == "" ]] || die "BENCH_ONLY is not for median.sh: a ratio needs both servers"

stamp=$(date -u +%Y%m%d-%H%M%S)
runs_dir="$BENCH_OUT/median-$stamp"
mkdir -p "$runs_dir"
failed=""
for ((i = 1; i <= BENCH_RUNS; i++)); do
    log "run $i of $BENCH_RUNS"
    # A run that saw a failure still writes its report (the failure in place of a figure).
    BENCH_OUT="$runs_dir/run-$i" "$REPO_ROOT/bench/core.sh" >/dev/null || failed+=" $i"
done

# Each run's report (core.sh writes one into its BENCH_OUT).
reports=()
for ((i = 1; i <= BENCH_RUNS; i++)); do
    found=("$runs_dir/run-$i"/core-*.md)
    [[ -e ${found[0]} ]] || die "run $i left no report in $runs_dir/run-$i"
    reports+=("${found[0]}")
done

# Each report's table, by the names of its columns (a relay or checks server adds some), as
# tab-separated lines: sessions, msgs/session, run, msg/s ratio, CPU ratio, whole CPU ratio.
rows=$(for ((i = 1; i <= BENCH_RUNS; i++)); do
    awk -F'|' -v run="$i" '
        function trim(s) { gsub(/^ +| +$/, "", s); return s }
        /^\| sessions \|/ {
            for (c = 2; c < NF; c++) col[trim($c)] = c
            table = 1; next
        }
        table && /^\|---/ { next }
        table && /^\| [0-9]/ {
            printf "%s\t%s\t%s\t%s\t%s\t%s\n", trim($2), trim($3), run,
                trim($col["Intake/sink msg/s"]), trim($col["Intake/sink CPU"]),
                trim($col["Intake/sink whole CPU"])
            next
        }
        table && !/^\|/ { table = 0 }' "${reports[i - 1]}"
done)
[[ -n $rows ]] || die "the reports in $runs_dir hold no table"

median_table() {
    printf '%s\n' "$rows" | sort -t$'\t' -k1,1n -k2,2n -k3,3n | awk -F'\t' '
        function median(list,    n, a, i, j, t) {
            n = split(list, a, " ")
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
                t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
            }
            if (n == 0) return "n/a"
            return n % 2 ? a[(n + 1) / 2] : sprintf("%.3f", (a[n / 2] + a[n / 2 + 1]) / 2)
        }
        function flush() {
            if (key == "") return
            split(key, k, SUBSEP)
            printf "| %s | %s | %s | %s | %s | %s | **%s** | **%s** | **%s** |\n", k[1], k[2], n,
                rate, cpu, whole, median(rate), median(cpu), median(whole)
        }
        BEGIN {
            print "| sessions | msgs/session | runs | msg/s vs sink, each run | CPU while sending vs sink | whole CPU vs sink | median msg/s | median CPU | median whole CPU |"
            print "|---:|---:|---:|---|---|---|---:|---:|---:|"
        }
        {
            if ($1 SUBSEP $2 != key) { flush(); key = $1 SUBSEP $2; n = 0; rate = cpu = whole = "" }
            # A failed run shows "n/a" or a marked status instead of a ratio: left out.
            if ($4 ~ /^[0-9.]+$/) rate = rate (rate == "" ? "" : " ") $4
            if ($5 ~ /^[0-9.]+$/) cpu = cpu (cpu == "" ? "" : " ") $5
            if ($6 ~ /^[0-9.]+$/) whole = whole (whole == "" ? "" : " ") $6
            n++
        }
        END { flush() }'
}

out="$BENCH_OUT/median-$stamp.md"
{
    echo "### Core benchmark, $BENCH_RUNS runs, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    # The first run's description of the machine, the binary and the load.
    awk '/^\|/ { exit } /^- / { print }' "${reports[0]}"
    echo
    median_table
    echo
    echo "Each run is a whole \`bench/core.sh\` run (smtp-sink, then Intake on a fresh store); ratios are"
    echo "Intake divided by smtp-sink in the same run (msg/s: higher is better for Intake; CPU: lower is"
    echo "better). A run whose ratio could not be taken is left out of its median. Each run's report:"
    echo "\`$runs_dir/run-<n>/\`."
    if [[ -n $failed ]]; then echo; echo "**Runs with failures:$failed** (see their reports)."; fi
} >"$out"
cat "$out"
log "saved to $out"
if [[ -n $failed ]]; then
    log "runs with failures:$failed (their reports list them)"
    exit 1
fi
