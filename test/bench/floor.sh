#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2206  # lists of numbers are word-split on purpose
# test/bench/floor.sh — what the write path can cost at least, measured.
#
#   bash test/bench/floor.sh            # as root, from the repo root (~3 min)
#
# write_path.sh compares each mode with the unregistered table.  This script
# puts those ratios next to two floors measured on the same workload, in the
# same run, interleaved (pgbench, 2 clients, synchronous_commit = off):
#   ping       the UPDATE plus ONE synchronous Redis round trip (PING) per
#              transaction, no cachesync trigger: the ceiling of any design
#              that has a value in Redis before COMMIT returns
#              (write_through) or removes the key before it returns
#              (write_around)
#   outbox     the UPDATE plus a PL/pgSQL trigger inserting into an outbox
#              table (the classic pattern the issue quotes at 0.93x)
#   async_nodrain  async with the worker stopped (SIGSTOP) while pgbench runs:
#              the writer's own cost, without the drain competing for the CPUs
# and write_through / write_around / async as write_path.sh runs them.
set -euo pipefail
# shellcheck source=test/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

T=${BENCH_T:-8}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-2}
CONFIGS=(${BENCH_CONFIGS:-baseline ping outbox async_nodrain async write_through write_around})

bench_setup
bq -c "CREATE TABLE outbox (id bigserial, rel oid, key text, at timestamptz DEFAULT clock_timestamp())" \
   -c "CREATE FUNCTION outbox_trg() RETURNS trigger LANGUAGE plpgsql AS \$\$
       BEGIN INSERT INTO outbox (rel, key) VALUES (TG_RELID, NEW.id::text); RETURN NULL; END \$\$"
UPD=$CS_TMP/update.sql PING=$CS_TMP/ping.sql
printf '\\set id random(1, %s)\nUPDATE bench SET v = v + 1, t = now() WHERE id = :id;\n' "$BENCH_ROWS" >"$UPD"
printf '\\set id random(1, %s)\nWITH u AS (UPDATE bench SET v = v + 1, t = now() WHERE id = :id RETURNING 1)\n  SELECT cachesync.redis_command(%s) FROM u;\n' \
    "$BENCH_ROWS" "'PING'" >"$PING"
chmod 644 "$UPD" "$PING"
worker_pid() { bq -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'cachesync worker'"; }

declare -A TPS=()
run_one() {   # config round
    local cfg=$1 round=$2 script=$UPD out tps wpid=""
    bench_mode baseline
    bq -c "DROP TRIGGER IF EXISTS outbox_trg ON bench"
    case $cfg in
        ping) script=$PING ;;
        outbox) bq -c "CREATE TRIGGER outbox_trg AFTER UPDATE ON bench FOR EACH ROW EXECUTE FUNCTION outbox_trg()" ;;
        async_nodrain) bench_mode async; wpid=$(worker_pid); kill -STOP "$wpid" ;;
        *) bench_mode "$cfg" ;;
    esac
    bq -c "CHECKPOINT"
    out=$(PGOPTIONS="-c synchronous_commit=off" "$CS_PGBIN/pgbench" -h "$CS_PGHOST" -p "$CS_PGPORT" \
            -U postgres -n -c "$CLIENTS" -j "$CLIENTS" -T "$T" -f "$script" "$CS_DB" 2>&1) || true
    [[ -n $wpid ]] && kill -CONT "$wpid"
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    [[ -n $tps ]] || { echo "$out" >&2; cs_die "pgbench failed ($cfg)"; }
    TPS[$cfg]+="$tps "
    if [[ $cfg == async* ]]; then
        wait_queue_empty 180 || cs_die "the async queue did not drain"
        bq -c "VACUUM cachesync.queue"
    fi
    bq -c "TRUNCATE outbox"
    bench_log "round $round $(printf '%-14s' "$cfg") tps=$tps"
}

for round in $(seq "$ROUNDS"); do
    for cfg in "${CONFIGS[@]}"; do run_one "$cfg" "$round"; done
    bench_mode baseline
    bq -c "VACUUM bench"
done

echo
echo "== write-path floors: pgbench -c $CLIENTS -j $CLIENTS -T $T, synchronous_commit=off, median of $ROUNDS interleaved rounds, $(nproc) CPUs"
echo "   ping: WITH u AS (UPDATE ... RETURNING 1) SELECT cachesync.redis_command('PING') FROM u; the others the bare UPDATE"
base=$(median ${TPS[baseline]})
for cfg in "${CONFIGS[@]}"; do
    m=$(median ${TPS[$cfg]})
    printf '  %-14s %-28s %8.0f %6sx\n' "$cfg" "$(printf '%.0f ' ${TPS[$cfg]})" "$m" \
        "$(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a / b}')"
done
