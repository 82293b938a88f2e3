#!/usr/bin/env bash
# shellcheck disable=SC2086,SC2206  # lists of numbers are word-split on purpose
# test/bench/read_path.sh — read-through against plain SQL point lookups.
#
#   bash test/bench/read_path.sh            # as root, from the repo root
#   BENCH_T=5 BENCH_ROUNDS=1 bash test/bench/read_path.sh    # quicker
#
# pgbench -M prepared, 2 clients, BENCH_T (10) seconds per run, on the 100k-row
# bench table registered write_through and fully loaded (every get() is a hit):
#   get       SELECT cachesync.get('bench', :id::text)
#   sql       SELECT row_to_json(b) FROM bench b WHERE id = :id
#   get_many  cachesync.get_many() of 100 consecutive keys, one statement
#   sql_100   100 point lookups like "sql", one statement each, one transaction
#   sql_any   the same 100 rows in one statement (WHERE id = ANY(...)), for scale
# Interleaved rounds (get, sql, get_many, sql_100, sql_any; again ...), median
# TPS of BENCH_ROUNDS (3) rounds, ratios get/sql and get_many/sql_100.
# Not a pass/fail test.
set -euo pipefail
# shellcheck source=test/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

T=${BENCH_T:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-2}
CONFIGS=(get sql get_many sql_100 sql_any)

bench_setup
bq -c "SELECT cachesync.register('bench')" -c "SELECT cachesync.reload('bench')" >/dev/null
bq -c "SELECT count(*) FROM bench" >/dev/null   # table in shared_buffers

max=$((BENCH_ROWS - 100))
mk() { local f=$CS_TMP/$1.sql; cat >"$f"; chmod 644 "$f"; }
mk get <<EOF
\set id random(1, $max)
SELECT cachesync.get('bench', :id::text);
EOF
mk sql <<EOF
\set id random(1, $max)
SELECT row_to_json(b) FROM bench b WHERE id = :id;
EOF
mk get_many <<EOF
\set id random(1, $max)
SELECT count(value) FROM cachesync.get_many('bench', ARRAY(SELECT g::text FROM generate_series(:id, :id + 99) g));
EOF
{
    echo "\\set id random(1, $max)"
    echo "BEGIN;"
    for k in $(seq 0 99); do echo "SELECT row_to_json(b) FROM bench b WHERE id = :id + $k;"; done
    echo "COMMIT;"
} | mk sql_100
mk sql_any <<EOF
\set id random(1, $max)
SELECT count(row_to_json(b)) FROM bench b WHERE id = ANY(ARRAY(SELECT generate_series(:id, :id + 99)));
EOF

declare -A TPS=()
run_one() {   # config round
    local c=$1 round=$2 out tps
    out=$("$CS_PGBIN/pgbench" -h "$CS_PGHOST" -p "$CS_PGPORT" -U postgres -n -M prepared \
            -c "$CLIENTS" -j "$CLIENTS" -T "$T" -f "$CS_TMP/$c.sql" "$CS_DB" 2>&1) || true
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    if [[ -z $tps ]]; then
        echo "$out" >&2
        cs_die "pgbench failed ($c/round $round)"
    fi
    TPS[$c]+="$tps "
    bench_log "round $round $(printf '%-9s' "$c") tps=$tps"
}

bench_log "read path: $CLIENTS clients, $T s per run, $ROUNDS rounds x ${#CONFIGS[@]} configs"
h0=$(bq -c "SELECT hits || ' hits, ' || misses || ' misses' FROM cachesync.stats WHERE rel = 'bench'::regclass")
for round in $(seq "$ROUNDS"); do
    for c in "${CONFIGS[@]}"; do run_one "$c" "$round"; done
done
h1=$(bq -c "SELECT hits || ' hits, ' || misses || ' misses' FROM cachesync.stats WHERE rel = 'bench'::regclass")

declare -A MED=()
for c in "${CONFIGS[@]}"; do MED[$c]=$(median ${TPS[$c]}); done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "== read path on $BENCH_ROWS rows (write_through, fully cached), pgbench -M prepared -c $CLIENTS -j $CLIENTS -T $T -n"
echo "   median of $ROUNDS interleaved rounds, $(nproc) CPUs; before: $h0; after: $h1"
for c in "${CONFIGS[@]}"; do
    printf '  %-9s %-30s median %10s TPS\n' "$c" "${TPS[$c]}" "${MED[$c]}"
done
echo
echo "  get / sql           = $(ratio "${MED[get]}" "${MED[sql]}")x   (one row: read-through hit vs point lookup)"
echo "  get_many / sql_100  = $(ratio "${MED[get_many]}" "${MED[sql_100]}")x   (100 rows: one get_many vs 100 point lookups)"
echo "  get_many / sql_any  = $(ratio "${MED[get_many]}" "${MED[sql_any]}")x   (100 rows: one get_many vs one = ANY query)"
problems=$(bench_pg_log_problems)
[[ -z $problems ]] || { echo; echo "server log:"; echo "$problems" | tail -5; }
