#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2206  # lists of numbers are word-split on purpose
# test/bench/events_floor.sh — what ANY design of notify / changes must cost
# a writer on this machine, measured next to what cachesync's costs.
#
#   bash test/bench/events_floor.sh      # as root, from the repo root
#   BENCH_T=5 BENCH_ROUNDS=3 BENCH_MODES="write_through async" bash test/bench/events_floor.sh
#
# The events.sh load (pgbench -c 2 -j 2, single-row UPDATE of a random row
# of the 100k-row bench table, synchronous_commit = off), per mode of
# BENCH_MODES (default write_through), configs interleaved in each round,
# medians of BENCH_ROUNDS rounds, every ratio against `plain` (the same mode,
# no option, wal_level = replica) of the same rounds:
#
#   plain        the mode alone
#   notify       notify => true, a redis-cli subscriber on the all-tables
#                channel (what events.sh measures)
#   notify_nosub notify => true, nobody subscribed
#   pub2         the mode alone, the same subscriber, and publish_follower.py
#                sending the two PUBLISHes per committed transaction that the
#                contract requires (table channel + all-tables channel), in
#                one write per 20 ms from a process outside Postgres: the
#                cost of the messages themselves (Redis's PUBLISH and fan-out,
#                the subscriber reading them), batched as cheaply as Redis
#                allows.  No design that delivers these messages to this
#                subscriber can cost less: its ratio is a ceiling.  It counts
#                transaction ids, so in async the worker's own transactions
#                add ~15% more messages (the run prints how many): there the
#                ceiling is a little higher than measured.
#   changes      changes => true (the outbox and the worker's XADDs)
#   changes_nodrain  changes => true with the worker stopped (SIGSTOP)
#                during the run: only the writer's durable record, one heap
#                tuple per change inserted in C into the index-free outbox
#                (at-least-once across a Postgres crash needs the change on
#                disk when COMMIT is: no outbox design writes less), with no
#                shipping at all.  write_through only: in the other modes
#                stopping the worker also stops the mode's own work.
#   outbox_row   the mode alone plus the classic outbox pattern, for
#                comparison: a PL/pgSQL AFTER UPDATE trigger inserting (rel,
#                sequence pos, key, row_to_json(NEW)) into an index-free
#                table nobody reads
#   logical      wal_level = logical, no slot (server restarted for it)
#   slot_poll    wal_level = logical and a test_decoding slot read by a
#                poller, pg_logical_slot_get_changes every 100 ms
#   slot_stream  wal_level = logical and a test_decoding slot streamed by
#                pg_recvlogical (the walsender protocol Debezium uses),
#                output to a file, no fsync
#                The three WAL-based configs bound a Debezium-style design
#                (changes read from the WAL instead of an outbox table),
#                again without shipping anything to Redis.
#
# Each round starts one config further down the list.  The server is
# restarted when wal_level must change (logical for the WAL-based configs,
# replica for the others); after a restart the bench table and its index are
# warmed with pg_prewarm.  Every run starts with VACUUM bench and CHECKPOINT.
#
# CPU accounting, per run, from /proc: `busy`, the machine's busy share
# (both cores, every process on the machine, other helpers' work included);
# `cpu/txn`, the CPU per transaction of this run's own processes (Postgres:
# the postmaster, its live children and the backends it reaped; Redis; the
# subscriber, publisher and slot consumers), which other work on the
# machine does not inflate; `redis/txn`, redis-server's share of it.  When
# the cores are saturated (busy ~100%, as in async), TPS is about
# 2 cores / (cpu/txn + pgbench's own CPU per txn), so extra work of c µs per
# transaction caps the ratio at about cpu_plain / (cpu_plain + c), whoever
# does that work; when they are not (write_through waits for Redis), TPS
# follows latency and the TPS ratio is the measure.  pgbench's own CPU is
# not counted (the same per transaction in every config).
# At the end (BENCH_REDIS_ALONE=0: skipped), Redis alone: its CPU per XADD
# of a change stream entry and per PUBLISH, pipelined, with no Postgres load.
# Not a pass/fail test.
set -euo pipefail
# shellcheck source=test/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

T=${BENCH_T:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-2}
MODES=(${BENCH_MODES:-write_through})
CONFIGS=(${BENCH_CONFIGS:-plain notify notify_nosub pub2 changes changes_nodrain outbox_row logical slot_poll slot_stream})
TABLE_CHANNEL=__cachesync:invalidate:public.bench
ALL_CHANNEL=__cachesync:invalidate
HZ=$(getconf CLK_TCK)

[[ -f $("$CS_PG_CONFIG" --pkglibdir)/test_decoding.so ]] ||
    cs_die "test_decoding is not installed (postgresql-15 ships it)"

