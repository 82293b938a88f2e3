# shellcheck shell=bash
# scripts/demo_steps.sh — the walkthrough run by scripts/demo.sh (sourced).
# Helpers: say "header"; sql "SQL"; redis ARGS...
# Servers: Postgres database $CS_PGDATABASE (the one the worker serves),
# Redis on 127.0.0.1:$CS_REDIS_PORT.  Extend as features land.

say "Install the extension (the library is already in shared_preload_libraries)"
sql "CREATE EXTENSION cachesync;"

say "The Redis connection, as cachesync sees it"
sql "SELECT * FROM cachesync.redis_status();"

say "A table with a secret column"
sql "CREATE TABLE demo_users (
    id            int PRIMARY KEY,
    name          text,
    email         text,
    password_hash text
);"
sql "INSERT INTO demo_users VALUES
    (1,  'Ada',    'ada@example.com',    'x1'),
    (2,  'Brian',  'brian@example.com',  'x2'),
    (42, 'Zaphod', 'zaphod@example.com', 'x42');"

say "Register it, caching everything but the password hash"
sql "SELECT cachesync.register('demo_users', columns => ARRAY['id','name','email']);"
sql "SELECT * FROM cachesync.tables;"

say "Where a row lives in Redis"
sql "SELECT cachesync.key('demo_users', '42');"

say "':' and '\\' inside key values are escaped (a text key this time)"
sql "CREATE TABLE demo_sessions (token text PRIMARY KEY, user_id int);"
sql "SELECT cachesync.register('demo_sessions');"
sql "SELECT cachesync.key('demo_sessions', 'a:b\\c');"

say "Redis itself"
redis PING
