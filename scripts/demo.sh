#!/usr/bin/env bash
# scripts/demo.sh — the README demo: a walkthrough of cachesync against a
# private Redis and Postgres.
#
#   scripts/demo.sh               # run as root; stops its servers at the end
#   CS_KEEP=1 scripts/demo.sh     # keep the temp dir (logs, data dir)
#
# It installs missing Debian packages, builds and installs the extension,
# starts the servers, then runs the steps in scripts/demo_steps.sh with:
#   say "text"      a section header
#   sql "SQL"       prints "psql> SQL", then psql's aligned output (NOTICEs too)
#   redis ARGS...   prints "redis> ARGS", then redis-cli's output
# A failing step aborts the demo with a non-zero exit; servers are stopped
# in every case.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CS_ROOT"

cs_require_root
cs_install_traps

say() {
    printf '\n=== %s ===\n\n' "$*"
}

sql() {
    local q=$1 first=1 line
    while IFS= read -r line; do
        if [[ $first -eq 1 ]]; then printf 'psql> %s\n' "$line"; first=0
        else printf '      %s\n' "$line"; fi
    done <<<"$q"
    if ! cs_psql -d "$CS_PGDATABASE" -c "$q" 2>&1; then
        printf '\ndemo: step failed: %s\n' "$q" >&2
        exit 1
    fi
}

# Quote an argument the way redis-cli accepts it, only when needed.
_redis_quote() {
    local a=$1
    if [[ $a =~ ^[A-Za-z0-9_.:@/+=-]+$ ]]; then
        printf '%s' "$a"
    else
        a=${a//\\/\\\\}
        a=${a//\"/\\\"}
        printf '"%s"' "$a"
    fi
}

redis() {
    local shown=() a
    for a in "$@"; do shown+=("$(_redis_quote "$a")"); done
    printf 'redis> %s\n' "${shown[*]}"
    if ! cs_redis_cli --no-raw "$@" 2>&1; then
        printf '\ndemo: step failed: redis %s\n' "${shown[*]}" >&2
        exit 1
    fi
}

cs_install_deps
cs_build_install
cs_start_redis
cs_start_pg

source "$CS_ROOT/scripts/demo_steps.sh"

say "done"
echo "demo finished; stopping the private servers"
