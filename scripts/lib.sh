# shellcheck shell=bash
# scripts/lib.sh — shared helpers for scripts/test.sh and scripts/demo.sh.
#
# Source it from a bash script running as root (set -euo pipefail friendly):
#
#   source "$(dirname "$0")/lib.sh"
#   cs_install_traps                 # trap cs_stop_all EXIT, exit 130/143 on INT/TERM
#   cs_install_deps; cs_build_install
#   cs_start_redis; cs_start_pg      # private servers on free loopback ports/sockets
#   cs_psql -c 'SELECT 1'; cs_redis_cli PING
#
# Everything it starts lives under one temp dir ($CS_TMP) and is stopped by PID
# in cs_stop_all (never by process name).  CS_KEEP=1 keeps the temp dirs.

CS_ROOT=${CS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
CS_PG_CONFIG=${CS_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
CS_DEPS=(make gcc postgresql-15 postgresql-server-dev-15 libhiredis-dev
         redis-server redis-tools libipc-run-perl python3-psycopg2 python3-redis)
CS_DB=cachesync_worker          # database the background worker serves
# State of this shell only: never taken from the environment (cs_stop_all
# removes CS_TMP and stops what CS_PGDATA / CS_REDIS_PID name).
CS_TMP=                         # base temp dir (created on demand)
CS_REDIS_PID=
CS_CHILD=                       # pid of a long-running command (cs_run_logged)
CS_PGDATA='' CS_PGHOST='' CS_PGPORT='' CS_PGBIN='' CS_REDIS_PORT=''
CS_EXTRA_TMPDIRS=()             # more dirs cs_stop_all removes

cs_log() { printf '%s\n' "$*" >&2; }
cs_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

cs_require_root() {
    [[ $(id -u) -eq 0 ]] || cs_die "run this as root (it installs packages and runs servers as the postgres user)"
    cs_lock_install
}

# The extension is installed into the one Postgres installation of this
# machine, so two runs from different checkouts (tests, demo, benchmarks)
# would replace each other's library mid-run.  Runs take turns: the lock is
# held on fd 9 until the script exits.
cs_lock_install() {
    [[ -n ${CS_LOCKED:-} ]] && return 0
    exec 9>/tmp/cachesync-install.lock
    if ! flock -n 9; then
        cs_log "another cachesync test, demo or benchmark is running on this machine; waiting for it"
        flock 9
    fi
    export CS_LOCKED=1
}

# -- packages -----------------------------------------------------------------

cs_install_deps() {
    local missing=() p st log
    for p in "${CS_DEPS[@]}"; do
        st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $st == "install ok installed" ]] || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "deps: all ${#CS_DEPS[@]} packages present"
        return 0
    fi
    cs_tmp
    log=$CS_TMP/apt.log
    echo "deps: installing ${missing[*]}"
    # Keep apt from starting the system redis/postgres services: the scripts
    # only use private servers.  Only when no policy-rc.d is in place already.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy && ${CS_APT_START_SERVICES:-0} != 1 ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    {
        apt-get update &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    } >"$log" 2>&1 || rc=$?
    [[ $made_policy -eq 1 ]] && rm -f "$policy"
    if [[ $rc -ne 0 ]]; then
        tail -n 30 "$log" >&2
        cs_die "apt-get failed (exit $rc)"
    fi
}

# -- build --------------------------------------------------------------------

cs_build_install() {
    cs_tmp
    local log=$CS_TMP/build.log
    if ! { make -C "$CS_ROOT" -s PG_CONFIG="$CS_PG_CONFIG" &&
           make -C "$CS_ROOT" -s PG_CONFIG="$CS_PG_CONFIG" install; } >"$log" 2>&1; then
        echo "build: FAILED — compiler output follows" >&2
        cat "$log" >&2
        return 1
    fi
    echo "build: ok (installed into $("$CS_PG_CONFIG" --pkglibdir))"
}

# -- ports, temp dirs ------------------------------------------------------------

cs_free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"; return 0
        fi
    done
    cs_die "no free port found"
}

cs_tmp() {   # create the base temp dir once; print nothing
    if [[ -z $CS_TMP || ! -d $CS_TMP ]]; then
        CS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/cachesync.XXXXXX")
        chmod 755 "$CS_TMP"
    fi
}

