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

say "write_through: a committed row is in Redis before COMMIT returns"
sql "INSERT INTO demo_users VALUES (7, 'Grace', 'grace@example.com', 'x7');"
redis GET public.demo_users:7
sql "UPDATE demo_users SET email = 'grace@navy.mil' WHERE id = 7;"
redis GET public.demo_users:7

say "A rolled-back change leaves no trace; a savepoint rolled back is dropped"
sql "BEGIN; UPDATE demo_users SET name = 'never' WHERE id = 7; ROLLBACK;"
sql "BEGIN;
UPDATE demo_users SET name = 'Grace Hopper' WHERE id = 7;
SAVEPOINT s; UPDATE demo_users SET name = 'never' WHERE id = 7; ROLLBACK TO s;
COMMIT;"
redis GET public.demo_users:7

say "A key change moves the row; a DELETE removes it"
sql "UPDATE demo_users SET id = 8 WHERE id = 7;"
redis EXISTS public.demo_users:7
redis GET public.demo_users:8
sql "DELETE FROM demo_users WHERE id = 8;"
redis EXISTS public.demo_users:8

say "Existing rows: reload() writes every row and removes keys without a row"
sql "SELECT cachesync.reload('demo_users');"
redis GET public.demo_users:42

say "write_around: the key is deleted once the change committed; reads fill it again"
sql "CREATE TABLE demo_products (sku text PRIMARY KEY, title text, price numeric);"
sql "INSERT INTO demo_products VALUES ('A-1', 'Teapot', 20), ('B-2', 'Cup', 5);"
sql "SELECT cachesync.register('demo_products', mode => 'write_around', format => 'hash', ttl => '1 hour');"
sql "SELECT cachesync.prefill('demo_products', ARRAY['A-1', 'B-2']);"
redis HGETALL public.demo_products:A-1
redis PTTL public.demo_products:A-1
sql "UPDATE demo_products SET price = 22 WHERE sku = 'A-1';"
redis EXISTS public.demo_products:A-1
sql "SELECT cachesync.prefill('demo_products', ARRAY['A-1']);"
redis HGETALL public.demo_products:A-1

say "async: the change is queued durably in the transaction; the worker ships it"
sql "CREATE TABLE demo_events (id bigint PRIMARY KEY, kind text, payload jsonb);"
sql "SELECT cachesync.register('demo_events', mode => 'async');"
sql "INSERT INTO demo_events SELECT g, 'click', jsonb_build_object('n', g) FROM generate_series(1, 1000) g;"
sleep 1
sql "SELECT count(*) AS still_queued FROM cachesync.queue;"
redis GET public.demo_events:1000

say "Redis stops while writes go on: commits do not wait, changes wait in the queue"
cs_stop_redis
sql "UPDATE demo_users SET email = 'ada@lovelace.org' WHERE id = 1;"
sql "UPDATE demo_events SET kind = 'view' WHERE id <= 10;"
sql "SELECT rel, queue_depth, errors, last_error FROM cachesync.stats ORDER BY rel::text;"

say "Redis comes back empty: the worker reloads the tables and replays the queue"
cs_start_redis "$CS_REDIS_PORT" >/dev/null
sleep 3
redis GET public.demo_users:1
redis GET public.demo_events:5
sql "SELECT rel, mode, pushed, invalidated, queue_depth, errors FROM cachesync.stats ORDER BY rel::text;"

say "Drift injected by hand in Redis: validate() finds it in the background, repair fixes it"
redis SET public.demo_users:1 '{"email": "wrong@example.com", "id": 1}'
redis DEL public.demo_users:42
redis SET public.demo_users:424242 '{"id": 424242}'
sql "SELECT cachesync.validate('demo_users');"
sql "SELECT state, rows_checked, missing, stale, orphaned, examples FROM cachesync.wait_validation((SELECT max(id) FROM cachesync.validations));"
sql "SELECT cachesync.validate('demo_users', repair => true);"
sql "SELECT state, missing, stale, orphaned, repaired FROM cachesync.wait_validation((SELECT max(id) FROM cachesync.validations));"
redis GET public.demo_users:1
redis EXISTS public.demo_users:424242

say "reload() rewrites every table; advise() tells whether the cache still pays"
sql "SELECT cachesync.reload();"
sql "SELECT rel, last_reload_at IS NOT NULL AS reloaded, last_validation_id FROM cachesync.stats ORDER BY rel::text;"
sql "SELECT table_name, pg_size_pretty(table_bytes + index_bytes) AS size, redis_keys, pg_size_pretty(redis_bytes) AS redis, recommendation FROM cachesync.advise();"
