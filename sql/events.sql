-- Change events: invalidation messages (notify) and the change stream
-- outbox (changes).
--
-- The background worker serves another database, so outbox entries stay in
-- cachesync.changes_outbox here, where the test reads them: what the
-- worker would append, in its order (pos).  Publishing is seen through the
-- stats counters and through the connection still answering correctly
-- after replies it left unread.

CREATE FUNCTION ev_outbox(rel regclass) RETURNS TABLE (op text, key text, "row" jsonb) LANGUAGE sql AS
$$ SELECT op, key, "row"::jsonb FROM cachesync.changes_outbox WHERE rel = $1 ORDER BY pos $$;
CREATE FUNCTION ev_published(rel regclass) RETURNS bigint LANGUAGE sql AS
$$ SELECT published FROM cachesync.stats WHERE stats.rel = $1 $$;

CREATE TABLE ev_wt (id int PRIMARY KEY, v text);
CREATE TABLE ev_wa (id int PRIMARY KEY, v text);
CREATE TABLE ev_as (id int PRIMARY KEY, v text);
CREATE TABLE ev_hash (id int PRIMARY KEY, name text, secret text);
SET client_min_messages = warning;
SELECT cachesync.register('ev_wt', notify => true, changes => true);
SELECT cachesync.register('ev_wa', mode => 'write_around', notify => true);
SELECT cachesync.register('ev_as', mode => 'async', notify => true, changes => true);
SELECT cachesync.register('ev_hash', format => 'hash', columns => '{id,name}', changes => true);
RESET client_min_messages;

-- names: channels for notify tables, the stream for changes tables
SELECT rel, invalidate_channel, invalidate_all_channel, change_stream
FROM cachesync.tables WHERE rel::text LIKE 'ev\_%' ORDER BY rel::text;

-- committed changes, in order; a no-op update leaves no entry
INSERT INTO ev_wt VALUES (1, 'a'), (2, 'b');
UPDATE ev_wt SET v = 'a2' WHERE id = 1;
UPDATE ev_wt SET v = v WHERE id = 1;
DELETE FROM ev_wt WHERE id = 2;
-- a key change: the old key's delete, the new key's insert
UPDATE ev_wt SET id = 3 WHERE id = 1;
SELECT * FROM ev_outbox('ev_wt');

-- rolled-back work leaves nothing, savepoints included
BEGIN;
INSERT INTO ev_wt VALUES (10, 'rolled back');
ROLLBACK;
BEGIN;
INSERT INTO ev_wt VALUES (11, 'kept');
SAVEPOINT s;
INSERT INTO ev_wt VALUES (12, 'rolled back to savepoint');
UPDATE ev_wt SET v = 'rolled back to savepoint' WHERE id = 11;
ROLLBACK TO SAVEPOINT s;
UPDATE ev_wt SET v = 'kept too' WHERE id = 11;
COMMIT;
SELECT * FROM ev_outbox('ev_wt') WHERE key IN ('public.ev_wt:10', 'public.ev_wt:11', 'public.ev_wt:12');

-- TRUNCATE: one entry without key or row
TRUNCATE ev_wt;
SELECT * FROM ev_outbox('ev_wt') WHERE op = 'truncate';

-- the row is the table's JSON of the cached columns, whatever the format
INSERT INTO ev_hash VALUES (1, 'n', 'never in Redis');
SELECT * FROM ev_outbox('ev_hash');

-- a role that may only write the table: its changes reach the outbox, which
-- it can neither read nor write itself
CREATE ROLE regress_ev_writer;
GRANT INSERT, UPDATE ON ev_hash TO regress_ev_writer;
SET ROLE regress_ev_writer;
INSERT INTO ev_hash VALUES (2, 'w', 'w');
SELECT count(*) FROM cachesync.changes_outbox;
INSERT INTO cachesync.changes_outbox VALUES ('ev_hash'::regclass, 1, 'insert', 'forged', NULL);
RESET ROLE;
SELECT * FROM ev_outbox('ev_hash') WHERE key = 'public.ev_hash:2';
DROP OWNED BY regress_ev_writer;
DROP ROLE regress_ev_writer;

-- async: outbox entries too (the queue carries the cache update)
INSERT INTO ev_as VALUES (1, 'x');
SELECT * FROM ev_outbox('ev_as');
SELECT count(*) FROM cachesync.changes_outbox WHERE rel = 'ev_wa'::regclass;

-- notify: two messages (table and all-tables channel) per committed key
SELECT ev_published('ev_wt') AS wt_before \gset
INSERT INTO ev_wt VALUES (20, 'p');
-- the PUBLISH replies were left unread: the next command still gets its own reply
SELECT cachesync.redis_command('GET', cachesync.key('ev_wt', '20'));
SELECT ev_published('ev_wt') - :wt_before AS wt_published;
BEGIN;
UPDATE ev_wt SET v = 'no' WHERE id = 20;
ROLLBACK;
BEGIN;
SAVEPOINT s;
UPDATE ev_wt SET v = 'no' WHERE id = 20;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT ev_published('ev_wt') - :wt_before AS wt_published_after_rollbacks;
-- many keys in one transaction, then many transactions in a row
INSERT INTO ev_wt SELECT g, 'm' FROM generate_series(100, 199) g;
SELECT ev_published('ev_wt') - :wt_before AS wt_published_batch;
DO $$ BEGIN FOR i IN 1..50 LOOP UPDATE ev_wt SET v = 'loop ' || i WHERE id = 100; COMMIT; END LOOP; END $$;
SELECT ev_published('ev_wt') - :wt_before AS wt_published_loop;
SELECT cachesync.redis_command('GET', cachesync.key('ev_wt', '100'));

SELECT coalesce(ev_published('ev_wa'), 0) AS wa_before \gset
INSERT INTO ev_wa VALUES (1, 'x'), (2, 'y');
BEGIN;
DELETE FROM ev_wa;
ROLLBACK;
SELECT ev_published('ev_wa') - :wa_before AS wa_published;
SELECT cachesync.redis_command('EXISTS', cachesync.key('ev_wa', '1'));

-- async tables publish when the worker ships (not here)
SELECT coalesce(ev_published('ev_as'), 0) AS as_published;

-- a table without notify publishes nothing
SELECT coalesce(ev_published('ev_hash'), 0) AS hash_published;

SET client_min_messages = warning;
SELECT cachesync.unregister('ev_wt');
SELECT cachesync.unregister('ev_wa');
SELECT cachesync.unregister('ev_as');
SELECT cachesync.unregister('ev_hash');
RESET client_min_messages;
DROP TABLE ev_wt, ev_wa, ev_as, ev_hash;
DELETE FROM cachesync.changes_outbox;