bench_setup
bq -c "CREATE EXTENSION pg_prewarm" \
   -c "CREATE TABLE outbox (rel oid, pos bigint, key text, \"row\" text)" \
   -c "CREATE SEQUENCE outbox_pos" \
   -c "CREATE FUNCTION outbox_row() RETURNS trigger LANGUAGE plpgsql AS \$\$
       BEGIN INSERT INTO outbox VALUES (TG_RELID, nextval('outbox_pos'), NEW.id::text, row_to_json(NEW)::text);
       RETURN NULL; END \$\$"
SCRIPT=$CS_TMP/update.sql
printf '\\set id random(1, %s)\nUPDATE bench SET v = v + 1, t = now() WHERE id = :id;\n' "$BENCH_ROWS" >"$SCRIPT"
chmod 644 "$SCRIPT"

WAL_LEVEL=replica
# Restarts Postgres with wal_level $1 (no-op when it has it) and warms it.
set_wal_level() {
    [[ $WAL_LEVEL == "$1" ]] && return 0
    bq -c "ALTER SYSTEM SET wal_level = $1" >/dev/null
    cs_as_postgres "$CS_PGBIN/pg_ctl" -D "$CS_PGDATA" -w -l "$CS_PGHOST/pg.log" restart >/dev/null 2>&1 ||
        cs_die "postgres did not restart with wal_level = $1"
    WAL_LEVEL=$1
    [[ $(bq -c "SHOW wal_level") == "$1" ]] || cs_die "wal_level is not $1 after the restart"
    bq -c "SELECT pg_prewarm('bench'), pg_prewarm('bench_pkey')" >/dev/null
}

# Registers bench in mode $1 with option $2 (plain: none).
events_mode() {
    local notify=false changes=false
    [[ $2 == notify ]] && notify=true
    [[ $2 == changes ]] && changes=true
    bq -c "SELECT cachesync.register('bench', mode => '$1', notify => $notify, changes => $changes)" >/dev/null
}

# CPU ticks of the processes $@ (utime + stime), and of the children they
# reaped (cutime + cstime)
proc_cpu() {
    local pid
    for pid in "$@"; do cat "/proc/$pid/stat" 2>/dev/null || true; done |
        awk '{sub(/^.*\) /, ""); s += $12 + $13 + $14 + $15} END {print s + 0}'
}
# CPU ticks of this run's servers and helpers: the postmaster with every
# backend it has reaped and every live child (pgbench's backends, the
# worker, walsenders), redis-server, and the helper processes $@.  Unlike
# the machine's busy time, other work on the machine does not count.
run_cpu() {
    local pm
    pm=$(head -n 1 "$CS_PGDATA/postmaster.pid")
    proc_cpu "$pm" $(pgrep -P "$pm") "$CS_REDIS_PID" "$@"
}
machine_cpu() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }   # busy idle (ticks)

declare -A TPS=() BUSY=() CPUTX=() REDISTX=()
HELPERS=()
stop_helpers() {
    local pid
    for pid in "${HELPERS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${HELPERS[@]}"; do wait "$pid" 2>/dev/null || true; done
    HELPERS=()
}

run_one() {   # mode config round
    local mode=$1 cfg=$2 round=$3 out tps txns note="" m0 m1 r0 r1 c0 c1 busy idle wpid=""
    local opt=plain slot="" pct
    case $cfg in
        logical|slot_*) set_wal_level logical ;;
        *) set_wal_level replica ;;
    esac
    case $cfg in
        notify*) opt=notify ;;
        changes*) opt=changes ;;
    esac
    events_mode "$mode" "$opt"
    bq -c "DROP TRIGGER IF EXISTS outbox_trg ON bench"
    [[ $cfg == outbox_* ]] &&
        bq -c "CREATE TRIGGER outbox_trg AFTER UPDATE ON bench FOR EACH ROW EXECUTE FUNCTION $cfg()"
    # every run starts from a vacuumed table: the dead rows of the runs
    # before it would otherwise slow the later configs of a round
    bq -c "VACUUM bench" -c "CHECKPOINT"
    if [[ $cfg == notify || $cfg == pub2 ]]; then
        redis-cli -h 127.0.0.1 -p "$CS_REDIS_PORT" SUBSCRIBE "$ALL_CHANNEL" >/dev/null 2>&1 &
        HELPERS+=($!)
    fi
    if [[ $cfg == pub2 ]]; then
        "$BENCH_PY" "$BENCH_DIR/publish_follower.py" "$(bench_dsn)" "$CS_REDIS_PORT" \
            "$TABLE_CHANNEL" "$ALL_CHANNEL" "$CS_TMP/published" &
        HELPERS+=($!)
    fi
    if [[ $cfg == slot_* ]]; then
        slot=cs_floor
        bq -c "SELECT pg_create_logical_replication_slot('$slot', 'test_decoding')" >/dev/null
        if [[ $cfg == slot_poll ]]; then
            "$BENCH_PY" -c "
