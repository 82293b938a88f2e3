#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2206  # lists of numbers are word-split on purpose
# test/bench/write_path.sh — cost of cachesync on the write path.
#
#   bash test/bench/write_path.sh            # as root, from the repo root
#   BENCH_T=5 BENCH_ROUNDS=1 bash test/bench/write_path.sh    # quicker
#
# pgbench, 2 clients, single-row UPDATE of a random row of a 100k-row table,
# BENCH_T (10) seconds per run.  Configs: baseline (table not registered),
# write_through, write_around, async; for synchronous_commit = off and on.
# The configs are interleaved (round 1: baseline, wt, wa, async; round 2: ...)
# so that drift (other load, bloat, checkpoints) hits every config alike; the
# summary takes the median TPS of BENCH_ROUNDS (3) rounds and its ratio to the
# baseline.  Not a pass/fail test: it always exits 0 once it has measured.
set -euo pipefail
# shellcheck source=test/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

T=${BENCH_T:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-2}
MODES=(baseline ${BENCH_MODES:-write_through write_around async})
SCS=(${BENCH_SC:-off on})
declare -A TARGET=([write_through]=0.85 [write_around]=0.85 [async]=0.93)

bench_setup
SCRIPT=$CS_TMP/update.sql
cat >"$SCRIPT" <<EOF
\set id random(1, $BENCH_ROWS)
UPDATE bench SET v = v + 1, t = now() WHERE id = :id;
EOF
chmod 644 "$SCRIPT"

declare -A TPS=() LAT=() FAILED=()
run_one() {   # sync_commit mode round
    local sc=$1 mode=$2 round=$3 out tps lat failed
    bench_mode "$mode"
    bq -c "CHECKPOINT"
    out=$(PGOPTIONS="-c synchronous_commit=$sc" "$CS_PGBIN/pgbench" -h "$CS_PGHOST" -p "$CS_PGPORT" \
            -U postgres -n -c "$CLIENTS" -j "$CLIENTS" -T "$T" -f "$SCRIPT" "$CS_DB" 2>&1) || true
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
    if [[ -z $tps ]]; then
        echo "$out" >&2
        cs_die "pgbench failed ($sc/$mode/round $round)"
    fi
    TPS[$sc,$mode]+="$tps "
    LAT[$sc,$mode]+="$lat "
    FAILED[$sc,$mode]=$(( ${FAILED[$sc,$mode]:-0} + ${failed:-0} ))
    local extra=""
    if [[ $mode == async ]]; then
        local t0=$SECONDS depth
        depth=$(queue_depth)
        wait_queue_empty 180 || cs_die "the async queue did not drain"
        extra=" (queue $depth at end of run, drained in $((SECONDS - t0)) s)"
        bq -c "VACUUM cachesync.queue"
    fi
    bench_log "sync_commit=$sc round $round $(printf '%-13s' "$mode") tps=$tps lat=${lat}ms failed=${failed:-0}$extra"
}

bench_log "write path: $CLIENTS clients, $T s per run, $ROUNDS rounds x ${#MODES[@]} configs x ${#SCS[@]} synchronous_commit settings"
for sc in "${SCS[@]}"; do
    for round in $(seq "$ROUNDS"); do
        for mode in "${MODES[@]}"; do
            run_one "$sc" "$mode" "$round"
        done
        bench_mode baseline
        bq -c "VACUUM bench"
    done
done

# -- summary ------------------------------------------------------------------
echo
echo "== write path: UPDATE bench SET v = v + 1, t = now() WHERE id = :id (random of $BENCH_ROWS)"
echo "   pgbench -c $CLIENTS -j $CLIENTS -T $T -n, median of $ROUNDS interleaved rounds, fsync=$(bq -c 'SHOW fsync'), $(nproc) CPUs"
echo "   targets (from the issue, for synchronous_commit=off): write_through >= 0.85x, write_around >= 0.85x, async >= 0.93x"
for sc in "${SCS[@]}"; do
    echo
    echo "synchronous_commit=$sc"
    printf '  %-14s %-26s %10s %7s %9s %9s  %s\n' mode "TPS per round" "median" ratio "lat ms" "+us/txn" "target"
    base=$(median ${TPS[$sc,baseline]})
    base_lat=$(median ${LAT[$sc,baseline]})
    for mode in "${MODES[@]}"; do
        m=$(median ${TPS[$sc,$mode]})
        l=$(median ${LAT[$sc,$mode]})
        ratio=$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a / b}')
        plus=$(awk -v a="$l" -v b="$base_lat" 'BEGIN {printf "%+.0f", (a - b) * 1000}')
        verdict="-"
        if [[ -n ${TARGET[$mode]:-} ]]; then
            if awk -v r="$ratio" -v t="${TARGET[$mode]}" 'BEGIN {exit !(r >= t)}'; then
                verdict=">= ${TARGET[$mode]}x: target met"
            else
                verdict=">= ${TARGET[$mode]}x: below target"
            fi
            [[ $sc == on ]] && verdict="$verdict (target set for sync commit off)"
        fi
        [[ $mode == baseline ]] && plus="-"
        [[ ${FAILED[$sc,$mode]} -gt 0 ]] && verdict="$verdict; ${FAILED[$sc,$mode]} failed transactions"
        printf '  %-14s %-26s %10.0f %6sx %9s %9s  %s\n' "$mode" "$(printf '%.0f ' ${TPS[$sc,$mode]})" \
            "$m" "$ratio" "$l" "$plus" "$verdict"
    done
done
echo
bq -c "SELECT count(*) || ' rows left in cachesync.queue' FROM cachesync.queue"
problems=$(bench_pg_log_problems)
if [[ -n $problems ]]; then
    echo "server log lines mentioning problems ($(wc -l <<<"$problems")), first 10:"
    head -n 10 <<<"$problems" | sed 's/^/  /'
else
    echo "server log: no WARNING/ERROR/worker problem lines"
fi
