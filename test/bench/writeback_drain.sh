#!/usr/bin/env bash
# test/bench/writeback_drain.sh — how fast the write-back worker applies a
# write-back stream, against a hand-written consumer.
#
#   bash test/bench/writeback_drain.sh               # as root, from the repo root
#   BENCH_REPS=1 BENCH_WB_N=50000 bash test/bench/writeback_drain.sh   # quicker
#
# The 100k-row bench table is registered write_back.  The write-back worker is
# paused (SIGSTOP) while BENCH_WB_N (200k) upsert entries {"id": k, "v": i}
# (k random: keys repeat) are appended to its stream; then
# writeback_consumer.py wait sends SIGCONT and runs the clock until
# cachesync.writeback_progress holds the last entry id and no entry is
# pending in the group (all acknowledged, which waits for the commits' WAL
# flush), polled every 20 ms over one connection each: entries/s.
#
# Baseline in the same run, interleaved: writeback_consumer.py (XREADGROUP
# COUNT 500, repeated keys collapsed in stream order, psycopg2 execute_values
# upsert, commit, XACK + XDEL) draining the same number of entries into a
# copy of the table.  BENCH_REPS (3) repetitions, medians, ratio.
set -euo pipefail
# shellcheck source=test/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REPS=${BENCH_REPS:-3}
N=${BENCH_WB_N:-200000}
STREAM=public.bench:__writeback
PY=$BENCH_DIR/writeback_consumer.py

bench_setup
bq -c "CREATE TABLE bench_py (LIKE bench INCLUDING ALL)" -c "INSERT INTO bench_py SELECT * FROM bench"
bench_mode write_back
wb_pid() { bq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'cachesync writeback'"; }
until [[ $(cs_redis_cli HEXISTS __cachesync:writeback "$STREAM") == 1 ]]; do sleep 0.1; done

# user + system CPU ticks of process $1 so far
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# microseconds per entry of $1 CPU ticks
per_entry() { awk -v n="$N" -v c="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", c / hz * 1e6 / n}'; }

# cachesync: entries/s of one run (logs the worker's CPU per entry)
run_cachesync() {
    local pid last rate c0 c1 r0 r1
    pid=$(wb_pid)
    kill -STOP "$pid"
    "$BENCH_PY" "$PY" queue "$CS_REDIS_PORT" "$STREAM" "$N" "$BENCH_ROWS"
    last=$(cs_redis_cli XREVRANGE "$STREAM" + - COUNT 1 | head -1)
    c0=$(cpu_ticks "$pid") r0=$(cpu_ticks "$CS_REDIS_PID")
    # SIGCONT, then timed until applied and acknowledged (the commits flushed
    # to disk: see README)
    rate=$("$BENCH_PY" "$PY" wait "$CS_REDIS_PORT" "$STREAM" "$N" "$(bench_dsn)" bench "$pid" "$last")
    c1=$(cpu_ticks "$pid") r1=$(cpu_ticks "$CS_REDIS_PID")
    bench_log "  CPU per entry: worker $(per_entry $((c1 - c0))) us, redis-server $(per_entry $((r1 - r0))) us"
    echo "$rate"
}

run_python() {
    local s=bench_py:stream
    cs_redis_cli DEL "$s" >/dev/null
    "$BENCH_PY" "$PY" queue "$CS_REDIS_PORT" "$s" "$N" "$BENCH_ROWS"
    "$BENCH_PY" "$PY" drain "$CS_REDIS_PORT" "$s" "$N" "$(bench_dsn)" bench_py
}

CS=() PYR=()
# Every run starts from the same state: the earlier runs' dead rows vacuumed
# (no autovacuum or autoanalyze due in the run), right after a checkpoint
# (every run writes its pages' full-page images).  BENCH_VACUUM=0: not.
fresh() { [[ ${BENCH_VACUUM:-1} == 0 ]] || bq -c "VACUUM ANALYZE $1" -c "CHECKPOINT"; }
for rep in $(seq "$REPS"); do
    fresh bench
    r=$(run_cachesync); CS+=("$r"); bench_log "rep $rep: cachesync $r entries/s"
    fresh bench_py
    r=$(run_python); PYR+=("$r"); bench_log "rep $rep: python consumer $r entries/s"
done
check=$(bq -c "SELECT count(*) FROM bench b JOIN bench_py p USING (id) WHERE b.v IS DISTINCT FROM p.v")
mc=$(median "${CS[@]}"); mp=$(median "${PYR[@]}")
echo
echo "write-back drain, $N entries per run, batch_size $(bq -c 'SHOW cachesync.batch_size'), $REPS reps"
echo "  cachesync worker:          ${CS[*]}  median $mc entries/s"
echo "  hand-written consumer:     ${PYR[*]}  median $mp entries/s"
awk -v a="$mc" -v b="$mp" 'BEGIN {r = a / b; printf "  ratio: %.2fx (target >= 2x: %s)\n", r, (r >= 2 ? "met" : "below target")}'
echo "  rows differing between the two tables afterwards (same entries each rep): $check"
bench_pg_log_problems | tail -5
