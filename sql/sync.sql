-- Sync: what each mode sends to Redis, and when.
--
-- The background worker serves another database, so queued entries stay in
-- cachesync.queue here; cachesync.prefill(), the populate path the worker
-- uses, stands in for it where a test needs the queue shipped.

-- Redis content as deterministic SQL values
CREATE FUNCTION sync_keys(pattern text) RETURNS SETOF text LANGUAGE sql AS
$$ SELECT k FROM json_array_elements_text(cachesync.redis_command('KEYS', pattern)::json) k ORDER BY 1 $$;
CREATE FUNCTION sync_get(rel regclass, VARIADIC kv text[]) RETURNS text LANGUAGE sql AS
$$ SELECT cachesync.redis_command('GET', cachesync.key(rel, VARIADIC kv)) $$;
CREATE FUNCTION sync_hget(rel regclass, VARIADIC kv text[]) RETURNS jsonb LANGUAGE sql AS
$$ SELECT jsonb_object(ARRAY(SELECT json_array_elements_text(
       cachesync.redis_command('HGETALL', cachesync.key(rel, VARIADIC kv))::json))) $$;
CREATE FUNCTION sync_exists(rel regclass, VARIADIC kv text[]) RETURNS text LANGUAGE sql AS
$$ SELECT cachesync.redis_command('EXISTS', cachesync.key(rel, VARIADIC kv)) $$;
CREATE FUNCTION sync_pttl(k text) RETURNS bigint LANGUAGE sql AS
$$ SELECT cachesync.redis_command('PTTL', k)::bigint $$;
CREATE FUNCTION sync_queue(rel regclass) RETURNS SETOF text LANGUAGE sql AS
$$ SELECT coalesce(key, '<whole table>') FROM cachesync.queue WHERE rel = $1 ORDER BY key NULLS FIRST, ctid $$;

