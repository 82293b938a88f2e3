-- Odd inputs: very large rows, odd key values, NULLs, registrations that a
-- schema change put out of date, and bad arguments to prefill().
-- (Redis being unreachable is covered by the TAP tests.)

CREATE FUNCTION err_keys(pattern text) RETURNS SETOF text LANGUAGE sql AS
$$ SELECT k FROM json_array_elements_text(cachesync.redis_command('KEYS', pattern)::json) k ORDER BY k COLLATE "C" $$;
CREATE FUNCTION err_get(rel regclass, VARIADIC kv text[]) RETURNS text LANGUAGE sql AS
$$ SELECT cachesync.redis_command('GET', cachesync.key(rel, VARIADIC kv)) $$;
CREATE FUNCTION err_hget(rel regclass, VARIADIC kv text[]) RETURNS jsonb LANGUAGE sql AS
$$ SELECT jsonb_object(ARRAY(SELECT json_array_elements_text(
       cachesync.redis_command('HGETALL', cachesync.key(rel, VARIADIC kv))::json))) $$;

CREATE TABLE err_big (id int PRIMARY KEY, body text);
CREATE TABLE err_bigh (id int PRIMARY KEY, body text);
CREATE TABLE err_txt (k text PRIMARY KEY, v text);
CREATE TABLE err_txth (k text PRIMARY KEY, v text);
CREATE TABLE err_null (id int PRIMARY KEY, a text, b int, c jsonb, d int[]);
CREATE TABLE err_nullh (id int PRIMARY KEY, a text, b int, c jsonb, d int[]);
CREATE TABLE err_glob1 (id int PRIMARY KEY);
CREATE TABLE err_glob2 (id int PRIMARY KEY);
CREATE TABLE err_drop (id int PRIMARY KEY, keep text, gone text, extra text);
CREATE TABLE err_all (id int PRIMARY KEY, a text, b text);
CREATE TABLE err_pf (id int PRIMARY KEY, v text);
CREATE TABLE err_pfc (a text, b int, v text, PRIMARY KEY (a, b));
CREATE TABLE err_unreg (id int PRIMARY KEY);
SET client_min_messages = warning;
SELECT cachesync.register('err_big');
SELECT cachesync.register('err_bigh', format => 'hash');
SELECT cachesync.register('err_txt');
SELECT cachesync.register('err_txth', format => 'hash');
SELECT cachesync.register('err_null');
SELECT cachesync.register('err_nullh', format => 'hash');
-- key prefixes with glob characters
-- (unescaped, the first prefix as a SCAN pattern would match the second)
SELECT cachesync.register('err_glob1', key_prefix => 'err*g?[1]\x:');
SELECT cachesync.register('err_glob2', key_prefix => 'errXgY1x:');
SELECT cachesync.register('err_drop', columns => ARRAY['keep', 'gone']);
SELECT cachesync.register('err_all');
SELECT cachesync.register('err_pf');
SELECT cachesync.register('err_pfc');
RESET client_min_messages;

--
-- very large rows round-trip
--
INSERT INTO err_big SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, 32768) g;
INSERT INTO err_bigh SELECT id, body FROM err_big;
-- quotes, backslashes, control characters and Unicode, escaped by row_to_json
INSERT INTO err_big SELECT 2, repeat(e'"quoted" back\\slash\ttab\nnewline grüße 🐘 ', 25000);
INSERT INTO err_bigh SELECT id, body FROM err_big WHERE id = 2;
SELECT id, length(body), octet_length(body) >= 1048576 AS one_mib FROM err_big ORDER BY id;
SELECT id, length(err_get('err_big', id::text)) AS json_length,
       err_get('err_big', id::text) = row_to_json(t)::text AS json_same
  FROM err_big t ORDER BY id;
SELECT id, cachesync.redis_command('HGET', cachesync.key('err_bigh', id::text), 'body') = body AS hash_same
  FROM err_bigh ORDER BY id;
-- and through the populate path
SELECT cachesync.redis_command('DEL', cachesync.key('err_big', '1'), cachesync.key('err_big', '2'),
                               cachesync.key('err_bigh', '1'), cachesync.key('err_bigh', '2'));
