-- Multi-key fenced writes (cachesync_put_many, cachesync_del_many) and
-- reload's Redis-side orphan sweep (cachesync_sweep).
CREATE FUNCTION fm(VARIADIC a text[]) RETURNS text LANGUAGE sql
  AS $$ SELECT cachesync.redis_command(VARIADIC a) $$;
CREATE FUNCTION fm_pttl(k text) RETURNS bigint LANGUAGE sql
  AS $$ SELECT cachesync.redis_command('PTTL', k)::bigint $$;

-- put_many, json, no TTL: k2's stored version is newer (left alone), k3
-- carries a tombstone of a newer version (must not come back)
SELECT fm('SET', '__cachesync:v:regress_fm:k2', '500');
SELECT fm('SET', 'regress_fm:k2', 'newer');
SELECT fm('SET', '__cachesync:v:regress_fm:k3', '500', 'PX', '60000');
SELECT fm('FCALL', 'cachesync_put_many', '6',
          'regress_fm:k1', '__cachesync:v:regress_fm:k1',
          'regress_fm:k2', '__cachesync:v:regress_fm:k2',
          'regress_fm:k3', '__cachesync:v:regress_fm:k3',
          '400', '0', 'json', '{"a":1}', '{"a":2}', '{"a":3}') AS written;
SELECT fm('GET', 'regress_fm:k1') AS k1, fm('GET', '__cachesync:v:regress_fm:k1') AS k1_version,
       fm_pttl('regress_fm:k1') AS k1_pttl, fm_pttl('__cachesync:v:regress_fm:k1') AS k1_version_pttl,
       fm('GET', 'regress_fm:k2') AS k2, fm('GET', '__cachesync:v:regress_fm:k2') AS k2_version,
       fm('EXISTS', 'regress_fm:k3') AS k3_back;
-- the same version again is not newer: nothing written
SELECT fm('FCALL', 'cachesync_put_many', '2', 'regress_fm:k1', '__cachesync:v:regress_fm:k1',
          '400', '0', 'json', '{"a":9}') AS rewritten, fm('GET', 'regress_fm:k1') AS k1;

-- put_many, hash, with TTL: a field count then the fields per row; the
-- second row (version newer) is skipped without upsetting the third's fields
SELECT fm('FCALL', 'cachesync_put_many', '6',
          'regress_fm:h1', '__cachesync:v:regress_fm:h1',
          'regress_fm:k2', '__cachesync:v:regress_fm:k2',
          'regress_fm:h3', '__cachesync:v:regress_fm:h3',
          '450', '60000', 'hash', '4', 'id', '1', 'v', 'x', '2', 'id', '2', '6', 'id', '3', 'v', 'z', 'w', 'zz') AS written;
SELECT fm('HGETALL', 'regress_fm:h1') AS h1, fm('HGETALL', 'regress_fm:h3') AS h3,
       fm('GET', 'regress_fm:k2') AS k2,
       fm_pttl('regress_fm:h1') BETWEEN 1 AND 60000 AS h1_ttl,
       fm_pttl('__cachesync:v:regress_fm:h1') BETWEEN 1 AND 60000 AS h1_version_ttl;
-- a hash row replaces what was there (no leftover field)
SELECT fm('FCALL', 'cachesync_put_many', '2', 'regress_fm:h3', '__cachesync:v:regress_fm:h3',
          '460', '0', 'hash', '2', 'id', '3') AS written,
       fm('HGETALL', 'regress_fm:h3') AS h3, fm_pttl('regress_fm:h3') AS h3_pttl,
       fm_pttl('__cachesync:v:regress_fm:h3') AS h3_version_pttl;

-- del_many: older than k2's version (left), newer than k1's (deleted with a tombstone)
SELECT fm('FCALL', 'cachesync_del_many', '4',
          'regress_fm:k1', '__cachesync:v:regress_fm:k1',
          'regress_fm:k2', '__cachesync:v:regress_fm:k2', '450', '60000') AS deleted;
