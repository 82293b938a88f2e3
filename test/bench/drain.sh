#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2206  # lists of numbers are word-split on purpose
# test/bench/drain.sh — how fast the background worker drains the async queue.
#
#   bash test/bench/drain.sh                 # as root, from the repo root
#   BENCH_REPS=1 bash test/bench/drain.sh    # quicker
#
# The 100k-row bench table is registered async.  Two full-table UPDATEs in
# separate transactions queue 200k changes while either Redis is STOPPED
# (BENCH_HOLD=redis: then started again; a restarted Redis makes the worker
# load the table, and the load covers the changes queued before it) or the
# worker is stopped with SIGSTOP (BENCH_HOLD=worker: Redis keeps the cache,
# every entry is shipped: the worker's shipping rate).  Default: both.  The
# script times how long the worker takes to empty cachesync.queue (polled
# every 50 ms), reported as changes/s.  BENCH_REPS (3)
# repetitions, median; for cachesync.batch_size 1000 (the default) and 5000.
#
# The clock starts when the restarted Redis answers PING; the poller wakes the
# worker at once with pg_reload_conf() (SIGHUP sets its latch), so the worker's
# outage back-off (up to 5 s) is not counted, but its reconnect and healing
# pass are.  Note that a restarted Redis is empty (no persistence).
#
# Baseline in the same run: `redis-cli --pipe` of 200k SET commands with the
# same row_to_json values (what Redis alone absorbs), and of 200k
# `FCALL cachesync_put` (one fenced write per row), and of the same rows in
# `FCALL cachesync_put_many` calls of 128 rows (what populators send).
set -euo pipefail
# shellcheck source=test/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REPS=${BENCH_REPS:-3}
BATCHES=(${BENCH_BATCHES:-1000 5000})
TARGET=80000

bench_setup
bench_mode async
changes=$((2 * BENCH_ROWS))
declare -A RATE=() TOTAL=() CPU=()

CLK_TCK=$(getconf CLK_TCK)
cpu_s() {   # CPU seconds (user + system) used so far by pid $1
    awk -v hz="$CLK_TCK" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}
