-- Security: admin functions and cachesync's own tables are not for PUBLIC.
CREATE TABLE sec_t (id int PRIMARY KEY, secret text);
SET client_min_messages = warning;
SELECT cachesync.register('sec_t');
RESET client_min_messages;
CREATE ROLE regress_cachesync_app;
CREATE ROLE regress_cachesync_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON sec_t TO regress_cachesync_app;

SET ROLE regress_cachesync_app;
SELECT cachesync.register('sec_t');
SELECT cachesync.unregister('sec_t');
SELECT * FROM cachesync.redis_status();
SELECT * FROM cachesync.tables;
SELECT * FROM cachesync.registrations;
INSERT INTO cachesync.registrations (rel, key_columns, key_prefix)
  VALUES ('sec_t', '{id}', 'x:');
DELETE FROM cachesync.registrations;
-- the key of a row is public knowledge
SELECT cachesync.key('sec_t', '1');
RESET ROLE;

-- a role granted the admin functions may register only the tables it owns
GRANT EXECUTE ON FUNCTION cachesync.register(regclass, text, text[], text[], text, interval, text, boolean, boolean)
  TO regress_cachesync_admin;
GRANT EXECUTE ON FUNCTION cachesync.unregister(regclass, boolean) TO regress_cachesync_admin;
GRANT CREATE ON SCHEMA public TO regress_cachesync_admin;
SET ROLE regress_cachesync_admin;
SELECT cachesync.register('sec_t', columns => ARRAY['id']);
CREATE TABLE sec_owned (id int PRIMARY KEY);
SELECT cachesync.register('sec_owned');
-- without any privilege on cachesync.registrations
SELECT count(*) FROM cachesync.registrations;
SELECT cachesync.unregister('sec_owned');
SELECT cachesync.register('sec_owned');
-- dropping a registered table removes its registration, whoever drops it
DROP TABLE sec_owned;
RESET ROLE;

SELECT rel, columns FROM cachesync.tables ORDER BY rel::text;
-- a role without any privilege on cachesync's tables can still drop its own tables
SET ROLE regress_cachesync_app;
CREATE TEMP TABLE app_scratch (id int);
DROP TABLE app_scratch;
RESET ROLE;

REVOKE CREATE ON SCHEMA public FROM regress_cachesync_admin;
REVOKE EXECUTE ON FUNCTION cachesync.register(regclass, text, text[], text[], text, interval, text, boolean, boolean)
  FROM regress_cachesync_admin;
REVOKE EXECUTE ON FUNCTION cachesync.unregister(regclass, boolean) FROM regress_cachesync_admin;
DROP TABLE sec_t;
DROP ROLE regress_cachesync_app, regress_cachesync_admin;