SELECT fm('EXISTS', 'regress_fm:k1') AS k1_exists, fm('GET', '__cachesync:v:regress_fm:k1') AS k1_tombstone,
       fm_pttl('__cachesync:v:regress_fm:k1') BETWEEN 1 AND 60000 AS tombstone_ttl,
       fm('GET', 'regress_fm:k2') AS k2;
-- the deleted key does not come back with an older version
SELECT fm('FCALL', 'cachesync_put_many', '2', 'regress_fm:k1', '__cachesync:v:regress_fm:k1',
          '449', '0', 'json', '{"a":"old"}') AS written, fm('EXISTS', 'regress_fm:k1') AS k1_back;

-- sweep: keys older than the minimum version or without one go (tombstone
-- of the minimum version); newer ones and missing keys are left
SELECT fm('SET', 'regress_fm:s1', 'no version');
SELECT fm('SET', 'regress_fm:s2', 'old'), fm('SET', '__cachesync:v:regress_fm:s2', '100');
SELECT fm('SET', 'regress_fm:s3', 'new'), fm('SET', '__cachesync:v:regress_fm:s3', '1000');
SELECT fm('SET', '__cachesync:v:regress_fm:s4', '100');
SELECT fm('FCALL', 'cachesync_sweep', '8',
          'regress_fm:s1', '__cachesync:v:regress_fm:s1', 'regress_fm:s2', '__cachesync:v:regress_fm:s2',
          'regress_fm:s3', '__cachesync:v:regress_fm:s3', 'regress_fm:s4', '__cachesync:v:regress_fm:s4',
          '1000', '60000') AS swept;
SELECT fm('EXISTS', 'regress_fm:s1') AS s1, fm('GET', '__cachesync:v:regress_fm:s1') AS s1_version,
       fm('EXISTS', 'regress_fm:s2') AS s2, fm('GET', '__cachesync:v:regress_fm:s2') AS s2_version,
       fm_pttl('__cachesync:v:regress_fm:s2') BETWEEN 1 AND 60000 AS s2_tombstone_ttl,
       fm('GET', 'regress_fm:s3') AS s3, fm('GET', '__cachesync:v:regress_fm:s4') AS s4_version;

-- a key twice in one call: the first row wins, as with single-key puts
SELECT fm('FCALL', 'cachesync_put_many', '4', 'regress_fm:d', '__cachesync:v:regress_fm:d',
          'regress_fm:d', '__cachesync:v:regress_fm:d', '10', '0', 'json', 'first', 'second') AS written,
       fm('GET', 'regress_fm:d') AS d;
-- more rows than one MGET/MSET chunk of the Lua (500): row 550 holds a
-- newer version and is left alone, the others are written
SELECT fm('SET', 'regress_fm:c550', 'newer'), fm('SET', '__cachesync:v:regress_fm:c550', '99');
SELECT cachesync.redis_command(VARIADIC ARRAY['FCALL', 'cachesync_put_many', '1200']
         || (SELECT array_agg(k ORDER BY g, o) FROM generate_series(1, 600) g,
               LATERAL (VALUES (1, 'regress_fm:c' || g), (2, '__cachesync:v:regress_fm:c' || g)) v(o, k))
         || ARRAY['50', '0', 'json']
         || (SELECT array_agg('v' || g ORDER BY g) FROM generate_series(1, 600) g)) AS written;
SELECT count(*) AS chunked_right FROM generate_series(1, 600) g
 WHERE fm('GET', 'regress_fm:c' || g) = CASE WHEN g = 550 THEN 'newer' ELSE 'v' || g END;
SELECT cachesync.redis_command(VARIADIC ARRAY['DEL', 'regress_fm:d', '__cachesync:v:regress_fm:d']
         || (SELECT array_agg(k) FROM generate_series(1, 600) g,
               LATERAL (VALUES ('regress_fm:c' || g), ('__cachesync:v:regress_fm:c' || g)) v(k))) AS tidied;

-- a version key that is not a string fails the call before anything is
-- written, as it fails cachesync_put and cachesync_del
CREATE FUNCTION fm_refused(VARIADIC a text[]) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; d text;
BEGIN
  PERFORM cachesync.redis_command(VARIADIC a);
  RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL;
  RETURN CASE WHEN coalesce(m, '') || coalesce(d, '') LIKE '%WRONGTYPE%' THEN 'refused: WRONGTYPE' ELSE 'refused' END;