SELECT cachesync.prefill('err_big', ARRAY['1', '2']), cachesync.prefill('err_bigh', ARRAY['1', '2']);
SELECT id, err_get('err_big', id::text) = row_to_json(t)::text AS json_same FROM err_big t ORDER BY id;
SELECT id, cachesync.redis_command('HGET', cachesync.key('err_bigh', id::text), 'body') = body AS hash_same
  FROM err_bigh ORDER BY id;
-- an update of a large row
UPDATE err_big SET body = body || 'tail' WHERE id = 1;
SELECT right(err_get('err_big', '1'), 10);

--
-- odd text key values: ':', '\', Unicode, empty, glob characters, newlines
--
INSERT INTO err_txt VALUES ('grüße 東京 🐘', 'unicode'), ('a:b', 'colon'), ('c\d', 'backslash'),
    (':', 'lone colon'), ('\', 'lone backslash'), ('\:', 'both'), ('', 'empty'),
    ('trailing\', 'trailing backslash'), (' spaced ', 'spaces'), (e'new\nline', 'newline'),
    ('*?[x]', 'glob'), (repeat('é', 1000), 'long');
INSERT INTO err_txth SELECT * FROM err_txt;
SELECT left(k, 40) AS key FROM err_keys('public.err_txt:*') k;
-- each key names its row, and holds it
SELECT left(k, 20) AS k, err_get('err_txt', k) = row_to_json(t)::text AS json_same,
       err_hget('err_txth', k) = jsonb_build_object('k', k, 'v', v) AS hash_same
  FROM err_txt t ORDER BY k COLLATE "C";
-- keys of distinct values never collide
SELECT count(*) AS rows, (SELECT count(*) FROM err_keys('public.err_txt:*')) AS keys FROM err_txt;
-- key changes between odd values
UPDATE err_txt SET k = 'a:b:c' WHERE k = 'a:b';
UPDATE err_txt SET k = 'a\b' WHERE k = '\';
UPDATE err_txt SET k = '::' WHERE k = '';
SELECT left(k, 40) AS key FROM err_keys('public.err_txt:*') k;
SELECT err_get('err_txt', 'a:b:c') AS abc, err_get('err_txt', 'a\b') AS ab, err_get('err_txt', '::') AS colons;
-- prefill takes the key values of a single-column key
SELECT count(*) FROM err_keys('public.err_txt:*') k, LATERAL cachesync.redis_command('DEL', k);
SELECT cachesync.prefill('err_txt', ARRAY(SELECT k FROM err_txt));
SELECT count(*) FILTER (WHERE err_get('err_txt', k) = row_to_json(t)::text) AS same, count(*) AS rows
  FROM err_txt t;
SELECT count(*) AS keys FROM err_keys('public.err_txt:*');
DELETE FROM err_txt;
DELETE FROM err_txth;
SELECT count(*) AS keys FROM err_keys('public.err_tx*');

--
-- NULL columns: null in json, no field in a hash
--
INSERT INTO err_null VALUES (1, NULL, NULL, NULL, NULL), (2, '', 0, 'null', '{NULL,1}');
INSERT INTO err_nullh SELECT * FROM err_null;
SELECT err_get('err_null', '1') AS k1, err_get('err_null', '2') AS k2;
SELECT err_hget('err_nullh', '1') AS k1, err_hget('err_nullh', '2') AS k2;
-- every column NULL but the key
UPDATE err_nullh SET a = NULL, b = NULL, c = NULL, d = NULL WHERE id = 2;
SELECT err_hget('err_nullh', '2') AS k2;

--
-- glob characters in a key prefix: purge removes only that table's keys
--
INSERT INTO err_glob1 VALUES (1), (2);
INSERT INTO err_glob2 VALUES (1), (2);
SELECT k FROM err_keys('err*') k;
SELECT cachesync.unregister('err_glob1', purge => true);
SELECT k FROM err_keys('err*') k;
SELECT cachesync.unregister('err_glob2', purge => true);

--
-- a schema change that puts the registration out of date
--
INSERT INTO err_drop VALUES (1, 'k1', 'g1', 'e1');
SELECT err_get('err_drop', '1');
-- dropping a cached column is refused...
ALTER TABLE err_drop DROP COLUMN gone;
-- ...so put the registration out of date behind cachesync's back
UPDATE cachesync.registrations SET columns = ARRAY['id', 'keep', 'gone_by_hand']
 WHERE rel = 'err_drop'::regclass;
\c
ALTER TABLE err_drop DROP COLUMN gone;
-- the next write fails with a clear error, whatever it is
INSERT INTO err_drop VALUES (2, 'k2', 'e2');
UPDATE err_drop SET keep = 'k1 changed' WHERE id = 1;
DELETE FROM err_drop WHERE id = 1;
SELECT cachesync.prefill('err_drop', ARRAY['1']);
SELECT * FROM err_drop;
SELECT err_get('err_drop', '1');
-- registering again fixes it
SELECT cachesync.register('err_drop', columns => ARRAY['keep']);
INSERT INTO err_drop VALUES (2, 'k2', 'e2');
UPDATE err_drop SET keep = 'k1 changed' WHERE id = 1;
SELECT err_get('err_drop', '1') AS k1, err_get('err_drop', '2') AS k2;
-- a renamed cached column, and a renamed key column
ALTER TABLE err_drop RENAME COLUMN keep TO kept;
UPDATE err_drop SET kept = 'k2 changed' WHERE id = 2;
SELECT cachesync.register('err_drop', columns => ARRAY['kept']);
UPDATE err_drop SET kept = 'k2 changed' WHERE id = 2;
SELECT err_get('err_drop', '2');
ALTER TABLE err_drop RENAME COLUMN id TO ident;
DELETE FROM err_drop WHERE ident = 1;
SELECT cachesync.register('err_drop', columns => ARRAY['kept']);
DELETE FROM err_drop WHERE ident = 1;
UPDATE err_drop SET kept = 'renamed key' WHERE ident = 2;
SELECT k FROM err_keys('public.err_drop:*') k;
SELECT err_get('err_drop', '2');
-- a table caching every column follows its columns without re-registering
INSERT INTO err_all VALUES (1, 'a1', 'b1');
ALTER TABLE err_all DROP COLUMN b;
INSERT INTO err_all VALUES (2, 'a2');
SELECT err_get('err_all', '1') AS k1, err_get('err_all', '2') AS k2;
ALTER TABLE err_all ADD COLUMN c int DEFAULT 7;
UPDATE err_all SET a = 'a1 changed' WHERE id = 1;
SELECT err_get('err_all', '1');

--
-- prefill: bad arguments
--
INSERT INTO err_pf VALUES (1, 'one'), (42, 'forty-two');
INSERT INTO err_pfc VALUES ('x:y', 1, 'composite');
SELECT cachesync.redis_command('DEL', cachesync.key('err_pf', '1'), cachesync.key('err_pf', '42'),
                               cachesync.key('err_pfc', 'x:y', '1'));
SELECT cachesync.prefill('err_pf', ARRAY['1', NULL]);
SELECT cachesync.prefill('err_pf', ARRAY['one']);
SELECT cachesync.prefill('err_pf', ARRAY['99999999999']);
SELECT cachesync.prefill('err_pf', ARRAY[cachesync.key('err_pf', '1')]);
SELECT cachesync.prefill('err_unreg', ARRAY['1']);
SELECT cachesync.prefill('pg_class', ARRAY['1']);
SELECT cachesync.prefill('err_pfc', ARRAY['x:y']);
SELECT cachesync.prefill('err_pfc', ARRAY['x', '1']);
SELECT cachesync.prefill('err_pfc', ARRAY[cachesync.key('err_pf', '1')]);
SELECT cachesync.prefill('err_pfc', ARRAY['public.err_pfc:x\:y:1:extra']);
SELECT cachesync.prefill('err_pfc', ARRAY['public.err_pfc:x\:y:one']);
SELECT cachesync.prefill('err_pfc', ARRAY[cachesync.key('err_pfc', 'x:y', '1'), NULL]);
-- NULL arguments (the function is strict), nothing to do
SELECT cachesync.prefill('err_pf', NULL::text[]) IS NULL AS null_keys;
SELECT cachesync.prefill(NULL, ARRAY['1']) IS NULL AS null_rel;
SELECT cachesync.prefill('err_pf', ARRAY[]::text[]) AS empty;
-- nothing was written by the calls that failed
SELECT k FROM err_keys('public.err_pf*') k;
-- key values are normalised through the key's type
SELECT cachesync.prefill('err_pf', ARRAY['042', ' 1']);
SELECT k FROM err_keys('public.err_pf*') k;
SELECT cachesync.prefill('err_pfc', ARRAY[cachesync.key('err_pfc', 'x:y', '1')]);
SELECT err_get('err_pfc', 'x:y', '1');
-- a key whose row does not exist: nothing loaded, a stale value removed
SELECT cachesync.redis_command('SET', cachesync.key('err_pf', '7'), 'stale');
SELECT cachesync.prefill('err_pf', ARRAY['7']);
SELECT cachesync.redis_command('EXISTS', cachesync.key('err_pf', '7'));
-- prefill is an admin function, and never a way around table privileges
CREATE ROLE regress_err_user;
SET ROLE regress_err_user;
SELECT cachesync.prefill('err_pf', ARRAY['1']);
RESET ROLE;
GRANT EXECUTE ON FUNCTION cachesync.prefill(regclass, text[]) TO regress_err_user;
SET ROLE regress_err_user;
SELECT cachesync.prefill('err_pf', ARRAY['1']);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION cachesync.prefill(regclass, text[]) FROM regress_err_user;
DROP ROLE regress_err_user;

--
-- clean up
--
SET client_min_messages = warning;
SELECT cachesync.unregister(rel, purge => true)
  FROM cachesync.registrations WHERE rel::text LIKE 'err\_%' ORDER BY rel::text;
RESET client_min_messages;
SELECT count(*) AS left_in_redis FROM err_keys('public.err_*');
SELECT count(*) >= 0 AS tidied FROM err_keys('__cachesync:v:*err*') k,
       LATERAL cachesync.redis_command('DEL', k);
DROP TABLE err_big, err_bigh, err_txt, err_txth, err_null, err_nullh, err_glob1, err_glob2,
    err_drop, err_all, err_pf, err_pfc, err_unreg;
DROP FUNCTION err_keys(text), err_get(regclass, text[]), err_hget(regclass, text[]);

-- a transaction whose values pass 64 MB goes to the queue instead of one huge push
CREATE TABLE err_huge (id int PRIMARY KEY, v text);
SET client_min_messages = warning;
SELECT cachesync.register('err_huge', key_prefix => 'regress_huge:');
RESET client_min_messages;
INSERT INTO err_huge SELECT g, repeat('x', 1100000) FROM generate_series(1, 62) g;
SELECT count(*) AS queued FROM cachesync.queue WHERE rel = 'err_huge'::regclass;
SELECT cachesync.redis_command('EXISTS', 'regress_huge:1') AS pushed;
DELETE FROM cachesync.queue WHERE rel = 'err_huge'::regclass;
SET client_min_messages = warning;
SELECT cachesync.unregister('err_huge', purge => true);
RESET client_min_messages;
DROP TABLE err_huge;

-- a row whose key value names one of the table's streams is never cached:
-- writing or deleting that key would destroy the stream
CREATE TABLE err_streams (k text PRIMARY KEY, v int);
SET client_min_messages = warning;
SELECT cachesync.register('err_streams', key_prefix => 'regress_streams:', changes => true);
RESET client_min_messages;
SELECT cachesync.redis_command('XADD', 'regress_streams:__changes', '*', 'op', 'test') IS NOT NULL AS stream_made;
INSERT INTO err_streams VALUES ('__changes', 1), ('plain', 2);
UPDATE err_streams SET v = 3 WHERE k = '__changes';
SELECT cachesync.redis_command('TYPE', 'regress_streams:__changes') AS still_a_stream,
       cachesync.redis_command('EXISTS', 'regress_streams:plain') AS plain_cached;
SELECT cachesync.get('err_streams', '__changes') AS read_from_the_table;
SELECT cachesync.redis_command('TYPE', 'regress_streams:__changes') AS still_a_stream_after_get;
DELETE FROM err_streams WHERE k = '__changes';
SELECT cachesync.redis_command('TYPE', 'regress_streams:__changes') AS still_a_stream_after_delete;
DELETE FROM cachesync.changes_outbox WHERE rel = 'err_streams'::regclass;
SET client_min_messages = warning;
SELECT cachesync.unregister('err_streams', purge => true);
RESET client_min_messages;
SELECT cachesync.redis_command('DEL', 'regress_streams:__changes') AS cleaned;
DROP TABLE err_streams;
