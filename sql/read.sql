-- Read-through: cachesync.get() and cachesync.get_many().
--
-- A hit comes from Redis, a miss from the table (and is then stored with
-- the table's format and TTL); both return the same jsonb.  Privileges are
-- the table's, checked before Redis is asked.

CREATE FUNCTION rd_redis(VARIADIC args text[]) RETURNS text LANGUAGE sql AS
$$ SELECT cachesync.redis_command(VARIADIC args) $$;
CREATE FUNCTION rd_stats(rel regclass, OUT hits bigint, OUT misses bigint) LANGUAGE sql AS
$$ SELECT hits, misses FROM cachesync.stats WHERE rel = $1 $$;

CREATE TABLE rd_json (id int PRIMARY KEY, name text, price numeric, tags text[], secret text);
CREATE TABLE rd_hash (id int PRIMARY KEY, name text, n int);
CREATE TABLE rd_comp (a text, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE rd_wa (id int PRIMARY KEY, v text);
CREATE TABLE rd_ttl (id int PRIMARY KEY, v text);
CREATE TABLE rd_wb (id int PRIMARY KEY, v text);
INSERT INTO rd_json VALUES (1, 'one', 1.50, '{a,b}', 's1'), (2, 'two', NULL, NULL, 's2');
INSERT INTO rd_hash VALUES (1, 'one', 10), (2, NULL, 20);
INSERT INTO rd_comp VALUES ('x:y', 1, 'colon'), ('p\q', 2, 'backslash');
INSERT INTO rd_wa VALUES (1, 'around');
INSERT INTO rd_ttl VALUES (1, 'expires');
INSERT INTO rd_wb VALUES (1, 'back');
SET client_min_messages = warning;
SELECT cachesync.register('rd_json', columns => ARRAY['id', 'name', 'price', 'tags']);
SELECT cachesync.register('rd_hash', format => 'hash');
SELECT cachesync.register('rd_comp');
SELECT cachesync.register('rd_wa', mode => 'write_around');
SELECT cachesync.register('rd_ttl', ttl => '1 hour');
SELECT cachesync.register('rd_wb', mode => 'write_back');
RESET client_min_messages;

-- a miss loads the row, stores it, and a hit returns the same jsonb
SELECT rd_redis('EXISTS', cachesync.key('rd_json', '1')) AS cached_before;
SELECT cachesync.get('rd_json', '1') AS miss;
SELECT rd_redis('GET', cachesync.key('rd_json', '1')) AS stored;
SELECT cachesync.get('rd_json', '1') AS hit;
SELECT * FROM rd_stats('rd_json');
-- the uncached column never shows, hit or miss
SELECT cachesync.get('rd_json', '2') ? 'secret' AS miss_has_secret,
       cachesync.get('rd_json', '2') ? 'secret' AS hit_has_secret;
-- a hit is what Redis holds, even when the table was changed behind its back
SET cachesync.enabled = off;
UPDATE rd_json SET name = 'changed behind' WHERE id = 1;
RESET cachesync.enabled;
SELECT cachesync.get('rd_json', '1')->>'name' AS from_redis;
-- key values are normalized as the key column's type writes them
SELECT cachesync.get('rd_json', '01')->>'id' AS normalized;

-- absent rows: NULL, nothing stored
SELECT cachesync.get('rd_json', '999') IS NULL AS absent;
SELECT rd_redis('EXISTS', cachesync.key('rd_json', '999')) AS absent_stored;

-- hash tables: an object of the hash fields (text values, NULL columns absent)
SELECT cachesync.get('rd_hash', '2') AS hash_miss;
SELECT cachesync.get('rd_hash', '2') AS hash_hit;
SELECT rd_redis('HGETALL', cachesync.key('rd_hash', '2')) AS hash_stored;
SELECT cachesync.get('rd_hash', '1') = cachesync.get('rd_hash', '1') AS hash_same;

-- composite keys, with ':' and '\' in key values
SELECT cachesync.get('rd_comp', 'x:y', '1') AS comp_miss;
SELECT cachesync.get('rd_comp', 'x:y', '1') AS comp_hit;
SELECT cachesync.get('rd_comp', 'p\q', '2')->>'v' AS comp_backslash;
SELECT rd_redis('EXISTS', cachesync.key('rd_comp', 'p\q', '2')) AS comp_stored;

-- write_around tables fill here
SELECT cachesync.get('rd_wa', '1') AS wa_miss;
SELECT rd_redis('GET', cachesync.key('rd_wa', '1')) AS wa_stored;
UPDATE rd_wa SET v = 'updated' WHERE id = 1;
SELECT rd_redis('EXISTS', cachesync.key('rd_wa', '1')) AS wa_invalidated;
SELECT cachesync.get('rd_wa', '1') AS wa_refilled;

-- the table's TTL applies to what a miss stores
SELECT cachesync.get('rd_ttl', '1') AS ttl_miss;
SELECT rd_redis('PTTL', cachesync.key('rd_ttl', '1'))::bigint BETWEEN 3500000 AND 3600000 AS ttl_set;

-- write_back: a miss is answered from the table but not stored
SELECT cachesync.get('rd_wb', '1') AS wb_miss;
SELECT rd_redis('EXISTS', cachesync.key('rd_wb', '1')) AS wb_stored;

-- a transaction that wrote data reads its own rows and leaves Redis alone
BEGIN;
UPDATE rd_wa SET v = 'mine' WHERE id = 1;
SELECT cachesync.get('rd_wa', '1') AS own_write;
ROLLBACK;
SELECT cachesync.get('rd_wa', '1') AS after_rollback;

-- get_many: hits and misses in one call, order kept, duplicates once, NULL for absent
SELECT rd_redis('DEL', cachesync.key('rd_json', '2')) AS dropped;
SELECT * FROM cachesync.get_many('rd_json', ARRAY['2', '1', '999', '02']);
SELECT rd_redis('EXISTS', cachesync.key('rd_json', '2')) AS many_stored;
SELECT * FROM cachesync.get_many('rd_hash', ARRAY['1', '2']);
SELECT count(*) FROM cachesync.get_many('rd_json', ARRAY[]::text[]);

-- stats: hits, misses and their ratio
SELECT hits > 0 AND misses > 0 AS counted, hit_ratio BETWEEN 0 AND 1 AS ratio
  FROM cachesync.stats WHERE rel = 'rd_json'::regclass;

-- bad input
SELECT cachesync.get('rd_json');
SELECT cachesync.get('rd_json', '1', '2');
SELECT cachesync.get('rd_comp', 'x:y');
SELECT cachesync.get('rd_json', NULL);
SELECT cachesync.get('rd_json', VARIADIC NULL::text[]);
SELECT cachesync.get('rd_json', 'not a number');
SELECT cachesync.get('pg_class', '1');
SELECT * FROM cachesync.get_many('rd_comp', ARRAY['x:y']);
SELECT * FROM cachesync.get_many('rd_json', ARRAY['1', NULL]);
SELECT * FROM cachesync.get_many('rd_json', NULL);

-- privileges: the table's, checked before Redis is asked
CREATE ROLE rd_reader;
CREATE ROLE rd_columns;
CREATE ROLE rd_partial;
GRANT SELECT ON rd_json TO rd_reader;
GRANT SELECT (id, name, price, tags) ON rd_json TO rd_columns;
GRANT SELECT (id, name) ON rd_json TO rd_partial;
SET ROLE rd_reader;
SELECT cachesync.get('rd_json', '1')->>'id' AS table_grant;
SELECT cachesync.get('rd_hash', '1');
SELECT * FROM cachesync.get_many('rd_hash', ARRAY['1']);
RESET ROLE;
SET ROLE rd_columns;
SELECT cachesync.get('rd_json', '1')->>'id' AS column_grant;
RESET ROLE;
SET ROLE rd_partial;
SELECT cachesync.get('rd_json', '1');
SELECT * FROM cachesync.get_many('rd_json', ARRAY['1']);
-- admin functions stay closed
SELECT cachesync.prefill('rd_json', 10);
SELECT * FROM cachesync.hot_keys;
RESET ROLE;

-- row-level security cannot be applied by a shared cache: refused
ALTER TABLE rd_json ENABLE ROW LEVEL SECURITY;
SET ROLE rd_reader;
SELECT cachesync.get('rd_json', '1');
RESET ROLE;
ALTER TABLE rd_json DISABLE ROW LEVEL SECURITY;

-- hot keys: reads are counted per key; prefill(rel, top_n) warms the hottest
SELECT cachesync.get('rd_hash', '2') FROM generate_series(1, 5);
SELECT key, hits FROM cachesync.hot_keys WHERE rel = 'rd_hash'::regclass ORDER BY hits DESC, key;
SELECT rd_redis('DEL', cachesync.key('rd_hash', '1'), cachesync.key('rd_hash', '2')) AS flushed;
SELECT cachesync.prefill('rd_hash', 1) AS warmed;
SELECT rd_redis('EXISTS', cachesync.key('rd_hash', '2')) AS hottest_back,
       rd_redis('EXISTS', cachesync.key('rd_hash', '1')) AS colder_not;
SELECT cachesync.prefill('rd_hash', 10) AS warmed_all;
SELECT cachesync.prefill('rd_hash', -1);

SET client_min_messages = warning;
SELECT cachesync.unregister('rd_json', purge => true);
SELECT cachesync.unregister('rd_hash', purge => true);
SELECT cachesync.unregister('rd_comp', purge => true);
SELECT cachesync.unregister('rd_wa', purge => true);
SELECT cachesync.unregister('rd_ttl', purge => true);
SELECT cachesync.unregister('rd_wb', purge => true);
RESET client_min_messages;
-- unregistering frees the table's counters
SELECT count(*) AS counters_left FROM cachesync._hot_keys() WHERE relid = 'rd_hash'::regclass;
DROP TABLE rd_json, rd_hash, rd_comp, rd_wa, rd_ttl, rd_wb;
DROP ROLE rd_reader, rd_columns, rd_partial;

-- a column named r: the populators' queries read the whole row, not the
-- column (this used to crash the backend)
CREATE TABLE rd_colr (id int PRIMARY KEY, r int);
SELECT cachesync.register('rd_colr', mode => 'write_around');
INSERT INTO rd_colr VALUES (1, 7), (2, NULL);
SELECT cachesync.get('rd_colr', '1') AS miss, cachesync.get('rd_colr', '1') AS hit,
       cachesync.get('rd_colr', '2') AS null_r;
SELECT cachesync.reload('rd_colr') AS reloaded;
SELECT rd_redis('GET', 'public.rd_colr:2') AS after_reload;
SET client_min_messages = warning;
SELECT cachesync.unregister('rd_colr', purge => true);
RESET client_min_messages;
DROP TABLE rd_colr;