END $$;
SELECT fm('HSET', '__cachesync:v:regress_fm:w2', 'not', 'a version');
SELECT fm_refused('FCALL', 'cachesync_put_many', '4', 'regress_fm:w1', '__cachesync:v:regress_fm:w1',
                  'regress_fm:w2', '__cachesync:v:regress_fm:w2', '10', '0', 'json', 'a', 'b') AS put_many,
       fm('EXISTS', 'regress_fm:w1') AS w1_written;
SELECT fm_refused('FCALL', 'cachesync_del_many', '2', 'regress_fm:w2', '__cachesync:v:regress_fm:w2',
                  '10', '1000') AS del_many,
       fm_refused('FCALL', 'cachesync_sweep', '2', 'regress_fm:w2', '__cachesync:v:regress_fm:w2',
                  '10', '1000') AS sweep,
       fm_refused('FCALL', 'cachesync_put', '2', 'regress_fm:w2', '__cachesync:v:regress_fm:w2',
                  '10', '0', 'json', 'b') AS single_put;
SELECT fm('DEL', '__cachesync:v:regress_fm:w2');
DROP FUNCTION fm_refused(text[]);

-- populators: reload of both formats, with and without TTL, more rows
-- than one multi-key call (128 rows) and than one page (batch_size 1000)
CREATE TABLE fm_j (id int PRIMARY KEY, v text);
CREATE TABLE fm_h (id int PRIMARY KEY, v text, n int);
INSERT INTO fm_j SELECT g, 'j' || g FROM generate_series(1, 1300) g;
INSERT INTO fm_h SELECT g, 'h' || g, CASE WHEN g % 2 = 0 THEN g END FROM generate_series(1, 1300) g;
SET client_min_messages = warning;
SELECT cachesync.register('fm_j', key_prefix => 'regress_fmj:');
SELECT cachesync.register('fm_h', format => 'hash', ttl => '1 hour', key_prefix => 'regress_fmh:');
RESET client_min_messages;
-- a key whose version is newer than the reload's (a later commit) is left
-- alone; a tombstoned key whose row exists stays deleted while the
-- tombstone is newer; a row's key whose version is ancient is rewritten
SELECT fm('SET', 'regress_fmj:5', 'later commit'), fm('SET', '__cachesync:v:regress_fmj:5', '9000000000000000');
SELECT fm('SET', '__cachesync:v:regress_fmj:6', '9000000000000000', 'PX', '60000');
SELECT fm('SET', 'regress_fmj:7', 'ancient'), fm('SET', '__cachesync:v:regress_fmj:7', '1');
SELECT cachesync.reload('fm_j'), cachesync.reload('fm_h');
SELECT count(*) AS json_right FROM fm_j j
 WHERE j.id NOT IN (5, 6) AND fm('GET', 'regress_fmj:' || j.id)::jsonb = row_to_json(j)::jsonb;
SELECT fm('GET', 'regress_fmj:5') AS newer_kept, fm('EXISTS', 'regress_fmj:6') AS tombstoned_back,
       fm('GET', 'regress_fmj:7')::jsonb AS rewritten,
       fm_pttl('regress_fmj:1') AS json_no_ttl, fm_pttl('__cachesync:v:regress_fmj:1') AS json_version_no_ttl;
SELECT count(*) AS hash_right FROM fm_h h
 WHERE fm('HGETALL', 'regress_fmh:' || h.id)::jsonb =
       CASE WHEN h.n IS NULL THEN jsonb_build_array('id', h.id::text, 'v', h.v)
            ELSE jsonb_build_array('id', h.id::text, 'v', h.v, 'n', h.n::text) END;
SELECT fm_pttl('regress_fmh:1300') BETWEEN 1 AND 3600000 AS hash_ttl,
       fm_pttl('__cachesync:v:regress_fmh:1300') BETWEEN 1 AND 3600000 AS hash_version_ttl;