worker_pid() { bq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'cachesync worker'"; }


check_cache() {   # a few rows: Redis value == row_to_json of the row
    local id want got bad=0
    for id in 1 $((BENCH_ROWS / 2)) "$BENCH_ROWS"; do
        got=$(cs_redis_cli GET "public.bench:$id")
        want=$(bq -c "SELECT row_to_json(b)::jsonb = \$j\$$got\$j\$::jsonb FROM bench b WHERE id = $id" 2>/dev/null || echo f)
        [[ $want == t ]] || { bench_log "MISMATCH id $id: redis has '$got'"; bad=1; }
    done
    return $bad
}

HOLDS=(${BENCH_HOLD:-redis worker})
for hold in "${HOLDS[@]}"; do
for bs in "${BATCHES[@]}"; do
    bq -c "ALTER SYSTEM SET cachesync.batch_size = $bs" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 0.5
    for rep in $(seq "$REPS"); do
        wpid=$(worker_pid)
        if [[ $hold == redis ]]; then
            # Redis stopped, then restarted: a restarted Redis (another
            # run_id) makes the worker load every write_through/async table
            # first, and that load covers the changes queued before it
            cs_redis_cli SAVE >/dev/null
            bench_redis_stop
        else
            # the worker stopped (SIGSTOP), Redis up and holding the cache:
            # the queue is shipped entry by entry, nothing is reloaded
            kill -STOP "$wpid"
        fi
        s0=$(date +%s.%N)
        bq -c "UPDATE bench SET v = v + 1" -c "UPDATE bench SET v = v + 1"
        upd_s=$(awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
        depth=$(queue_depth)
        wcpu0=$(cpu_s "$wpid")
        rcpu0=0
        if [[ $hold == redis ]]; then bench_redis_start; else rcpu0=$(cpu_s "$CS_REDIS_PID"); kill -CONT "$wpid"; fi
        t0=$(date +%s.%N)
        res=$("$BENCH_PY" "$BENCH_DIR/drain_poll.py" "$(bench_dsn)" "$t0" 300) ||
            { echo "$res" >&2; cs_die "the queue did not drain (batch_size $bs)"; }
        wcpu=$(awk -v a="$wcpu0" -v b="$(cpu_s "$wpid")" 'BEGIN {printf "%.2f", b - a}')
        rcpu=$(awk -v a="$rcpu0" -v b="$(cpu_s "$CS_REDIS_PID")" 'BEGIN {printf "%.2f", b - a}')
        total=$(sed -n 's/.*total_s=\([0-9.]*\).*/\1/p' <<<"$res")
        first=$(sed -n 's/.*first_s=\([0-9.]*\).*/\1/p' <<<"$res")
        rate=$(awk -v n="$depth" -v s="$total" 'BEGIN {printf "%.0f", n / s}')
        RATE[$hold $bs]+="$rate "
        TOTAL[$hold $bs]+="$total "
        ok=ok; check_cache || ok="CACHE MISMATCH"
        bench_log "$hold held, batch_size=$bs rep $rep: queued $depth changes (2 UPDATEs of $BENCH_ROWS rows took ${upd_s} s); drained in ${total} s (first batch gone after ${first} s) = $rate changes/s; CPU during the drain: worker ${wcpu} s, redis ${rcpu} s; spot check $ok"
        CPU[$hold $bs]+="worker ${wcpu}s/redis ${rcpu}s of ${total}s; "
        [[ $depth == "$changes" ]] || bench_log "note: expected $changes queued changes, found $depth"
        bq -c "VACUUM cachesync.queue" -c "VACUUM bench"
    done
done
done

# -- baseline: Redis alone ------------------------------------------------------
declare -A PIPE=()
for kind in set fcall fcall_many; do
    f=$CS_TMP/pipe.$kind
    n=$("$BENCH_PY" "$BENCH_DIR/drain_pipe.py" "$(bench_dsn)" "$f" "$kind" 2)
    for rep in $(seq "$REPS"); do
        cs_redis_cli -n 1 FLUSHDB >/dev/null
        s0=$(date +%s.%N)
        out=$(cs_redis_cli -n 1 --pipe <"$f" 2>&1)
        s1=$(date +%s.%N)
        grep -q 'errors: 0' <<<"$out" || { echo "$out" >&2; cs_die "redis-cli --pipe ($kind) reported errors"; }
        rate=$(awk -v n="$n" -v a="$s0" -v b="$s1" 'BEGIN {printf "%.0f", n / (b - a)}')
        PIPE[$kind]+="$rate "
        bench_log "redis-cli --pipe $n rows as $kind commands: $(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.3f", b - a}') s = $rate rows/s"
    done
    cs_redis_cli -n 1 FLUSHDB >/dev/null
done

# -- summary ----------------------------------------------------------------------
set_med=$(median ${PIPE[set]})
fcall_med=$(median ${PIPE[fcall]})
many_med=$(median ${PIPE[fcall_many]})
echo
echo "== async queue drain: $changes queued changes ($BENCH_ROWS distinct keys, format json), median of $REPS, fsync=$(bq -c 'SHOW fsync'), $(nproc) CPUs"
printf '  %-22s %-28s %12s  %-10s %s\n' config "changes/s per rep" median "vs SET" "target >= $TARGET/s"
for hold in "${HOLDS[@]}"; do
for bs in "${BATCHES[@]}"; do
    m=$(median ${RATE[$hold $bs]})
    if awk -v r="$m" -v t="$TARGET" 'BEGIN {exit !(r >= t)}'; then v="target met"; else v="below target"; fi
    printf '  %-22s %-28s %12.0f  %-10s %s\n' "$hold held, bs=$bs" "${RATE[$hold $bs]}" "$m" \
        "$(awk -v a="$m" -v b="$set_med" 'BEGIN {printf "%.2fx", a / b}')" "$v"
done
done
echo "  (redis held: Redis restarted, the worker's load covers the queue; worker held: every entry shipped)"
printf '  %-22s %-28s %12.0f  %-10s %s\n' "redis-cli --pipe SET" "${PIPE[set]}" "$set_med" "1.00x" "(Redis alone, baseline)"
printf '  %-22s %-28s %12.0f  %-10s %s\n' "redis-cli --pipe FCALL" "${PIPE[fcall]}" "$fcall_med" \
    "$(awk -v a="$fcall_med" -v b="$set_med" 'BEGIN {printf "%.2fx", a / b}')" "(cachesync_put per row, Redis alone)"
printf '  %-22s %-28s %12.0f  %-10s %s\n' "redis-cli --pipe MANY" "${PIPE[fcall_many]}" "$many_med" \
    "$(awk -v a="$many_med" -v b="$set_med" 'BEGIN {printf "%.2fx", a / b}')" "(rows/s, cachesync_put_many of 128 rows, Redis alone)"
echo "  drain times (s), from Redis answering again (or the worker resumed) to an empty queue:"
for hold in "${HOLDS[@]}"; do for bs in "${BATCHES[@]}"; do echo "    $hold held, batch_size=$bs: ${TOTAL[$hold $bs]}"; done; done
echo "  CPU used during each drain (wall time last):"
for hold in "${HOLDS[@]}"; do for bs in "${BATCHES[@]}"; do echo "    $hold held, batch_size=$bs: ${CPU[$hold $bs]}"; done; done
problems=$(bench_pg_log_problems)
if [[ -n $problems ]]; then
    echo "server log lines mentioning problems or the worker ($(wc -l <<<"$problems")), first 12 (the Redis stops are deliberate):"
    head -n 12 <<<"$problems" | sed 's/^/  /'
fi
