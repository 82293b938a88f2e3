#!/usr/bin/env bash
# scripts/test.sh — run every cachesync test (the README's test command).
#
#   scripts/test.sh                 # all suites: regress, isolation, tap
#   scripts/test.sh regress         # one or more suites: regress|isolation|tap
#   TAP_ONLY=test/t/001_x.pl scripts/test.sh tap    # PROVE_TESTS passthrough
#   CS_KEEP=1 scripts/test.sh       # keep the temp dirs (servers, TAP copy, logs)
#
# Run as root.  It installs missing Debian packages, builds and installs the
# extension, starts a private Redis and Postgres (regress, isolation), runs the
# TAP tests as the postgres user in a copy of the tree, and stops everything it
# started.  The last line printed is always "N passed, N failed"; the exit
# status is 0 iff nothing failed and at least one test ran.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CS_ROOT"

SUITES=()
for a in "$@"; do
    case $a in
        regress|isolation|tap) SUITES+=("$a") ;;
        all) SUITES=(regress isolation tap) ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [regress|isolation|tap]..." >&2; exit 2 ;;
    esac
done
[[ ${#SUITES[@]} -gt 0 ]] || SUITES=(regress isolation tap)
want() { local s; for s in "${SUITES[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

TOTAL_PASS=0
TOTAL_FAIL=0
declare -A SUMMARY=()     # suite -> result line, printed in a fixed order

FINISHED=0
print_summary() {
    FINISHED=1
    cs_stop_all
    echo
    local l
    for l in build regress isolation tap aborted; do
        [[ -z ${SUMMARY[$l]:-} ]] || echo "${SUMMARY[$l]}"
    done
    echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
}

finish() {
    print_summary
    if [[ $TOTAL_FAIL -eq 0 && $TOTAL_PASS -gt 0 ]]; then exit 0; fi
    exit 1
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
# On an early exit (setup error, Ctrl-C, TERM) still stop everything and end
# with the summary line, counting the interruption as a failure.
on_exit() {
    local rc=$?
    [[ $FINISHED -eq 1 ]] && return 0
    SUMMARY[aborted]="aborted:   exit status $rc"
    TOTAL_FAIL=$((TOTAL_FAIL + 1))
    print_summary
    [[ $rc -ne 0 ]] || exit 1
}

record() {   # suite passed failed [note]
    TOTAL_PASS=$((TOTAL_PASS + $2))
    TOTAL_FAIL=$((TOTAL_FAIL + $3))
    SUMMARY[$1]=$(printf '%-10s %d passed, %d failed%s' "$1:" "$2" "$3" "${4:+ ($4)}")
}

skip() { SUMMARY[$1]=$(printf '%-10s skipped (%s)' "$1:" "$2"); }

cs_require_root
cs_install_traps
trap on_exit EXIT

cs_install_deps
if ! cs_build_install; then
    SUMMARY[build]="build:     FAILED"
    TOTAL_FAIL=$((TOTAL_FAIL + 1))
    finish
fi

shopt -s nullglob
REGRESS_FILES=(sql/*.sql)
ISO_FILES=(test/isolation/specs/*.spec)
TAP_FILES=(test/t/*.pl)
shopt -u nullglob

cs_tmp
LOGDIR=$CS_TMP/logs
mkdir -p "$LOGDIR"

# pg_regress / pg_isolation_regress output: "test NAME ... ok|FAILED|failed (ignored)"
# (parallel-group members are indented instead of prefixed with "test").
count_pg_regress() {    # logfile -> "passed failed ignored"
    awk '
        /^(test |     )/ && / \.\.\. / {
            s = $0; sub(/^.* \.\.\. /, "", s)
            if (s ~ /^ok/) p++
            else if (s ~ /^failed \(ignored\)/) i++
            else if (s ~ /^FAILED/) f++
        }
        END { printf "%d %d %d\n", p, f, i }' "$1"
}

run_pg_regress_suite() {   # suite files-count make-args...
    local suite=$1 nfiles=$2; shift 2
    local log=$LOGDIR/$suite.log rc=0 p f i diffs
    case $suite in
        regress)   diffs=$CS_ROOT/regression.diffs ;;
        isolation) diffs=$CS_ROOT/output_iso/regression.diffs ;;
    esac
    rm -f "$diffs"    # never show the diffs of an earlier run
    echo
    echo "=== $suite: $nfiles file(s) ==="
    cs_run_logged "$log" make -s PG_CONFIG="$CS_PG_CONFIG" installcheck "$@" || rc=$?
    read -r p f i < <(count_pg_regress "$log")
    if [[ $rc -ne 0 && $f -eq 0 ]]; then
        f=1    # make failed with no FAILED line: crash, bad setup, missing extension...
    fi
    if [[ $rc -ne 0 || $f -gt 0 ]]; then
        if [[ -s $diffs ]]; then
            echo "--- $suite: ${diffs#"$CS_ROOT"/} ---"
            cat "$diffs"
        fi
        echo "--- $suite: tail of the server log ---"
        tail -n 40 "$CS_PGHOST/pg.log" 2>/dev/null || true
    fi
    local note=
    [[ $i -eq 0 ]] || note="$i failed (ignored)"
    record "$suite" "$p" "$f" "$note"
}

# prove output: "Files=N, Tests=M, ..." and, on failure, a "Test Summary Report"
# with "path (Wstat: W ... Tests: T Failed: F)" per failing script.
# A script that died (non-zero Wstat or parse errors) with no failed assertion
# counts as one failure.  Prints "passed failed files-that-failed...".
count_prove() {   # logfile
    awk '
        function flush() {
            if (cur != "") {
                if (cf > 0) fail += cf
                else if (bad) { fail += 1; died++ }
                if (cf > 0 || bad) files = files " " cur
            }
            cur = ""; cf = 0; bad = 0
        }
        /^Test Summary Report/ { insum = 1; next }
        insum && /\(Wstat: [0-9]+/ {
            flush()
            cur = $1
            w = $0; sub(/.*Wstat: /, "", w); sub(/[^0-9].*/, "", w)
            t = $0; sub(/.*Failed: /, "", t); sub(/[^0-9].*/, "", t)
            cf = t + 0
            bad = (w + 0 != 0)
            assertfail += cf
            next
        }
        insum && /Parse errors|Non-zero exit status|Non-zero wait status/ { bad = 1; next }
        /^Files=[0-9]+, Tests=[0-9]+/ {
            flush(); insum = 0
            t = $0; sub(/^Files=[0-9]+, Tests=/, "", t); sub(/[^0-9].*/, "", t)
            tests += t; seen = 1
        }
        END {
            flush()
            if (!seen) { print "-1 -1"; exit }
            printf "%d %d%s\n", tests - assertfail, fail, files
        }' "$1"
}

run_tap_suite() {
    local nfiles=$1 log=$LOGDIR/tap.log rc=0 copy
    echo
    echo "=== tap: $nfiles file(s) ==="
    cs_tmp
    copy=$CS_TMP/tap
    rm -rf "$copy"
    mkdir -p "$copy"
    # A copy of the tree, owned by postgres (TAP modules refuse root), without
    # the git metadata and the outputs of earlier runs.
    tar -C "$CS_ROOT" -cf - \
        --exclude=./.git --exclude=./results --exclude=./output_iso \
        --exclude=./tmp_check --exclude=./log --exclude='./regression.*' \
        --exclude='*.o' --exclude='*.so' --exclude='*.bc' . | tar -C "$copy" -xf -
    chown -R postgres: "$copy"
    # test/perl goes in PERL5LIB: PGXS's Makefile.global (included after the
    # Makefile's own settings) resets PROVE_FLAGS to empty.
    local bindir args=()
    bindir=$("$CS_PG_CONFIG" --bindir)
    [[ -n ${TAP_ONLY:-} ]] && args+=("PROVE_TESTS=$TAP_ONLY")
    cs_run_logged "$log" runuser -u postgres -- env -C "$copy" \
        PATH="$bindir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        HOME=/var/lib/postgresql PERL5LIB="$copy/test/perl${PERL5LIB:+:$PERL5LIB}" \
        make -s PG_CONFIG="$CS_PG_CONFIG" installcheck REGRESS= ISOLATION= \
        "${args[@]}" || rc=$?
    local p f failed_files
    read -r p f failed_files < <(count_prove "$log")
    if [[ $p -lt 0 ]]; then
        p=0; f=1    # prove never summarized: make/perl setup failure
    elif [[ $rc -ne 0 && $f -eq 0 ]]; then
        f=1
    fi
    if [[ $f -gt 0 ]]; then
        local t name lf n
        for t in $failed_files; do
            name=$(basename "$t" .pl)
            for lf in "$copy/tmp_check/log/regress_log_$name" "$copy/tmp_check/log/${name}"_*.log; do
                [[ -f $lf ]] || continue
                case $lf in
                    */regress_log_*) n=80 ;;
                    *_redis_*.log)   n=15 ;;
                    *)               n=40 ;;
                esac
                echo "--- tap: tail of ${lf#"$copy"/} ---"
                tail -n "$n" "$lf"
            done
        done
        [[ ${CS_KEEP:-0} == 1 ]] || echo "(rerun with CS_KEEP=1 to keep $copy/tmp_check)"
    fi
    record tap "$p" "$f"
}

