# shellcheck shell=bash
# test/bench/common.sh — helpers shared by the benchmarks in test/bench/.
# Sourced, never run.  Builds on scripts/lib.sh (private Redis + Postgres,
# stopped by PID on exit).
#
# Environment knobs (all optional):
#   BENCH_NO_BUILD=1   do not run `make && make install` first (use what is installed)
#   BENCH_FSYNC=on|off fsync of the private server (default on: realistic commits;
#                      scripts/lib.sh alone starts Postgres with fsync = off)
#   CS_KEEP=1          keep the temp dir (server logs) after the run

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$BENCH_DIR/../../scripts/lib.sh"
cd "$CS_ROOT" || exit 1

export BENCH_PY=/usr/bin/python3         # Debian's python3 with python3-psycopg2 / python3-redis
BENCH_ROWS=${BENCH_ROWS:-100000}

bench_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Installs deps, builds, starts Redis and Postgres, creates the extension
# and the 100k-row bench table.
bench_setup() {
    cs_require_root
    cs_install_traps
    cs_install_deps >&2
    if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
        cs_build_install >&2 || cs_die "build failed (the tree may be mid-edit: retry in a minute, or BENCH_NO_BUILD=1)"
    fi
    bench_log "tree: commit $(git -C "$CS_ROOT" log -1 --format=%h 2>/dev/null || echo '?'), $(git -C "$CS_ROOT" status --short -- src sql cachesync--1.0.sql 2>/dev/null | wc -l) uncommitted changes in src/ sql/ cachesync--1.0.sql"
    cs_start_redis >&2
    cs_start_pg >&2
    bq -c "ALTER SYSTEM SET fsync = ${BENCH_FSYNC:-on}" -c "SELECT pg_reload_conf()" >/dev/null
    bq -c "CREATE EXTENSION cachesync" \
       -c "CREATE TABLE bench (id int PRIMARY KEY, v int, t timestamptz, pad text)" \
       -c "INSERT INTO bench SELECT g, 0, now(), repeat('x', 80) FROM generate_series(1, $BENCH_ROWS) g" \
       -c "VACUUM ANALYZE bench" -c "CHECKPOINT"
    wait_worker_loaded 30
    bench_log "servers up: redis 127.0.0.1:$CS_REDIS_PORT, postgres $CS_PGHOST:$CS_PGPORT (fsync=$(bq -c 'SHOW fsync')), bench table $BENCH_ROWS rows"
}

# Waits (up to $1 s) until the worker has marked Redis as loaded
# (__cachesync:epoch): on an empty Redis it first loads every write_through
# and async table, which must not run inside a measurement.
wait_worker_loaded() {
    local deadline=$((SECONDS + ${1:-30}))
    until [[ $(cs_redis_cli EXISTS __cachesync:epoch 2>/dev/null) == 1 ]]; do
        if (( SECONDS >= deadline )); then
            bench_log "note: the worker did not mark Redis as loaded (__cachesync:epoch) within ${1:-30} s; going on"
            return 0
        fi
        sleep 0.1
    done
}

# psql on the worker's database, unaligned, quiet, NOTICEs suppressed.
bq() { PGOPTIONS='-c client_min_messages=warning' cs_psql -d "$CS_DB" -Atq "$@"; }

# Connection string for python (psycopg2).
bench_dsn() { echo "host=$CS_PGHOST port=$CS_PGPORT user=postgres dbname=$CS_DB"; }

# bench_mode baseline|write_through|write_around|async
bench_mode() {
    local registered
    registered=$(bq -c "SELECT count(*) FROM cachesync.tables WHERE rel = 'bench'::regclass" 2>/dev/null || echo 0)
    if [[ $1 == baseline ]]; then
        if [[ $registered != 0 ]]; then bq -c "SELECT cachesync.unregister('bench')" >/dev/null; fi
    else
        bq -c "SELECT cachesync.register('bench', mode => '$1')" >/dev/null
    fi
}

queue_depth() { bq -c "SELECT count(*) FROM cachesync.queue"; }

# Waits until cachesync.queue is empty (timeout $1 s, default 180).
wait_queue_empty() { wait_empty queue_depth queue "${1:-180}"; }

# Entries in the change outbox.
outbox_depth() { bq -c "SELECT count(*) FROM cachesync.changes_outbox"; }

# Waits (at most $1 s, default 180) until the change outbox is empty.
wait_outbox_empty() { wait_empty outbox_depth "change outbox" "${1:-180}"; }

# After a run: waits until the worker has shipped the async queue (mode $1
# async) and the change outbox ($2 = changes), and vacuums what it emptied.
drain_after_run() {
    if [[ $1 == async ]]; then
        wait_queue_empty 180 || cs_die "the async queue did not drain"
        bq -c "VACUUM cachesync.queue"
    fi
    if [[ $2 == changes ]]; then
        wait_outbox_empty 180 || cs_die "the change outbox did not drain"
        bq -c "VACUUM cachesync.changes_outbox"
    fi
}

# Waits until command $1 prints 0, at most $3 s; logs what $2 still holds.
wait_empty() {
    local deadline=$((SECONDS + $3)) n
    while :; do
        n=$($1)
        [[ $n == 0 ]] && return 0
        if (( SECONDS >= deadline )); then
            bench_log "$2 still holds $n entries after $3 s"
            return 1
        fi
        sleep 0.2
    done
}

# Stops the private Redis (by its PID) / starts it again on the same port.
# --save '' and no AOF: a restarted Redis is empty.
bench_redis_stop() {
    kill -TERM "$CS_REDIS_PID" 2>/dev/null || true
    cs_wait_gone "$CS_REDIS_PID" 10 || kill -KILL "$CS_REDIS_PID" 2>/dev/null || true
    CS_REDIS_PID=
}

bench_redis_start() {
    local dir=$CS_TMP/redis
    redis-server --bind 127.0.0.1 --port "$CS_REDIS_PORT" --save '' --appendonly no \
        --daemonize no --dir "$dir" --logfile "$dir/redis.log" \
        --pidfile "$dir/redis.pid" </dev/null >/dev/null 2>&1 &
    CS_REDIS_PID=$!
    local n
    for n in $(seq 200); do
        [[ $(cs_redis_cli ping 2>/dev/null) == PONG ]] && return 0
        cs_pid_alive "$CS_REDIS_PID" || break
        sleep 0.02
    done
    cs_die "restarted redis-server did not answer on port $CS_REDIS_PORT"
}

# median of the arguments (numbers)
median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1}
        END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

# Lines of the server log mentioning cachesync problems (WARNING/ERROR/FATAL/PANIC
# or the worker's own LOG lines), for the summary.
bench_pg_log_problems() {
    grep -E 'WARNING|ERROR|FATAL|PANIC|cachesync worker' "$CS_PGHOST/pg.log" 2>/dev/null |
        grep -v 'cachesync worker started' || true
}
