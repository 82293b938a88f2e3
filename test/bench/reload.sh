#!/usr/bin/env bash
# test/bench/reload.sh — cachesync.reload() against the fastest hand-made
# mass load, and validate() throughput.
#
#   bash test/bench/reload.sh                          # as root, from the repo root
#   BENCH_ROWS=200000 BENCH_ROUNDS=1 bash test/bench/reload.sh    # quicker
#
# Table bench(id int primary key, v int, t timestamptz, pad text), BENCH_ROWS
# (1,000,000) rows, registered write_through, format json then hash.  Per
# format and round, interleaved:
#   pipe:   psql -At -c "SELECT <RESP-formatted SET/HSET> FROM bench" | redis-cli -n 1 --pipe
#           (psql's unaligned output carries raw RESP: each row ends in \r and
#           psql adds the \n)
#   reload: SELECT cachesync.reload('bench')  (fenced puts + version keys,
#           then the orphan SCAN of the prefix)
# Both overwrite keys that already exist after the first round (reload's
# usual case: rows already cached stay readable).  Summary: median rows/s of
# BENCH_ROUNDS (3) rounds and reload/pipe; then one validate('bench') per
# format and its rows/s.  Not a pass/fail test.
set -euo pipefail
BENCH_ROWS=${BENCH_ROWS:-1000000}
# shellcheck source=test/bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ROUNDS=${BENCH_ROUNDS:-3}
bench_setup

now() { date +%s.%N; }
rate() { awk -v n="$BENCH_ROWS" -v a="$1" -v b="$2" 'BEGIN {printf "%.0f", n / (b - a)}'; }

resp_sql() {   # json|hash
    if [[ $1 == json ]]; then
        cat <<'EOS'
SELECT '*3' || E'\r\n$3\r\nSET\r\n$' || octet_length(k) || E'\r\n' || k || E'\r\n$' || octet_length(j) || E'\r\n' || j || E'\r'
  FROM (SELECT 'public.bench:' || b.id AS k, row_to_json(b)::text AS j FROM bench b) s
EOS
    else
        cat <<'EOS'
SELECT '*10' || E'\r\n$4\r\nHSET\r\n$' || octet_length(k) || E'\r\n' || k
       || E'\r\n$2\r\nid\r\n$' || octet_length(id) || E'\r\n' || id
       || E'\r\n$1\r\nv\r\n$' || octet_length(v) || E'\r\n' || v
       || E'\r\n$1\r\nt\r\n$' || octet_length(t) || E'\r\n' || t
       || E'\r\n$3\r\npad\r\n$' || octet_length(pad) || E'\r\n' || pad || E'\r'
  FROM (SELECT 'public.bench:' || b.id AS k, b.id::text AS id, b.v::text AS v, b.t::text AS t, b.pad
          FROM bench b) s
EOS
    fi
}

declare -A RES=()
for fmt in json hash; do
    bq -c "SELECT cachesync.register('bench', format => '$fmt')" >/dev/null
    cs_redis_cli -n 1 FLUSHDB >/dev/null
    sql=$(resp_sql "$fmt")
    for round in $(seq "$ROUNDS"); do
        t0=$(now)
        out=$(PGOPTIONS='-c client_min_messages=warning' cs_psql -d "$CS_DB" -At -c "$sql" | cs_redis_cli -n 1 --pipe 2>&1)
        t1=$(now)
        grep -q 'errors: 0' <<<"$out" || { echo "$out" >&2; cs_die "redis-cli --pipe reported errors"; }
        RES[$fmt,pipe]+="$(rate "$t0" "$t1") "
        bench_log "$fmt round $round pipe:   $(rate "$t0" "$t1") rows/s"

        t0=$(now)
        n=$(bq -c "SELECT cachesync.reload('bench')")
        t1=$(now)
        [[ $n == "$BENCH_ROWS" ]] || cs_die "reload returned $n rows"
        RES[$fmt,reload]+="$(rate "$t0" "$t1") "
        bench_log "$fmt round $round reload: $(rate "$t0" "$t1") rows/s"
    done
    id=$(bq -c "SELECT cachesync.validate('bench')")
    RES[$fmt,validate]=$(bq -c "SELECT round(rows_checked / extract(epoch FROM finished_at - started_at))
                                  FROM cachesync.wait_validation($id, '30 min')")
    RES[$fmt,drift]=$(bq -c "SELECT concat_ws('/', missing, stale, orphaned) FROM cachesync.validations WHERE id = $id")
    cs_redis_cli -n 1 FLUSHDB >/dev/null
    RES[$fmt,mem]=$(cs_redis_cli INFO memory | sed -n 's/^used_memory_human:\(.*\)\r$/\1/p')
done

echo
echo "reload of $BENCH_ROWS rows vs psql | redis-cli --pipe (median of $ROUNDS, rows/s)"
for fmt in json hash; do
    # shellcheck disable=SC2086
    p=$(median ${RES[$fmt,pipe]}); r=$(median ${RES[$fmt,reload]})
    printf '  %-5s pipe %8.0f  reload %8.0f  reload/pipe %.2fx   validate %s rows/s (drift %s)  redis %s\n' \
        "$fmt" "$p" "$r" "$(awk -v a="$r" -v b="$p" 'BEGIN {print a / b}')" "${RES[$fmt,validate]}" \
        "${RES[$fmt,drift]}" "${RES[$fmt,mem]}"
done
bench_pg_log_problems | tail -5