import sys, time, psycopg2
c = psycopg2.connect(sys.argv[1]); c.autocommit = True; cur = c.cursor()
while True:
    cur.execute(\"SELECT count(*) FROM pg_logical_slot_get_changes('$slot', NULL, NULL)\")
    time.sleep(0.1)" "$(bench_dsn)" &
        else
            "$CS_PGBIN/pg_recvlogical" -h "$CS_PGHOST" -p "$CS_PGPORT" -U postgres \
                -d "$CS_DB" --slot "$slot" --start -F 0 -s 1 -f "$CS_PGHOST/recvlogical.out" &
        fi
        HELPERS+=($!)
    fi
    [[ $cfg == *_nodrain ]] && wpid=$(bq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'cachesync worker'") &&
        kill -STOP "$wpid"
    sleep 0.3
    read -r m0 idle < <(machine_cpu); busy=$m0; m0=$((m0 + idle))
    r0=$(proc_cpu "$CS_REDIS_PID")
    c0=$(run_cpu "${HELPERS[@]}")
    out=$(PGOPTIONS="-c synchronous_commit=off" "$CS_PGBIN/pgbench" -h "$CS_PGHOST" -p "$CS_PGPORT" \
            -U postgres -n -c "$CLIENTS" -j "$CLIENTS" -T "$T" -f "$SCRIPT" "$CS_DB" 2>&1) || true
    read -r m1 idle < <(machine_cpu)
    r1=$(proc_cpu "$CS_REDIS_PID")
    c1=$(run_cpu "${HELPERS[@]}")
    [[ -n $wpid ]] && kill -CONT "$wpid"
    # the worker's every read of the outbox scans all of it, dead entries
    # included until a vacuum: its size at the end of the run
    [[ $cfg == changes* ]] &&
        note=" outbox $(bq -c "SELECT pg_relation_size('cachesync.changes_outbox') / 8192") pages at the end"
    busy=$((m1 - busy)); m1=$((m1 + idle - m0))
    if [[ -n $slot ]]; then
        # how far the consumer was behind when the load stopped (work left undone)
        note=" slot behind by $(bq -c "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)) FROM pg_replication_slots WHERE slot_name = '$slot'")"
    fi
    stop_helpers
    if [[ -n $slot ]]; then
        local _
        for _ in $(seq 50); do   # the walsender of pg_recvlogical may still hold it for a moment
            bq -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null 2>&1 && break
            sleep 0.1
        done
        rm -f "$CS_PGHOST/recvlogical.out"
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    [[ -n $tps && -n $txns && $txns -gt 0 ]] || { echo "$out" >&2; cs_die "pgbench failed ($mode/$cfg)"; }
    [[ $cfg == pub2 ]] && note=" published $(cat "$CS_TMP/published" 2>/dev/null || echo '?') messages for $txns transactions"
    TPS[$mode,$cfg]+="$tps "
    pct=$(awk -v b="$busy" -v t="$m1" 'BEGIN {printf "%.0f", 100 * b / t}')
    BUSY[$mode,$cfg]+="$pct "
    CPUTX[$mode,$cfg]+="$(awk -v b="$((c1 - c0))" -v n="$txns" -v hz="$HZ" 'BEGIN {printf "%.1f", b * 1e6 / hz / n}') "
    REDISTX[$mode,$cfg]+="$(awk -v b="$((r1 - r0))" -v n="$txns" -v hz="$HZ" 'BEGIN {printf "%.1f", b * 1e6 / hz / n}') "
    drain_after_run "$mode" "${cfg%%_*}"
    bq -c "TRUNCATE outbox"
    bench_log "round $round $(printf '%-13s %-11s' "$mode" "$cfg") tps=$tps busy=$pct%$note"
}