cs_pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# Wait up to $2 seconds (default 10) for pid $1 to go away.
cs_wait_gone() {
    local pid=$1 n=$(( ${2:-10} * 10 ))
    while cs_pid_alive "$pid" && (( n-- > 0 )); do sleep 0.1; done
    ! cs_pid_alive "$pid"
}

# Children of a pid, from /proc (procps may be absent on a minimal system).
cs_children() {     # ppid
    local want=$1 f stat fields
    for f in /proc/[0-9]*/stat; do
        { stat=$(<"$f"); } 2>/dev/null || continue
        read -r -a fields <<<"${stat##*) }"    # fields after "(comm) ": state ppid ...
        if [[ ${fields[1]:-} == "$want" ]]; then f=${f#/proc/}; echo "${f%/stat}"; fi
    done
}

CS_KILLED=()
cs_kill_tree() {    # pid [signal]: children first; the pids go to CS_KILLED
    local pid=$1 sig=${2:-TERM} c kids
    cs_pid_alive "$pid" || return 0
    kids=$(cs_children "$pid")
    for c in $kids; do cs_kill_tree "$c" "$sig"; done
    kill "-$sig" "$pid" 2>/dev/null || true
    CS_KILLED+=("$pid")
}

# Run a command in the background, output to the terminal and to a log file;
# wait for it so that INT/TERM traps fire at once (cs_stop_all kills the tree).
cs_run_logged() {   # logfile cmd...
    local log=$1; shift
    ( set +e; "$@" 2>&1 | tee "$log"; exit "${PIPESTATUS[0]}" ) &
    CS_CHILD=$!
    local rc=0
    wait "$CS_CHILD" || rc=$?
    CS_CHILD=
    return "$rc"
}

# -- Redis --------------------------------------------------------------------

cs_start_redis() {   # [port]: default a free one
    cs_tmp
    local dir=$CS_TMP/redis port n
    mkdir -p "$dir"
    port=${1:-$(cs_free_port)}
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --daemonize no --dir "$dir" --logfile "$dir/redis.log" \
        --pidfile "$dir/redis.pid" </dev/null >/dev/null 2>&1 &
    CS_REDIS_PID=$!
    export CS_REDIS_PORT=$port
    for n in $(seq 100); do
        if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
            echo "redis: pid $CS_REDIS_PID on 127.0.0.1:$port"
            return 0
        fi
        cs_pid_alive "$CS_REDIS_PID" || break
        sleep 0.1
    done
    tail -n 20 "$dir/redis.log" >&2 || true
    cs_die "redis-server did not answer PING on port $port"
}

cs_redis_cli() { redis-cli -h 127.0.0.1 -p "$CS_REDIS_PORT" "$@"; }

# Stop the Redis cs_start_redis started (by its pid); cs_start_redis "$CS_REDIS_PORT"
# brings an empty one back on the same port.
cs_stop_redis() {
    [[ -n $CS_REDIS_PID ]] || return 0
    kill "$CS_REDIS_PID" 2>/dev/null || true
    cs_wait_gone "$CS_REDIS_PID" 10 || kill -KILL "$CS_REDIS_PID" 2>/dev/null || true
    CS_REDIS_PID=
}

# -- PostgreSQL ------------------------------------------------------------------

cs_as_postgres() { runuser -u postgres -- "$@"; }

cs_start_pg() {
    [[ -n ${CS_REDIS_PORT:-} ]] || cs_die "cs_start_pg: start Redis first (cs_start_redis)"
    cs_tmp
    local bindir dir port
    bindir=$("$CS_PG_CONFIG" --bindir)
    CS_PGBIN=$bindir
    dir=$CS_TMP/pg
    mkdir -p "$dir"
    chown postgres: "$dir"
    chmod 700 "$dir"
    port=$(cs_free_port)
    export CS_PGBIN CS_PGHOST=$dir CS_PGPORT=$port CS_PGDATA=$dir/data CS_PGDATABASE=$CS_DB

    if ! cs_as_postgres "$bindir/initdb" -D "$CS_PGDATA" -U postgres --auth=trust \
            --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        cs_die "initdb failed"
    fi
    # Create the worker's database before the library is preloaded, so the
    # worker finds it on its first start (single-user mode runs no workers).
    if ! echo "CREATE DATABASE $CS_DB" |
            cs_as_postgres "$bindir/postgres" --single -D "$CS_PGDATA" postgres \
            >"$dir/single.log" 2>&1; then
        cat "$dir/single.log" >&2
        cs_die "could not create database $CS_DB"
    fi
    cat >>"$CS_PGDATA/postgresql.conf" <<EOF

# cachesync private test server (scripts/lib.sh)
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
shared_preload_libraries = 'cachesync'
cachesync.redis_host = '127.0.0.1'
cachesync.redis_port = $CS_REDIS_PORT
cachesync.database = '$CS_DB'
fsync = off
max_prepared_transactions = 10
EOF
    if ! cs_as_postgres "$bindir/pg_ctl" -D "$CS_PGDATA" -w -l "$dir/pg.log" start >/dev/null 2>&1; then
        tail -n 30 "$dir/pg.log" >&2 || true
        cs_die "postgres did not start (log: $dir/pg.log)"
    fi
    echo "postgres: pid $(head -n 1 "$CS_PGDATA/postmaster.pid") on socket $dir port $port"
}

cs_psql() {
    "${CS_PGBIN:-$("$CS_PG_CONFIG" --bindir)}/psql" -X -v ON_ERROR_STOP=1 \
        -h "$CS_PGHOST" -p "$CS_PGPORT" -U postgres "$@"
}

# -- teardown -----------------------------------------------------------------

# Postmasters and redis-servers whose pid files sit under a directory we own
# (e.g. ones a killed TAP test left behind).
cs_stop_strays() {
    local - root=$1 f pid exe
    set +e
    [[ -d $root ]] || return 0
    while IFS= read -r f; do
        pid=$(head -n 1 "$f" 2>/dev/null | tr -dc '0-9' || true)
        cs_pid_alive "$pid" || continue
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
        case $exe in
            */postgres) kill -QUIT "$pid" 2>/dev/null || true ;;   # immediate stop
            */redis-server|*/redis-check-rdb) kill -CONT "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null || true ;;
            *) continue ;;
        esac
        cs_wait_gone "$pid" 10 || kill -KILL "$pid" 2>/dev/null || true
    done < <(find "$root" \( -name postmaster.pid -o -name 'redis*.pid' \) -type f 2>/dev/null)
}

