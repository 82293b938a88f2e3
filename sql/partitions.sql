-- Partitions created or attached after registration are covered too.
CREATE TABLE pa (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE pa_eu PARTITION OF pa FOR VALUES IN ('eu');
SET client_min_messages = warning;
SELECT cachesync.register('pa', key_prefix => 'regress_pa:');
RESET client_min_messages;
CREATE TABLE pa_us PARTITION OF pa FOR VALUES IN ('us');
-- a partition whose column order differs from its parent's
CREATE TABLE pa_asia (v text, region text NOT NULL, id int NOT NULL);
ALTER TABLE pa ATTACH PARTITION pa_asia FOR VALUES IN ('asia');
SELECT tgrelid::regclass AS rel, tgname, tgnargs
  FROM pg_trigger WHERE tgname LIKE 'cachesync%' ORDER BY 1, 2;

INSERT INTO pa VALUES (1, 'eu', 'a'), (2, 'us', 'b'), (3, 'asia', 'c');
SELECT cachesync.redis_command('GET', 'regress_pa:3:asia') AS asia_row;
DELETE FROM pa WHERE id = 3;
SELECT cachesync.redis_command('EXISTS', 'regress_pa:3:asia') AS asia_gone;

-- TRUNCATE of one attached partition queues the parent's keys for the worker
TRUNCATE pa_us;
SELECT rel::regclass, key FROM cachesync.queue WHERE rel = 'pa'::regclass;

-- the triggers cannot be attached by hand to another table
CREATE ROLE regress_pa_user;
GRANT CREATE ON SCHEMA public TO regress_pa_user;
SET ROLE regress_pa_user;
CREATE TABLE forged (id int, region text, v text);
CREATE TRIGGER forge AFTER INSERT ON forged FOR EACH ROW EXECUTE FUNCTION cachesync.capture();
RESET ROLE;

DELETE FROM cachesync.queue WHERE rel = 'pa'::regclass;
SET client_min_messages = warning;
SELECT cachesync.unregister('pa', purge => true);
RESET client_min_messages;
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname LIKE 'cachesync%';
DROP TABLE pa, forged;
REVOKE CREATE ON SCHEMA public FROM regress_pa_user;
DROP ROLE regress_pa_user;