bench_log "events_floor: $CLIENTS clients, $T s per run, $ROUNDS rounds, modes: ${MODES[*]}, configs: ${CONFIGS[*]}"
for round in $(seq "$ROUNDS"); do
    # each round starts one config further down the list, so that no config
    # always runs first (right after the restart, the checkpoint, ...)
    for mode in "${MODES[@]}"; do
        for i in "${!CONFIGS[@]}"; do
            cfg=${CONFIGS[(i + round - 1) % ${#CONFIGS[@]}]}
            [[ $cfg == *_nodrain && $mode != write_through ]] && continue
            run_one "$mode" "$cfg" "$round"
        done
    done
done

med() { median $1; }
echo
echo "== change-event floors: UPDATE bench SET v = v + 1, t = now() WHERE id = :id (random of $BENCH_ROWS)"
echo "   pgbench -c $CLIENTS -j $CLIENTS -T $T -n, synchronous_commit=off, fsync=$(bq -c 'SHOW fsync'), median of $ROUNDS interleaved rounds, $(nproc) CPUs"
echo "   ratio: TPS / TPS of plain (same mode, wal_level=replica); busy: machine CPU busy %; cpu/txn: CPU of this run's Postgres, Redis and helper processes per transaction; redis/txn: redis-server's part"
printf '  %-14s %-11s %-22s %7s %6s %5s %8s %9s\n' mode config "TPS per round" median ratio busy "cpu/txn" "redis/txn"
for mode in "${MODES[@]}"; do
    base=$(med "${TPS[$mode,plain]:-}")
    for cfg in "${CONFIGS[@]}"; do
        [[ -n ${TPS[$mode,$cfg]:-} ]] || continue
        m=$(med "${TPS[$mode,$cfg]}")
        printf '  %-14s %-11s %-22s %7.0f %5sx %4s%% %6sus %7sus\n' "$mode" "$cfg" "$(printf '%.0f ' ${TPS[$mode,$cfg]})" "$m" \
            "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a / b}')" \
            "$(med "${BUSY[$mode,$cfg]}")" "$(med "${CPUTX[$mode,$cfg]}")" "$(med "${REDISTX[$mode,$cfg]}")"
    done
    if [[ -n ${CPUTX[$mode,pub2]:-} && -n ${CPUTX[$mode,plain]:-} ]]; then
        awk -v p="$(med "${CPUTX[$mode,plain]}")" -v q="$(med "${CPUTX[$mode,pub2]}")" -v mode="$mode" 'BEGIN {
            printf "  %s: the two messages of a transaction cost %.1f us of CPU (pub2 - plain per txn); with saturated cores the ratio is at most about %.1f / (%.1f + %.1f) = %.2fx\n",
                mode, q - p, p, p, q - p, p / q }'
    fi
done
# Redis alone, no Postgres load: its CPU per change stream entry (XADD
# MAXLEN ~ of an entry like the worker's) and per PUBLISH (to the channel
# the subscriber listens on, and to one nobody listens on), pipelined 64
# deep by redis-benchmark: the least Redis can spend on what the options
# send it, whoever sends it.
redis_alone() {   # label, then the command
    local label=$1 c0 c1 s0 s1 n=200000
    shift
    c0=$(proc_cpu "$CS_REDIS_PID"); s0=$(proc_cpu "$SUB")
    redis-benchmark -h 127.0.0.1 -p "$CS_REDIS_PORT" -q -n "$n" -c 2 -P 64 "$@" >/dev/null
    c1=$(proc_cpu "$CS_REDIS_PID"); s1=$(proc_cpu "$SUB")
    printf '  %-34s redis %5.2f us, subscriber %5.2f us per command\n' "$label" \
        "$(awk -v c=$((c1 - c0)) -v n=$n -v hz="$HZ" 'BEGIN {print c * 1e6 / hz / n}')" \
        "$(awk -v c=$((s1 - s0)) -v n=$n -v hz="$HZ" 'BEGIN {print c * 1e6 / hz / n}')"
}
if [[ ${BENCH_REDIS_ALONE:-1} == 1 ]]; then
    echo
    echo "== Redis alone (redis-benchmark -c 2 -P 64, $(redis-server --version | grep -o 'v=[0-9.]*'), CPU from /proc)"
    redis-cli -h 127.0.0.1 -p "$CS_REDIS_PORT" SUBSCRIBE "$ALL_CHANNEL" >/dev/null 2>&1 &
    SUB=$!
    sleep 0.3
    row=$(bq -c "SELECT row_to_json(b) FROM bench b WHERE id = 54321")
    redis_alone "XADD MAXLEN ~ 100000 (one entry)" XADD floor:__changes MAXLEN '~' 100000 '*' \
        op update key public.bench:54321 row "$row" pos 1764193200123456
    redis_alone "PUBLISH, one subscriber" PUBLISH "$ALL_CHANNEL" public.bench:54321
    redis_alone "PUBLISH, nobody subscribed" PUBLISH "$TABLE_CHANNEL" public.bench:54321
    kill "$SUB" 2>/dev/null || true; wait "$SUB" 2>/dev/null || true
    cs_redis_cli DEL floor:__changes >/dev/null
fi
problems=$(bench_pg_log_problems)
[[ -z $problems ]] || { echo "server log lines mentioning problems, first 10:"; head -n 10 <<<"$problems" | sed 's/^/  /'; }