-- reload's orphan sweep: a deleted row's key (old version), a stray without
-- a version, a key without a row but a newer version than the reload's
-- (a concurrent write: kept), the table's streams (kept), and a write-back
-- style value (no version) with its guard key (the value goes, as a key
-- without a row always did; the guard is not under the prefix)
SET cachesync.enabled = off;
DELETE FROM fm_j WHERE id = 10;
DELETE FROM fm_h WHERE id = 10;
RESET cachesync.enabled;
SELECT fm('SET', 'regress_fmj:stray', 'x');
SELECT fm('SET', 'regress_fmj:99999', 'concurrent'), fm('SET', '__cachesync:v:regress_fmj:99999', '9000000000000000');
SELECT fm('XADD', 'regress_fmj:__changes', '*', 'op', 'upsert') IS NOT NULL AS stream,
       fm('XADD', 'regress_fmj:__writeback', '*', 'op', 'upsert') IS NOT NULL AS wb_stream;
SELECT fm('SET', 'regress_fmj:88888', '{"id":88888}'), fm('SET', '__cachesync:wbid:regress_fmj:88888', '1-1');
SELECT cachesync.reload('fm_j'), cachesync.reload('fm_h');
SELECT fm('EXISTS', 'regress_fmj:10') AS deleted_j, fm('EXISTS', 'regress_fmh:10') AS deleted_h,
       fm('EXISTS', 'regress_fmj:stray') AS stray,
       fm('GET', 'regress_fmj:99999') AS newer_kept,
       fm('TYPE', 'regress_fmj:__changes') AS changes, fm('TYPE', 'regress_fmj:__writeback') AS writeback,
       fm('EXISTS', 'regress_fmj:88888') AS wb_value, fm('GET', '__cachesync:wbid:regress_fmj:88888') AS wb_guard;
-- the swept key's tombstone stops an older populator's value
SELECT fm('FCALL', 'cachesync_put_many', '2', 'regress_fmj:10', '__cachesync:v:regress_fmj:10',
          '2', '0', 'json', '{"id":10}') AS resurrected;
SELECT cachesync.reload('fm_j') AS rows_after, fm('EXISTS', 'regress_fmj:1') AS first_kept;

-- settle_many (write-back): per key a guard (entry id) and 'p' + value or
-- 'd'.  w1: guard holds its entry: written, guard removed; w2: guard names
-- a newer entry: left alone, guard kept; w3: no guard: written; w4: delete
-- with a tombstone; w5: guard holds its entry but the stored version is
-- newer: not written, guard removed
SELECT fm('SET', '__cachesync:wbid:regress_fm:w1', '1-1'), fm('SET', '__cachesync:wbid:regress_fm:w2', '9-9'),
       fm('SET', 'regress_fm:w2', 'app'), fm('SET', 'regress_fm:w4', 'old'),
       fm('SET', '__cachesync:wbid:regress_fm:w5', '1-5'), fm('SET', '__cachesync:v:regress_fm:w5', '900'),
       fm('SET', 'regress_fm:w5', 'newer');
SELECT fm('FCALL', 'cachesync_settle_many', '15',
          'regress_fm:w1', '__cachesync:v:regress_fm:w1', '__cachesync:wbid:regress_fm:w1',
          'regress_fm:w2', '__cachesync:v:regress_fm:w2', '__cachesync:wbid:regress_fm:w2',
          'regress_fm:w3', '__cachesync:v:regress_fm:w3', '__cachesync:wbid:regress_fm:w3',
          'regress_fm:w4', '__cachesync:v:regress_fm:w4', '__cachesync:wbid:regress_fm:w4',
          'regress_fm:w5', '__cachesync:v:regress_fm:w5', '__cachesync:wbid:regress_fm:w5',
          '500', '0', '60000', 'json',
          '1-1', 'p', '{"w":1}', '1-2', 'p', '{"w":2}', '1-3', 'p', '{"w":3}', '1-4', 'd', '1-5', 'p', '{"w":5}') AS written;
