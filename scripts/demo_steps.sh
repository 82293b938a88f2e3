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

say "Redis comes back empty: the worker reloads the tables, which covers the queued changes"
cs_start_redis "$CS_REDIS_PORT" >/dev/null
sleep 3
redis GET public.demo_users:1
redis GET public.demo_events:5
sql "SELECT rel, mode, pushed, invalidated, queue_depth, errors FROM cachesync.stats ORDER BY rel::text;"

say "Read-through: get() fills a miss from the table and answers hits from Redis"
sql "SELECT cachesync.get('demo_products', 'B-2') AS cold_read;"
redis HGETALL public.demo_products:B-2
sql "SELECT cachesync.get('demo_products', 'B-2') AS warm_read;"
sql "SELECT count(cachesync.get('demo_products', 'A-1')) AS reads FROM generate_series(1, 50);"
sql "SELECT * FROM cachesync.get_many('demo_products', ARRAY['A-1', 'B-2', 'Z-9']);"
sql "SELECT rel, hits, misses, hit_ratio FROM cachesync.stats WHERE rel = 'demo_products'::regclass;"
sql "SELECT * FROM cachesync.hot_keys WHERE rel = 'demo_products'::regclass;"

say "Redis flushed: the worker warms the hot keys first (write_around has no other way back)"
redis FLUSHALL
sleep 2
redis HGETALL public.demo_products:A-1
redis EXISTS public.demo_products:B-2

say "write_back: applications write Redis and the stream in one call; the worker applies it to the table"
sql "CREATE TABLE demo_carts (id int PRIMARY KEY, items int NOT NULL CHECK (items >= 0), updated_at timestamptz DEFAULT now());"
sql "SELECT cachesync.register('demo_carts', mode => 'write_back');"
sql "SELECT rel, mode, writeback_stream FROM cachesync.tables WHERE rel = 'demo_carts'::regclass;"
sleep 6   # the write-back worker publishes the table's format to Redis (every 5 s)
redis FCALL cachesync_upsert 2 public.demo_carts:1 public.demo_carts:__writeback '{"id":1,"items":3}'
redis FCALL cachesync_upsert 2 public.demo_carts:2 public.demo_carts:__writeback '{"id":2,"items":1}'
redis FCALL cachesync_delete 2 public.demo_carts:2 public.demo_carts:__writeback '{"id":2}'
sleep 2
sql "SELECT id, items FROM demo_carts ORDER BY id;"
redis GET public.demo_carts:1

say "A poison entry (violates a CHECK) goes to the dead letters; the entries after it still flow"
redis FCALL cachesync_upsert 2 public.demo_carts:3 public.demo_carts:__writeback '{"id":3,"items":-1}'
redis FCALL cachesync_upsert 2 public.demo_carts:4 public.demo_carts:__writeback '{"id":4,"items":2}'
sleep 2
sql "SELECT id, items FROM demo_carts ORDER BY id;"
sql "SELECT op, data, sqlstate, error FROM cachesync.dead_letters('demo_carts');"
sql "SELECT rel, wb_applied, wb_dead_lettered, wb_pending FROM cachesync.stats WHERE rel = 'demo_carts'::regclass;"

say "Change events: notify publishes committed keys on Pub/Sub (a subscriber listens live)"
sql "CREATE TABLE demo_prices (sku text PRIMARY KEY, cents int);"
sql "SELECT cachesync.register('demo_prices', notify => true, changes => true);"
sql "SELECT rel, invalidate_channel, change_stream FROM cachesync.tables WHERE rel = 'demo_prices'::regclass;"
sub_out=$CS_TMP/demo_subscriber.out
timeout 4 redis-cli -h 127.0.0.1 -p "$CS_REDIS_PORT" SUBSCRIBE __cachesync:invalidate:public.demo_prices >"$sub_out" 2>&1 &
sub_pid=$!
sleep 0.5
sql "INSERT INTO demo_prices VALUES ('tea', 350), ('cake', 420);"
sql "BEGIN; UPDATE demo_prices SET cents = 1 WHERE sku = 'tea'; ROLLBACK;"
sql "UPDATE demo_prices SET cents = 380 WHERE sku = 'tea';"
wait "$sub_pid" || true
echo "subscriber received (the rolled-back update is not there):"
sed 's/^/  /' "$sub_out"

say "Change stream: Redis stops while writes go on; once it is back, a consumer group reads the changes made meanwhile"
cs_stop_redis
sql "UPDATE demo_prices SET cents = 400 WHERE sku = 'tea';"
sql "DELETE FROM demo_prices WHERE sku = 'cake';"
sql "SELECT count(*) AS changes_waiting_in_the_outbox FROM cachesync.changes_outbox;"
cs_start_redis "$CS_REDIS_PORT" >/dev/null
sleep 3
redis XGROUP CREATE public.demo_prices:__changes billing 0 MKSTREAM
redis XREADGROUP GROUP billing worker-1 COUNT 10 STREAMS public.demo_prices:__changes '>'

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
