-- reload(): every row written, keys without a row removed, nothing flushed.
CREATE TABLE rl (id int PRIMARY KEY, v text);
INSERT INTO rl SELECT g, 'row ' || g FROM generate_series(1, 2500) g;
SET client_min_messages = warning;
SELECT cachesync.register('rl', key_prefix => 'regress_rl:');
RESET client_min_messages;
SELECT cachesync.redis_command('EXISTS', 'regress_rl:1') AS before_reload;

-- more rows than one page (cachesync.batch_size = 1000)
SELECT cachesync.reload('rl');
SELECT cachesync.redis_command('GET', 'regress_rl:1') AS first,
       cachesync.redis_command('GET', 'regress_rl:2500') AS last;

-- a row changed and one deleted behind cachesync's back, and a stray key
SET cachesync.enabled = off;
UPDATE rl SET v = 'changed' WHERE id = 7;
DELETE FROM rl WHERE id = 8;
RESET cachesync.enabled;
SELECT cachesync.redis_command('SET', 'regress_rl:99999', 'stray');
SELECT cachesync.redis_command('GET', 'regress_rl:7') AS stale_before;
SELECT cachesync.reload('rl');
SELECT cachesync.redis_command('GET', 'regress_rl:7') AS after,
       cachesync.redis_command('EXISTS', 'regress_rl:8') AS deleted_gone,
       cachesync.redis_command('EXISTS', 'regress_rl:99999') AS stray_gone;

-- reload of every registered table
SELECT cachesync.reload() >= 2499 AS reloaded_all;

-- it reads committed rows only, so not inside a writing transaction
BEGIN;
UPDATE rl SET v = 'uncommitted' WHERE id = 1;
SELECT cachesync.reload('rl');
ROLLBACK;
SELECT cachesync.reload('no_such_table');
CREATE TABLE rl_unregistered (id int PRIMARY KEY);
SELECT cachesync.reload('rl_unregistered');

SET client_min_messages = warning;
SELECT cachesync.unregister('rl', purge => true);
DROP TABLE rl, rl_unregistered;