SELECT fm('GET', 'regress_fm:w1') AS w1, fm('EXISTS', '__cachesync:wbid:regress_fm:w1') AS w1_guard,
       fm('GET', 'regress_fm:w2') AS w2, fm('GET', '__cachesync:wbid:regress_fm:w2') AS w2_guard,
       fm('GET', 'regress_fm:w3') AS w3, fm('GET', '__cachesync:v:regress_fm:w3') AS w3_version,
       fm('EXISTS', 'regress_fm:w4') AS w4, fm_pttl('__cachesync:v:regress_fm:w4') BETWEEN 1 AND 60000 AS w4_tombstone,
       fm('GET', 'regress_fm:w5') AS w5, fm('EXISTS', '__cachesync:wbid:regress_fm:w5') AS w5_guard;
-- hash values with a TTL: a field count then the fields, as put_many
SELECT fm('FCALL', 'cachesync_settle_many', '6',
          'regress_fm:w6', '__cachesync:v:regress_fm:w6', '__cachesync:wbid:regress_fm:w6',
          'regress_fm:w7', '__cachesync:v:regress_fm:w7', '__cachesync:wbid:regress_fm:w7',
          '600', '60000', '60000', 'hash', '2-6', 'p', '4', 'id', '6', 'v', 'x', '2-7', 'p', '2', 'id', '7') AS written;
SELECT fm('HGETALL', 'regress_fm:w6') AS w6, fm('HGETALL', 'regress_fm:w7') AS w7,
       fm_pttl('regress_fm:w6') BETWEEN 1 AND 60000 AS w6_ttl,
       fm_pttl('__cachesync:v:regress_fm:w7') BETWEEN 1 AND 60000 AS w7_version_ttl;
-- a guard key of another type fails the call before anything is written
SELECT fm('HSET', '__cachesync:wbid:regress_fm:w8', 'f', '1');
SELECT fm('FCALL', 'cachesync_settle_many', '6',
          'regress_fm:w9', '__cachesync:v:regress_fm:w9', '__cachesync:wbid:regress_fm:w9',
          'regress_fm:w8', '__cachesync:v:regress_fm:w8', '__cachesync:wbid:regress_fm:w8',
          '700', '0', '60000', 'json', '3-9', 'p', '{"w":9}', '3-8', 'p', '{"w":8}');
SELECT fm('EXISTS', 'regress_fm:w9') AS w9_written;
SELECT fm('DEL', 'regress_fm:w1', 'regress_fm:w2', 'regress_fm:w3', 'regress_fm:w4', 'regress_fm:w5',
          'regress_fm:w6', 'regress_fm:w7', 'regress_fm:w9',
          '__cachesync:v:regress_fm:w1', '__cachesync:v:regress_fm:w2', '__cachesync:v:regress_fm:w3',
          '__cachesync:v:regress_fm:w4', '__cachesync:v:regress_fm:w5', '__cachesync:v:regress_fm:w6',
          '__cachesync:v:regress_fm:w7', '__cachesync:wbid:regress_fm:w2', '__cachesync:wbid:regress_fm:w8') >= '0' AS tidied;

SET client_min_messages = warning;
SELECT cachesync.unregister('fm_j', purge => true), cachesync.unregister('fm_h', purge => true);
RESET client_min_messages;
SELECT fm('DEL', 'regress_fm:k1', 'regress_fm:k2', 'regress_fm:k3', 'regress_fm:h1', 'regress_fm:h3',
          'regress_fm:s1', 'regress_fm:s2', 'regress_fm:s3', 'regress_fm:99999',
          '__cachesync:v:regress_fm:k1', '__cachesync:v:regress_fm:k2', '__cachesync:v:regress_fm:k3',
          '__cachesync:v:regress_fm:h1', '__cachesync:v:regress_fm:h3', '__cachesync:v:regress_fm:s1',
          '__cachesync:v:regress_fm:s2', '__cachesync:v:regress_fm:s3', '__cachesync:v:regress_fm:s4',
          '__cachesync:v:regress_fmj:99999', '__cachesync:v:regress_fmj:5', '__cachesync:v:regress_fmj:6',
          '__cachesync:wbid:regress_fmj:88888') >= '0' AS tidied;
DROP TABLE fm_j, fm_h;
DROP FUNCTION fm(text[]), fm_pttl(text);