need_server=0
if want regress; then
    if [[ ${#REGRESS_FILES[@]} -gt 0 ]]; then need_server=1; else skip regress "no sql/*.sql"; fi
fi
if want isolation; then
    if [[ ${#ISO_FILES[@]} -gt 0 ]]; then need_server=1; else skip isolation "no test/isolation/specs/*.spec"; fi
fi
if [[ $need_server -eq 1 ]]; then
    cs_start_redis
    cs_start_pg
    # The connection goes in EXTRA_REGRESS_OPTS, so the Makefile's REGRESS_OPTS
    # and ISOLATION_OPTS (--load-extension, --inputdir) and PGXS's additions
    # to them (--dbname=contrib_regression / isolation_regression) still apply.
    PGCONN="--host=$CS_PGHOST --port=$CS_PGPORT --user=postgres"
    if want regress && [[ ${#REGRESS_FILES[@]} -gt 0 ]]; then
        run_pg_regress_suite regress "${#REGRESS_FILES[@]}" ISOLATION= TAP_TESTS= \
            EXTRA_REGRESS_OPTS="$PGCONN"
    fi
    if want isolation && [[ ${#ISO_FILES[@]} -gt 0 ]]; then
        run_pg_regress_suite isolation "${#ISO_FILES[@]}" REGRESS= TAP_TESTS= \
            EXTRA_REGRESS_OPTS="$PGCONN"
    fi
fi
if want tap; then
    if [[ ${#TAP_FILES[@]} -gt 0 ]]; then run_tap_suite "${#TAP_FILES[@]}"; else skip tap "no test/t/*.pl"; fi
fi

finish