cs_stop_all() {
    local -                 # shell options below are local to this function
    set +e                  # best effort: a vanished pid file must not stop the cleanup
    trap '' INT TERM        # finish the cleanup even on a second Ctrl-C
    if [[ -n ${CS_CHILD:-} ]]; then
        local p
        CS_KILLED=()
        cs_kill_tree "$CS_CHILD" TERM
        for p in "${CS_KILLED[@]}"; do
            cs_wait_gone "$p" 5 || kill -KILL "$p" 2>/dev/null || true
        done
        CS_CHILD=
    fi
    if [[ -n ${CS_PGDATA:-} && -f $CS_PGDATA/postmaster.pid ]]; then
        local pmpid
        pmpid=$(head -n 1 "$CS_PGDATA/postmaster.pid" 2>/dev/null | tr -dc '0-9' || true)
        if ! cs_as_postgres "${CS_PGBIN:-$("$CS_PG_CONFIG" --bindir)}/pg_ctl" \
                -D "$CS_PGDATA" -m fast -t 30 stop >/dev/null 2>&1; then
            kill -QUIT "$pmpid" 2>/dev/null || true     # immediate shutdown
        fi
        cs_wait_gone "$pmpid" 10 || kill -KILL "$pmpid" 2>/dev/null || true
    fi
    if cs_pid_alive "${CS_REDIS_PID:-}"; then
        kill -TERM "$CS_REDIS_PID" 2>/dev/null || true
        kill -CONT "$CS_REDIS_PID" 2>/dev/null || true
        cs_wait_gone "$CS_REDIS_PID" 10 || kill -KILL "$CS_REDIS_PID" 2>/dev/null || true
    fi
    CS_REDIS_PID=
    local d
    for d in ${CS_TMP:+"$CS_TMP"} "${CS_EXTRA_TMPDIRS[@]}"; do
        cs_stop_strays "$d"
        if [[ ${CS_KEEP:-0} == 1 ]]; then
            [[ -d $d ]] && cs_log "kept $d (CS_KEEP=1)"
        else
            rm -rf "$d"
        fi
    done
    CS_TMP=
    CS_EXTRA_TMPDIRS=()
    trap 'exit 130' INT
    trap 'exit 143' TERM
    return 0
}

cs_install_traps() {
    trap cs_stop_all EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
