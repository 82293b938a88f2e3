#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2206  # lists of numbers are word-split on purpose
# test/bench/events.sh — what change events cost a writer.
#
#   bash test/bench/events.sh            # as root, from the repo root
#   BENCH_T=5 BENCH_ROUNDS=1 bash test/bench/events.sh    # quicker
#
# The write_path.sh load (pgbench, 2 clients, single-row UPDATE of a random
# row of a 100k-row table, synchronous_commit = off, BENCH_T (10) seconds per
# run) for each mode (BENCH_MODES: write_through write_around async) three
# ways: plain, with notify => true, with changes => true.  Configs are
# interleaved per round; the summary gives the median TPS of BENCH_ROUNDS (3)
# rounds and the ratio of each option to the same mode without it (target
# >= 0.95x).  A redis-cli subscriber listens on the all-tables channel during
# the notify runs (BENCH_SUBSCRIBER=0: none; on a small machine its CPU is
# the writers' CPU).  Not a pass/fail test.
set -euo pipefail
# shellcheck source=test/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

T=${BENCH_T:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-2}
MODES=(${BENCH_MODES:-write_through write_around async})
OPTS=(plain notify changes)

bench_setup
SCRIPT=$CS_TMP/update.sql
cat >"$SCRIPT" <<EOF
\set id random(1, $BENCH_ROWS)
UPDATE bench SET v = v + 1, t = now() WHERE id = :id;
EOF
chmod 644 "$SCRIPT"


# Registers bench in mode $1 with option $2 on (plain: none).
events_mode() {
    local notify=false changes=false
    [[ $2 == notify ]] && notify=true
    [[ $2 == changes ]] && changes=true
    bq -c "SELECT cachesync.register('bench', mode => '$1', notify => $notify, changes => $changes)" >/dev/null
}

declare -A TPS=()
SUB_PID=
run_one() {   # mode opt round
    local mode=$1 opt=$2 round=$3 out tps extra=""
    events_mode "$mode" "$opt"
    bq -c "CHECKPOINT"
    if [[ $opt == notify && ${BENCH_SUBSCRIBER:-1} == 1 ]]; then
        redis-cli -h 127.0.0.1 -p "$CS_REDIS_PORT" SUBSCRIBE __cachesync:invalidate >/dev/null 2>&1 &
        SUB_PID=$!
    fi
    out=$(PGOPTIONS="-c synchronous_commit=off" "$CS_PGBIN/pgbench" -h "$CS_PGHOST" -p "$CS_PGPORT" \
            -U postgres -n -c "$CLIENTS" -j "$CLIENTS" -T "$T" -f "$SCRIPT" "$CS_DB" 2>&1) || true
    if [[ -n $SUB_PID ]]; then kill "$SUB_PID" 2>/dev/null || true; wait "$SUB_PID" 2>/dev/null || true; SUB_PID=; fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    if [[ -z $tps ]]; then
        echo "$out" >&2
        cs_die "pgbench failed ($mode/$opt/round $round)"
    fi
    TPS[$mode,$opt]+="$tps "
    local t0=$SECONDS depth
    [[ $opt != changes ]] || depth=$(outbox_depth)
    drain_after_run "$mode" "$opt"
    [[ $opt != changes ]] || extra=" (outbox $depth at end of run, drained in $((SECONDS - t0)) s)"
    bench_log "round $round $(printf '%-13s %-8s' "$mode" "$opt") tps=$tps$extra"
}

bench_log "events: $CLIENTS clients, $T s per run, $ROUNDS rounds x ${#MODES[@]} modes x ${#OPTS[@]} options, synchronous_commit=off"
for round in $(seq "$ROUNDS"); do
    for mode in "${MODES[@]}"; do
        for opt in "${OPTS[@]}"; do
            run_one "$mode" "$opt" "$round"
        done
    done
    bq -c "VACUUM bench"
done

echo
echo "== change events on the write path: UPDATE bench SET v = v + 1, t = now() WHERE id = :id (random of $BENCH_ROWS)"
echo "   pgbench -c $CLIENTS -j $CLIENTS -T $T -n, synchronous_commit=off, median of $ROUNDS interleaved rounds, fsync=$(bq -c 'SHOW fsync'), $(nproc) CPUs"
echo "   ratio: TPS with the option / TPS of the same mode without it (target >= 0.95x)"
printf '  %-14s %-8s %-26s %10s %7s\n' mode option "TPS per round" median ratio
for mode in "${MODES[@]}"; do
    base=$(median ${TPS[$mode,plain]})
    for opt in "${OPTS[@]}"; do
        m=$(median ${TPS[$mode,$opt]})
        ratio=$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a / b}')
        printf '  %-14s %-8s %-26s %10.0f %6sx\n' "$mode" "$opt" "$(printf '%.0f ' ${TPS[$mode,$opt]})" "$m" "$ratio"
    done
done
echo
bq -c "SELECT 'published ' || published || ', publish_lost ' || publish_lost || ', changes_appended ' || changes_appended FROM cachesync.stats WHERE rel = 'bench'::regclass"
problems=$(bench_pg_log_problems)
if [[ -n $problems ]]; then
    echo "server log lines mentioning problems ($(wc -l <<<"$problems")), first 10:"
    head -n 10 <<<"$problems" | sed 's/^/  /'
else
    echo "server log: no WARNING/ERROR/worker problem lines"
fi