CREATE TABLE sync_wt (id int PRIMARY KEY, v text, n int);
CREATE TABLE sync_wth (id int PRIMARY KEY, v text, n int);
CREATE TABLE sync_ttl (id int PRIMARY KEY, v text);
CREATE TABLE sync_ttlh (id int PRIMARY KEY, v text);
CREATE TABLE sync_wa (id int PRIMARY KEY, v text);
CREATE TABLE sync_wah (id int PRIMARY KEY, v text);
CREATE TABLE sync_as (id int PRIMARY KEY, v text);
CREATE TABLE sync_ash (id int PRIMARY KEY, v text, n int);
CREATE TABLE sync_comp (a text, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE sync_cols (id int PRIMARY KEY, name text, secret text);
CREATE TABLE sync_colsh (id int PRIMARY KEY, name text, secret text);
CREATE TABLE sync_def (id int PRIMARY KEY, u int UNIQUE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE sync_tr (id int PRIMARY KEY, v text);
CREATE TABLE sync_big (id int PRIMARY KEY, v text);
CREATE TABLE sync_2pc (id int PRIMARY KEY, v text);
CREATE TABLE sync_priv_wt (id int PRIMARY KEY, v text);
CREATE TABLE sync_priv_as (id int PRIMARY KEY, v text);
SET client_min_messages = warning;
SELECT cachesync.register('sync_wt');
SELECT cachesync.register('sync_wth', format => 'hash');
SELECT cachesync.register('sync_ttl', ttl => '1 hour');
SELECT cachesync.register('sync_ttlh', format => 'hash', ttl => '90 seconds');
SELECT cachesync.register('sync_wa', mode => 'write_around');
SELECT cachesync.register('sync_wah', mode => 'write_around', format => 'hash');
SELECT cachesync.register('sync_as', mode => 'async');
SELECT cachesync.register('sync_ash', mode => 'async', format => 'hash');
SELECT cachesync.register('sync_comp');
SELECT cachesync.register('sync_cols', columns => ARRAY['name']);
SELECT cachesync.register('sync_colsh', columns => ARRAY['name'], format => 'hash');
SELECT cachesync.register('sync_def');
SELECT cachesync.register('sync_tr');
SELECT cachesync.register('sync_big');
SELECT cachesync.register('sync_2pc');
SELECT cachesync.register('sync_priv_wt');
SELECT cachesync.register('sync_priv_as', mode => 'async');
RESET client_min_messages;

--
-- write_through, json: the committed row is in Redis when COMMIT returns
--
INSERT INTO sync_wt VALUES (1, 'one', 1), (2, 'two', NULL);
SELECT sync_get('sync_wt', '1') AS one, sync_get('sync_wt', '2') AS two;
-- the value is row_to_json of the row
SELECT sync_get('sync_wt', '1') = row_to_json(t)::text AS same FROM sync_wt t WHERE id = 1;
UPDATE sync_wt SET v = 'uno' WHERE id = 1;
SELECT sync_get('sync_wt', '1');
-- several changes of one key in a transaction: its final value is sent, at commit
BEGIN;
UPDATE sync_wt SET n = 10 WHERE id = 2;
UPDATE sync_wt SET n = 20 WHERE id = 2;
SELECT sync_get('sync_wt', '2') AS before_commit;
COMMIT;
SELECT sync_get('sync_wt', '2') AS after_commit;
-- the version key lives outside the table's key prefix
SELECT sync_keys('public.sync_wt:*');
SELECT cachesync.redis_command('EXISTS', '__cachesync:v:' || cachesync.key('sync_wt', '1')) AS has_version;
-- DELETE removes the key
DELETE FROM sync_wt WHERE id = 2;
SELECT sync_exists('sync_wt', '2');
SELECT sync_keys('public.sync_wt:*');
-- stats count the values pushed
SELECT pushed AS pushed_before FROM cachesync.stats WHERE rel = 'sync_wt'::regclass \gset
INSERT INTO sync_wt VALUES (3, 'three', 3), (4, 'four', 4);
SELECT pushed - :pushed_before AS pushed, queue_depth FROM cachesync.stats WHERE rel = 'sync_wt'::regclass;
-- a key change deletes the old key and writes the new one
UPDATE sync_wt SET id = 10 WHERE id = 1;
SELECT sync_keys('public.sync_wt:*');
SELECT sync_get('sync_wt', '10');
-- keys swapped within one transaction: each key gets its final row
BEGIN;
UPDATE sync_wt SET id = 30 WHERE id = 3;
UPDATE sync_wt SET id = 3 WHERE id = 4;
UPDATE sync_wt SET id = 4 WHERE id = 30;
COMMIT;
SELECT sync_keys('public.sync_wt:*');
SELECT sync_get('sync_wt', '3') AS k3, sync_get('sync_wt', '4') AS k4;
-- an INSERT then DELETE in one transaction leaves no key
BEGIN;
INSERT INTO sync_wt VALUES (5, 'short-lived', 0);
DELETE FROM sync_wt WHERE id = 5;
COMMIT;
SELECT sync_exists('sync_wt', '5');
-- a DELETE then re-INSERT of one key in one transaction: the new row
BEGIN;
DELETE FROM sync_wt WHERE id = 10;
INSERT INTO sync_wt VALUES (10, 'reborn', 10);
COMMIT;
SELECT sync_get('sync_wt', '10');

--
-- write_through, hash: one field per non-NULL column, text output form
--
INSERT INTO sync_wth VALUES (1, 'one', NULL);
SELECT sync_hget('sync_wth', '1');
UPDATE sync_wth SET n = 5 WHERE id = 1;
SELECT sync_hget('sync_wth', '1');
-- a column set to NULL loses its field
UPDATE sync_wth SET v = NULL WHERE id = 1;
SELECT sync_hget('sync_wth', '1');
UPDATE sync_wth SET id = 2, v = 'two' WHERE id = 1;
SELECT sync_keys('public.sync_wth:*');
SELECT sync_hget('sync_wth', '2');
DELETE FROM sync_wth;
SELECT sync_keys('public.sync_wth:*');

--
-- TTL: the row key expires (PX), and its version key with it
--
INSERT INTO sync_ttl VALUES (1, 'expiring');
INSERT INTO sync_ttlh VALUES (1, 'expiring');
SELECT sync_get('sync_ttl', '1');
SELECT sync_hget('sync_ttlh', '1');
SELECT sync_pttl(cachesync.key('sync_ttl', '1')) BETWEEN 1 AND 3600000 AS json_ttl,
       sync_pttl(cachesync.key('sync_ttlh', '1')) BETWEEN 1 AND 90000 AS hash_ttl,
       sync_pttl('__cachesync:v:' || cachesync.key('sync_ttl', '1')) BETWEEN 1 AND 3600000 AS version_ttl;
-- an update keeps a TTL on the new value
UPDATE sync_ttl SET v = 'still expiring';
UPDATE sync_ttlh SET v = 'still expiring';
SELECT sync_get('sync_ttl', '1');
SELECT sync_hget('sync_ttlh', '1');
SELECT sync_pttl(cachesync.key('sync_ttl', '1')) BETWEEN 1 AND 3600000 AS json_ttl,
       sync_pttl(cachesync.key('sync_ttlh', '1')) BETWEEN 1 AND 90000 AS hash_ttl;
-- without a ttl the key does not expire
SELECT sync_pttl(cachesync.key('sync_wt', '10')) AS no_ttl;

--
-- write_around: committed changes delete the key; nothing is written
--
INSERT INTO sync_wa VALUES (1, 'a'), (2, 'b');
SELECT sync_keys('public.sync_wa:*');
-- a stale value, as a reader may have cached it
SELECT cachesync.redis_command('SET', cachesync.key('sync_wa', '1'), 'stale');
UPDATE sync_wa SET v = 'a2' WHERE id = 1;
SELECT sync_exists('sync_wa', '1');
-- a tombstone keeps the deletion's version for a while
SELECT sync_pttl('__cachesync:v:' || cachesync.key('sync_wa', '1')) > 0 AS tombstone;
-- a rolled-back UPDATE deletes nothing
SELECT cachesync.redis_command('SET', cachesync.key('sync_wa', '1'), 'stale again');
BEGIN;
UPDATE sync_wa SET v = 'a3' WHERE id = 1;
ROLLBACK;
SELECT sync_get('sync_wa', '1');
-- nor does a change rolled back to a savepoint
BEGIN;
SAVEPOINT s;
UPDATE sync_wa SET v = 'a4' WHERE id = 1;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT sync_get('sync_wa', '1');
-- DELETE, and a key change (old and new key)
DELETE FROM sync_wa WHERE id = 1;
SELECT sync_exists('sync_wa', '1');
SELECT cachesync.redis_command('SET', cachesync.key('sync_wa', '2'), 'stale old key');
SELECT cachesync.redis_command('SET', cachesync.key('sync_wa', '3'), 'stale new key');
UPDATE sync_wa SET id = 3 WHERE id = 2;
SELECT sync_keys('public.sync_wa:*');
-- hash format
INSERT INTO sync_wah VALUES (1, 'a');
SELECT cachesync.redis_command('HSET', cachesync.key('sync_wah', '1'), 'v', 'stale');
UPDATE sync_wah SET v = 'a2';
SELECT sync_keys('public.sync_wah:*');
SELECT invalidated >= 1 AS counted FROM cachesync.stats WHERE rel = 'sync_wah'::regclass;

--
-- async: keys go to the queue inside the transaction; the worker ships them
--
INSERT INTO sync_as VALUES (1, 'a'), (2, 'b');
UPDATE sync_as SET v = 'b2' WHERE id = 2;
INSERT INTO sync_ash VALUES (1, 'a', NULL);
SELECT sync_queue('sync_as');
SELECT sync_queue('sync_ash');
SELECT queue_depth FROM cachesync.stats WHERE rel = 'sync_as'::regclass;
SELECT sync_keys('public.sync_as*');
-- a rolled-back transaction or savepoint queues nothing
BEGIN;
INSERT INTO sync_as VALUES (3, 'c');
ROLLBACK;
BEGIN;
INSERT INTO sync_as VALUES (4, 'd');
SAVEPOINT s;
INSERT INTO sync_as VALUES (5, 'e');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT sync_queue('sync_as');
-- shipping (prefill is the worker's populate path) writes the committed rows
SELECT cachesync.prefill('sync_as', ARRAY['1', '2', '4']);
SELECT cachesync.prefill('sync_ash', ARRAY['1']);
SELECT sync_get('sync_as', '1') AS k1, sync_get('sync_as', '2') AS k2, sync_get('sync_as', '4') AS k4;
SELECT sync_hget('sync_ash', '1');
-- a queued DELETE: the key stays until shipped, then goes
DELETE FROM sync_as WHERE id = 1;
SELECT sync_queue('sync_as');
SELECT sync_exists('sync_as', '1');
SELECT cachesync.prefill('sync_as', ARRAY['1']);
SELECT sync_exists('sync_as', '1');

--
-- composite keys: ':' and '\' in key values are escaped
--
INSERT INTO sync_comp VALUES ('x:y', 1, 'colon'), ('back\slash', 2, 'backslash'),
                             ('plain', 3, 'plain'), (':\', 4, 'both');
SELECT sync_keys('public.sync_comp:*');
SELECT a, b, sync_get('sync_comp', a, b::text) FROM sync_comp ORDER BY b;
-- a change of the second key column
UPDATE sync_comp SET b = 5 WHERE b = 1;
SELECT sync_keys('public.sync_comp:*');
SELECT sync_get('sync_comp', 'x:y', '5');
-- prefill takes full keys for a composite key
SELECT cachesync.redis_command('DEL', cachesync.key('sync_comp', ':\', '4'));
SELECT cachesync.prefill('sync_comp', ARRAY[cachesync.key('sync_comp', ':\', '4')]);
SELECT sync_get('sync_comp', ':\', '4');

--
-- columns: only the cached columns reach Redis
--
INSERT INTO sync_cols VALUES (1, 'alice', 'hunter2');
INSERT INTO sync_colsh VALUES (1, 'alice', 'hunter2');
SELECT sync_get('sync_cols', '1');
SELECT sync_hget('sync_colsh', '1');
-- an UPDATE of no cached column sends nothing: a value set by hand stays
SELECT cachesync.redis_command('SET', cachesync.key('sync_cols', '1'), 'set by hand');
SELECT cachesync.redis_command('HSET', cachesync.key('sync_colsh', '1'), 'name', 'set by hand');
UPDATE sync_cols SET secret = 'correct horse' WHERE id = 1;
UPDATE sync_colsh SET secret = 'correct horse' WHERE id = 1;
SELECT sync_get('sync_cols', '1');
SELECT sync_hget('sync_colsh', '1');
-- an UPDATE of a cached column sends the row
UPDATE sync_cols SET name = 'alicia', secret = 'battery staple' WHERE id = 1;
UPDATE sync_colsh SET name = 'alicia', secret = 'battery staple' WHERE id = 1;
SELECT sync_get('sync_cols', '1');
SELECT sync_hget('sync_colsh', '1');

--
-- ROLLBACK, errors and savepoints
--
BEGIN;
INSERT INTO sync_wt VALUES (50, 'rolled back', 0);
UPDATE sync_wt SET v = 'rolled back' WHERE id = 3;
DELETE FROM sync_wt WHERE id = 4;
ROLLBACK;
SELECT sync_exists('sync_wt', '50') AS k50, sync_get('sync_wt', '3') AS k3, sync_get('sync_wt', '4') AS k4;
-- a transaction that fails
BEGIN;
INSERT INTO sync_wt VALUES (51, 'failed', 0);
SELECT 1 / 0;
COMMIT;
SELECT sync_exists('sync_wt', '51');
-- a transaction whose deferred constraint fails at COMMIT
INSERT INTO sync_def VALUES (1, 1);
BEGIN;
INSERT INTO sync_def VALUES (2, 1);
COMMIT;
SELECT sync_keys('public.sync_def:*');
-- a populator inside a transaction that rolls back: its own uncommitted rows
-- must not reach Redis
BEGIN;
UPDATE sync_wt SET v = 'uncommitted' WHERE id = 3;
INSERT INTO sync_wt VALUES (52, 'uncommitted', 0);
SELECT cachesync.prefill('sync_wt', ARRAY['3', '52']) >= 0 AS prefilled;
ROLLBACK;
SELECT sync_get('sync_wt', '3') AS k3, sync_exists('sync_wt', '52') AS k52;
-- ROLLBACK TO SAVEPOINT restores the key's earlier value in the transaction
BEGIN;
UPDATE sync_wt SET v = 'sp-1' WHERE id = 3;
SAVEPOINT a;
UPDATE sync_wt SET v = 'sp-2' WHERE id = 3;
ROLLBACK TO SAVEPOINT a;
COMMIT;
SELECT sync_get('sync_wt', '3');
-- nested savepoints and RELEASE
BEGIN;
INSERT INTO sync_wt VALUES (20, 'level 0', 0);
SAVEPOINT a;
UPDATE sync_wt SET v = 'level 1' WHERE id = 20;
SAVEPOINT b;
UPDATE sync_wt SET v = 'level 2' WHERE id = 20;
INSERT INTO sync_wt VALUES (21, 'only in b', 0);
ROLLBACK TO SAVEPOINT b;
SAVEPOINT c;
UPDATE sync_wt SET v = 'released' WHERE id = 20;
RELEASE SAVEPOINT c;
SAVEPOINT d;
DELETE FROM sync_wt WHERE id = 20;
ROLLBACK TO SAVEPOINT d;
COMMIT;
SELECT sync_get('sync_wt', '20') AS k20, sync_exists('sync_wt', '21') AS k21;
-- rolling back an outer savepoint drops a released inner one
BEGIN;
SAVEPOINT a;
SAVEPOINT b;
UPDATE sync_wt SET v = 'inner' WHERE id = 3;
INSERT INTO sync_wt VALUES (22, 'inner', 0);
RELEASE SAVEPOINT b;
ROLLBACK TO SAVEPOINT a;
COMMIT;
SELECT sync_get('sync_wt', '3') AS k3, sync_exists('sync_wt', '22') AS k22;
-- a failed statement inside a savepoint
BEGIN;
UPDATE sync_wt SET v = 'before the error' WHERE id = 3;
SAVEPOINT e;
UPDATE sync_wt SET v = 'doomed' WHERE id = 3;
INSERT INTO sync_wt VALUES (3, 'duplicate', 0);
ROLLBACK TO SAVEPOINT e;
COMMIT;
SELECT sync_get('sync_wt', '3');
-- a change after a released savepoint, then a rollback to a later one
BEGIN;
SAVEPOINT a;
UPDATE sync_wt SET v = 'in a' WHERE id = 4;
RELEASE SAVEPOINT a;
UPDATE sync_wt SET v = 'top level' WHERE id = 4;
SAVEPOINT b;
UPDATE sync_wt SET v = 'in b' WHERE id = 4;
ROLLBACK TO SAVEPOINT b;
COMMIT;
SELECT sync_get('sync_wt', '4');

--
-- TRUNCATE: a whole-table entry for the worker
--
INSERT INTO sync_tr VALUES (1, 'a'), (2, 'b'), (3, 'c');
SELECT sync_keys('public.sync_tr:*');
TRUNCATE sync_tr;
SELECT sync_queue('sync_tr');
-- the keys stay until the worker syncs the table's keys ...
SELECT sync_keys('public.sync_tr:*');
-- ... which removes every key whose row is gone, as prefill does
SELECT cachesync.prefill('sync_tr', ARRAY['1', '2', '3']);
SELECT sync_keys('public.sync_tr:*');
-- changes before a TRUNCATE in the transaction become deletions; after it, they are sent
INSERT INTO sync_tr VALUES (1, 'a');
BEGIN;
INSERT INTO sync_tr VALUES (2, 'b');
TRUNCATE sync_tr;
INSERT INTO sync_tr VALUES (4, 'after truncate');
COMMIT;
SELECT sync_keys('public.sync_tr:*');
SELECT sync_get('sync_tr', '4');
SELECT sync_queue('sync_tr');
SELECT cachesync.prefill('sync_tr', ARRAY['1', '2', '4']);
SELECT sync_keys('public.sync_tr:*');
-- a TRUNCATE rolled back (to a savepoint) queues nothing and keeps earlier changes
BEGIN;
TRUNCATE sync_tr;
ROLLBACK;
BEGIN;
INSERT INTO sync_tr VALUES (5, 'kept');
SAVEPOINT s;
TRUNCATE sync_tr;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT sync_queue('sync_tr');
SELECT sync_keys('public.sync_tr:*');

--
-- partitioned table: every partition's rows under the parent's key prefix
--
CREATE TABLE sync_part (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE sync_part_eu PARTITION OF sync_part FOR VALUES IN ('eu');
-- partitions whose columns are laid out differently: another order, a dropped column
CREATE TABLE sync_part_us (v text, region text NOT NULL, id int NOT NULL);
ALTER TABLE sync_part ATTACH PARTITION sync_part_us FOR VALUES IN ('us');
CREATE TABLE sync_part_uk (dropped int, id int NOT NULL, region text NOT NULL, v text);
ALTER TABLE sync_part_uk DROP COLUMN dropped;
ALTER TABLE sync_part ATTACH PARTITION sync_part_uk FOR VALUES IN ('uk');
SET client_min_messages = warning;
SELECT cachesync.register('sync_part');
RESET client_min_messages;
INSERT INTO sync_part VALUES (1, 'eu', 'e1'), (2, 'us', 'u2'), (3, 'uk', 'k3');
-- writing a partition directly
INSERT INTO sync_part_us VALUES ('u5', 'us', 5);
SELECT sync_keys('public.sync_part*');
SELECT sync_get('sync_part', '2', 'us') AS k2, sync_get('sync_part', '3', 'uk') AS k3,
       sync_get('sync_part', '5', 'us') AS k5;
-- a row moving to another partition changes its key
UPDATE sync_part SET region = 'us' WHERE id = 1;
UPDATE sync_part_us SET v = 'u2 direct' WHERE id = 2;
UPDATE sync_part_uk SET v = 'k3 direct' WHERE id = 3;
-- a partition created after registration is captured too
CREATE TABLE sync_part_asia PARTITION OF sync_part FOR VALUES IN ('asia');
INSERT INTO sync_part VALUES (4, 'asia', 'a4');
SELECT sync_keys('public.sync_part*');
SELECT sync_get('sync_part', '1', 'us') AS k1, sync_get('sync_part', '2', 'us') AS k2,
       sync_get('sync_part', '3', 'uk') AS k3, sync_get('sync_part', '4', 'asia') AS k4;
-- deletes from partitions laid out unlike the parent, directly, through the
-- parent and by a row moving out of one
DELETE FROM sync_part_us WHERE id = 5;
DELETE FROM sync_part WHERE id = 2;
UPDATE sync_part SET region = 'eu' WHERE id = 3;
SELECT sync_keys('public.sync_part*');
SELECT sync_get('sync_part', '3', 'eu') AS k3;
SELECT * FROM sync_part ORDER BY id;
-- a TRUNCATE of one partition reaches the queue too
TRUNCATE sync_part_asia;
SELECT count(*) > 0 AS queued FROM cachesync.queue WHERE rel = 'sync_part'::regclass;
SELECT cachesync.prefill('sync_part', ARRAY[cachesync.key('sync_part', '4', 'asia')]);
SELECT sync_keys('public.sync_part*');

--
-- cachesync.enabled = off captures nothing
--
SET cachesync.enabled = off;
INSERT INTO sync_wt VALUES (40, 'not captured', 0);
UPDATE sync_wt SET v = 'not captured' WHERE id = 3;
INSERT INTO sync_as VALUES (40, 'not captured');
RESET cachesync.enabled;
SELECT sync_exists('sync_wt', '40') AS k40, sync_get('sync_wt', '3') AS k3;
SELECT sync_queue('sync_as');

--
-- cachesync.max_transaction_changes: a bigger transaction goes to the queue
--
SET cachesync.max_transaction_changes = 3;
INSERT INTO sync_big SELECT g, 'row ' || g FROM generate_series(1, 10) g;
SELECT count(*) AS queued, count(DISTINCT key) AS keys FROM cachesync.queue WHERE rel = 'sync_big'::regclass;
SELECT count(*) AS in_redis FROM sync_keys('public.sync_big:*');
-- rolled-back savepoints of a spilled transaction queue nothing
BEGIN;
INSERT INTO sync_big SELECT g, 'row ' || g FROM generate_series(11, 20) g;
SAVEPOINT s;
INSERT INTO sync_big SELECT g, 'row ' || g FROM generate_series(21, 25) g;
UPDATE sync_big SET v = 'rolled back' WHERE id <= 2;
ROLLBACK TO SAVEPOINT s;
UPDATE sync_big SET v = 'updated' WHERE id = 3;
COMMIT;
RESET cachesync.max_transaction_changes;
SELECT count(*) AS queued, count(DISTINCT key) AS keys,
       count(DISTINCT key) FILTER (WHERE key IN (SELECT cachesync.key('sync_big', g::text) FROM generate_series(11, 20) g)) AS committed,
       count(*) FILTER (WHERE key IN (SELECT cachesync.key('sync_big', g::text) FROM generate_series(21, 25) g)) AS rolled_back
  FROM cachesync.queue WHERE rel = 'sync_big'::regclass;
SELECT count(*) AS in_redis FROM sync_keys('public.sync_big:*');
-- shipping the queued keys brings Redis in line with the table
SELECT cachesync.prefill('sync_big', ARRAY(SELECT DISTINCT substr(key, length('public.sync_big:') + 1)
                                             FROM cachesync.queue WHERE rel = 'sync_big'::regclass));
SELECT (SELECT count(*) FROM sync_keys('public.sync_big:*')) AS in_redis,
       (SELECT count(*) FROM sync_big) AS table_rows;
SELECT sync_get('sync_big', '3');

--
-- unregister(purge => true): keys and triggers go
--
SELECT cachesync.unregister('sync_big', purge => true);
SELECT count(*) AS in_redis FROM sync_keys('public.sync_big:*');
-- no version key of a purged row is left behind for ever
SELECT count(*) AS versions_without_ttl FROM sync_keys('__cachesync:v:public.sync_big:*') k WHERE sync_pttl(k) = -1;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'sync_big'::regclass;
DELETE FROM cachesync.queue WHERE rel = 'sync_big'::regclass;
INSERT INTO sync_big VALUES (100, 'after unregister');
TRUNCATE sync_big;
SELECT count(*) AS in_redis FROM sync_keys('public.sync_big:*');
SELECT count(*) AS queued FROM cachesync.queue WHERE rel = 'sync_big'::regclass;

--
-- PREPARE TRANSACTION: keys are queued, nothing is pushed
--
INSERT INTO sync_2pc VALUES (1, 'committed');
BEGIN;
INSERT INTO sync_2pc VALUES (2, 'prepared');
UPDATE sync_2pc SET v = 'prepared update' WHERE id = 1;
PREPARE TRANSACTION 'sync_2pc_commit';
SELECT sync_get('sync_2pc', '1') AS k1, sync_exists('sync_2pc', '2') AS k2;
SELECT sync_queue('sync_2pc');
COMMIT PREPARED 'sync_2pc_commit';
SELECT sync_queue('sync_2pc');
SELECT sync_get('sync_2pc', '1') AS k1, sync_exists('sync_2pc', '2') AS k2;
SELECT cachesync.prefill('sync_2pc', ARRAY['1', '2']);
SELECT sync_get('sync_2pc', '1') AS k1, sync_get('sync_2pc', '2') AS k2;
-- ROLLBACK PREPARED leaves nothing
BEGIN;
UPDATE sync_2pc SET v = 'never' WHERE id = 2;
DELETE FROM sync_2pc WHERE id = 1;
INSERT INTO sync_2pc VALUES (3, 'never');
PREPARE TRANSACTION 'sync_2pc_rollback';
ROLLBACK PREPARED 'sync_2pc_rollback';
SELECT sync_queue('sync_2pc');
SELECT sync_get('sync_2pc', '1') AS k1, sync_get('sync_2pc', '2') AS k2, sync_exists('sync_2pc', '3') AS k3;

--
-- a role that may only write a registered table: its changes sync, and
-- cachesync's own tables stay closed to it
--
CREATE ROLE regress_sync_writer;
GRANT INSERT, UPDATE, DELETE ON sync_priv_wt, sync_priv_as TO regress_sync_writer;
SET ROLE regress_sync_writer;
INSERT INTO sync_priv_wt VALUES (1, 'by the writer');
INSERT INTO sync_priv_as VALUES (1, 'by the writer');
-- without SELECT it can update only without a WHERE clause
UPDATE sync_priv_wt SET v = 'updated by the writer';
SELECT * FROM sync_priv_wt;
SELECT count(*) FROM cachesync.queue;
SELECT count(*) FROM cachesync.registrations;
INSERT INTO cachesync.queue (rel, key) VALUES ('sync_priv_wt'::regclass, 'x');
RESET ROLE;
SELECT sync_get('sync_priv_wt', '1');
SELECT sync_queue('sync_priv_as');
SET ROLE regress_sync_writer;
DELETE FROM sync_priv_wt;
RESET ROLE;
SELECT sync_exists('sync_priv_wt', '1');

--
-- json values are row_to_json's, byte for byte: the types cachesync writes
-- itself (booleans, numbers, built-in types as strings) and the ones it
-- leaves to row_to_json (dates, arrays, domains, json), NULLs, odd numbers,
-- escapes, a dropped column, a column name that needs escaping, and a
-- registration of some columns only
--
CREATE DOMAIN sync_posint AS int CHECK (VALUE > 0);
CREATE TABLE sync_types (id int PRIMARY KEY, gone int, b bool, i2 int2, i8 int8,
    f4 float4, f8 float8, nu numeric, t text, vc varchar(5), bp char(3), nm name,
    u uuid, by bytea, iv interval, tm time, mo money, ip inet, pt point, o oid,
    ch "char", "we""ird\col" text);
ALTER TABLE sync_types DROP COLUMN gone;
CREATE TABLE sync_types_other (id int PRIMARY KEY, d date, ts timestamp,
    tz timestamptz, a int[], j json, jb jsonb, dom sync_posint);
CREATE TABLE sync_types_some (id int PRIMARY KEY, f8 float8, secret text, t text);
CREATE TABLE sync_types_dt (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz);
SET client_min_messages = warning;
SELECT cachesync.register('sync_types', mode => 'write_through');
SELECT cachesync.register('sync_types_other', mode => 'write_through');
SELECT cachesync.register('sync_types_dt', mode => 'write_through');
SELECT cachesync.register('sync_types_some', mode => 'write_through',
                          columns => ARRAY['id', 'f8', 't']);
RESET client_min_messages;
INSERT INTO sync_types VALUES
  (1, true, -32768, 9223372036854775807, 1.5, -0.0, 1e-300, 'text', 'vc', 'b',
   'name', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff', '1 day 2 hours',
   '12:34:56', 12.5, '10.0.0.1/8', '(1,2)', 42, 'x', 'w'),
  (2, false, 0, 0, 'NaN', 'Infinity', 'NaN', E'quote" back\\ nl\n tab\t bell\x07 é ☃',
   '', '', '', NULL, '', '-1 year', NULL, NULL, NULL, NULL, 0, NULL, NULL),
  (3, NULL, NULL, NULL, '-Infinity', 'NaN', '-Infinity', NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (4, true, 1, -1, 3.4e38, 1.7976931348623157e308, 123456789012345678901234567890.123456789,
   repeat('long ', 300), 'abcde', 'abc', 'n', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   '"', NULL);
INSERT INTO sync_types_other VALUES
  (1, '2024-02-29', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56+02', '{1,NULL,3}',
   '{"a": [1, 2]}', '{"b": null}', 7),
  (2, 'infinity', '-infinity', NULL, '{}', 'null', '"s"', NULL);
INSERT INTO sync_types_some VALUES (1, 2.5, 'hidden', 'shown'), (2, NULL, NULL, NULL);
INSERT INTO sync_types_dt VALUES
  (1, '2024-02-29', '2024-02-29 12:34:56.789012', '2024-02-29 12:34:56.5+05:30'),
  (2, 'infinity', '-infinity', 'infinity'),
  (3, '0044-03-15 BC', '0044-03-15 12:00 BC', '1900-01-01 00:00:00+00'),
  (4, NULL, NULL, NULL);
SELECT id, sync_get('sync_types', id::text) = row_to_json(r)::text AS same
  FROM sync_types r ORDER BY id;
SELECT sync_get('sync_types', '2');
SELECT id, sync_get('sync_types_other', id::text) = row_to_json(r)::text AS same
  FROM sync_types_other r ORDER BY id;
SELECT id, sync_get('sync_types_dt', id::text) = row_to_json(r)::text AS same
  FROM sync_types_dt r ORDER BY id;
SELECT sync_get('sync_types_dt', '1');
SELECT id, sync_get('sync_types_some', id::text) =
       (SELECT row_to_json(x)::text FROM (SELECT r.id, r.f8, r.t) x) AS same
  FROM sync_types_some r ORDER BY id;
SELECT sync_get('sync_types_some', '1');

--
-- clean up: every key under these tables' prefixes goes with purge
--
SET client_min_messages = warning;
SELECT cachesync.unregister(rel, purge => true)
  FROM cachesync.registrations WHERE rel::text LIKE 'sync\_%' ORDER BY rel::text;
RESET client_min_messages;
SELECT count(*) AS left_in_redis FROM sync_keys('public.sync_*');
DELETE FROM cachesync.queue WHERE rel IN (SELECT oid FROM pg_class WHERE relname LIKE 'sync\_%');
-- version keys and tombstones are cachesync's; remove ours to leave Redis tidy
SELECT count(*) >= 0 AS tidied FROM sync_keys('__cachesync:v:public.sync_*') k,
       LATERAL cachesync.redis_command('DEL', k);
DROP TABLE sync_wt, sync_wth, sync_ttl, sync_ttlh, sync_wa, sync_wah, sync_as, sync_ash,
    sync_comp, sync_cols, sync_colsh, sync_def, sync_tr, sync_big, sync_2pc,
    sync_priv_wt, sync_priv_as, sync_part, sync_types, sync_types_other, sync_types_some,
    sync_types_dt;
DROP DOMAIN sync_posint;
DROP ROLE regress_sync_writer;
DROP FUNCTION sync_keys(text), sync_get(regclass, text[]), sync_hget(regclass, text[]),
    sync_exists(regclass, text[]), sync_pttl(text), sync_queue(regclass);
