-- Write-back: argument errors of the dead-letter functions, privileges,
-- and the write-back Redis functions' own checks.  (The worker itself is
-- covered by the TAP tests 020-029.)

CREATE TABLE wb_items (id int PRIMARY KEY, name text);
CREATE TABLE wb_through (id int PRIMARY KEY, name text);
CREATE TABLE wb_unreg (id int PRIMARY KEY);
SET client_min_messages = warning;
SELECT cachesync.register('wb_items', mode => 'write_back');
SELECT cachesync.register('wb_through');
RESET client_min_messages;

SELECT writeback_stream, writeback_dlq FROM cachesync.tables WHERE rel = 'wb_items'::regclass;
SELECT writeback_stream, writeback_dlq FROM cachesync.tables WHERE rel = 'wb_through'::regclass;

-- dead letters exist only for write_back tables
SELECT * FROM cachesync.dead_letters('wb_through');
SELECT cachesync.replay_dead_letters('wb_through');
SELECT * FROM cachesync.dead_letters('wb_unreg');
SELECT * FROM cachesync.dead_letters('wb_items', 0);
SELECT cachesync.replay_dead_letters('wb_items', ARRAY[NULL]::text[]);
SELECT * FROM cachesync.dead_letters(NULL);

-- an empty dead-letter stream
SELECT * FROM cachesync.dead_letters('wb_items');
SELECT cachesync.replay_dead_letters('wb_items');
SELECT cachesync.replay_dead_letters('wb_items', ARRAY['1-1']);

-- a dead letter is listed and replayed (no worker here: it stays in the stream)
SELECT cachesync.redis_command('DEL', 'public.wb_items:__writeback', 'public.wb_items:__writeback:dlq') IS NOT NULL;
SELECT cachesync.redis_command('XADD', 'public.wb_items:__writeback:dlq', '5-1', 'op', 'upsert',
       'data', '{"id":1,"nope":2}', 'key', 'public.wb_items:1', 'error', 'column "nope" does not exist',
       'sqlstate', '42703', 'id', '5-1');
SELECT * FROM cachesync.dead_letters('wb_items');
SELECT cachesync.replay_dead_letters('wb_items', ARRAY['5-1', '9-9']);
SELECT * FROM cachesync.dead_letters('wb_items');
SELECT cachesync.redis_command('XLEN', 'public.wb_items:__writeback');
SELECT cachesync.redis_command('DEL', 'public.wb_items:__writeback');

-- the Redis functions refuse what they cannot serve
SELECT cachesync.redis_command('FCALL', 'cachesync_upsert', '1', 'public.wb_items:1', '{}');
SELECT cachesync.redis_command('FCALL', 'cachesync_upsert', '2', 'public.wb_items:1',
       'public.wb_through:__writeback', '{"id":1}');
SELECT cachesync.redis_command('FCALL', 'cachesync_delete', '2', 'public.wb_items:1',
       'nosuch:__writeback', '{"id":1}');
-- a row key naming one of the table's streams is refused (SET/DEL would destroy it)
SELECT cachesync.redis_command('FCALL', 'cachesync_upsert', '2', 'public.wb_items:__writeback',
       'public.wb_items:__writeback', '{"id":1}');
SELECT cachesync.redis_command('FCALL', 'cachesync_delete', '2', 'public.wb_items:__writeback:dlq',
       'public.wb_items:__writeback', '{"id":1}');
SELECT cachesync.redis_command('FCALL', 'cachesync_upsert', '2', 'public.wb_items:__changes',
       'public.wb_items:__writeback', '{"id":1}');
SELECT cachesync.redis_command('TYPE', 'public.wb_items:__writeback:dlq');
-- so is data above 1 MB
SELECT cachesync.redis_command('FCALL', 'cachesync_upsert', '2', 'public.wb_items:1',
       'public.wb_items:__writeback', '{"id":1,"name":"' || repeat('x', 1048576) || '"}');
-- dead_letters lists at most 10000 at a time
SELECT * FROM cachesync.dead_letters('wb_items', 10001);

-- write_back needs a unique index on exactly the key columns (ON CONFLICT)
CREATE TABLE wb_wide (a int NOT NULL, b int NOT NULL, PRIMARY KEY (a));
SELECT cachesync.register('wb_wide', mode => 'write_back', key_columns => ARRAY['a', 'b']);
CREATE TABLE wb_deferred (id int NOT NULL UNIQUE DEFERRABLE);
SELECT cachesync.register('wb_deferred', mode => 'write_back', key_columns => ARRAY['id']);
CREATE UNIQUE INDEX ON wb_wide (b, a);
SET client_min_messages = warning;
SELECT cachesync.register('wb_wide', mode => 'write_back', key_columns => ARRAY['a', 'b']);
SELECT cachesync.unregister('wb_wide');
RESET client_min_messages;
DROP TABLE wb_wide, wb_deferred;

-- admin only
CREATE ROLE wb_nobody;
SET ROLE wb_nobody;
SELECT * FROM cachesync.dead_letters('wb_items');
SELECT cachesync.replay_dead_letters('wb_items');
SELECT * FROM cachesync.writeback_progress;
RESET ROLE;
DROP ROLE wb_nobody;

SET client_min_messages = warning;
SELECT cachesync.unregister('wb_items');
SELECT cachesync.unregister('wb_through');
RESET client_min_messages;
DROP TABLE wb_items, wb_through, wb_unreg;
