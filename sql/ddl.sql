-- Schema changes of a registered table: renames are followed, dropping a
-- key or cached column is refused, other columns come and go freely.
CREATE TABLE ddl_t (id int PRIMARY KEY, name text, secret text, extra int);
SET client_min_messages = warning;
SELECT cachesync.register('ddl_t', columns => ARRAY['name'], key_prefix => 'regress_ddl:');
RESET client_min_messages;
INSERT INTO ddl_t VALUES (1, 'a', 's', 0);
SELECT cachesync.redis_command('GET', 'regress_ddl:1') AS before;

-- renames of a cached and of the key column are followed
ALTER TABLE ddl_t RENAME COLUMN name TO full_name;
ALTER TABLE ddl_t RENAME COLUMN id TO user_id;
SELECT key_columns, columns FROM cachesync.tables WHERE rel = 'ddl_t'::regclass;
UPDATE ddl_t SET full_name = 'b' WHERE user_id = 1;
SELECT cachesync.redis_command('GET', 'regress_ddl:1') AS after_rename;

-- an uncached column can be dropped; a cached or key column cannot
ALTER TABLE ddl_t DROP COLUMN extra;
ALTER TABLE ddl_t DROP COLUMN full_name;
ALTER TABLE ddl_t DROP COLUMN user_id;
ALTER TABLE ddl_t ADD COLUMN added int;
UPDATE ddl_t SET full_name = 'c', added = 1 WHERE user_id = 1;
SELECT cachesync.redis_command('GET', 'regress_ddl:1') AS after_add;

-- a table registered with every column follows columns being added and dropped
CREATE TABLE ddl_all (id int PRIMARY KEY, a int, b int);
SET client_min_messages = warning;
SELECT cachesync.register('ddl_all', key_prefix => 'regress_ddl_all:');
RESET client_min_messages;
ALTER TABLE ddl_all DROP COLUMN b;
ALTER TABLE ddl_all ADD COLUMN c text;
INSERT INTO ddl_all VALUES (1, 2, 'x');
SELECT cachesync.redis_command('GET', 'regress_ddl_all:1') AS all_columns;

SET client_min_messages = warning;
SELECT cachesync.unregister('ddl_t', purge => true);
SELECT cachesync.unregister('ddl_all', purge => true);
RESET client_min_messages;
-- once unregistered, anything goes
ALTER TABLE ddl_t DROP COLUMN full_name;
DROP TABLE ddl_t, ddl_all;
