-- validate(), wait_validation(), cancel_validation(), advise(): arguments,
-- privileges and shapes (the jobs themselves run in TAP test 040, where a
-- worker-capable server and time to wait are available).
CREATE TABLE va (id int PRIMARY KEY, v text);
INSERT INTO va SELECT g, 'row ' || g FROM generate_series(1, 10) g;
SET client_min_messages = warning;
SELECT cachesync.register('va', key_prefix => 'regress_va:');
RESET client_min_messages;
CREATE TABLE va_unregistered (id int PRIMARY KEY);

-- argument errors
SELECT cachesync.validate('no_such_table');
SELECT cachesync.validate('va_unregistered');
SELECT cachesync.validate('va', NULL);
SELECT * FROM cachesync.wait_validation(-1);
SELECT cachesync.cancel_validation(-1);
SELECT cachesync.advise('va_unregistered');
SELECT cachesync._redis_footprint('va', 0);

-- waiting for a job in the transaction that started it would never end
BEGIN;
SELECT 1 FROM cachesync.wait_validation(cachesync.validate('va'));
ROLLBACK;

-- the view has exactly the documented columns
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = 'cachesync.validations'::regclass AND attnum > 0
 ORDER BY attnum;

-- advise(): one row per registered table, its columns and types
SELECT cachesync.reload('va');
SELECT table_name, table_bytes > 0 AS has_size, shared_buffers_bytes > 0 AS has_sb,
       redis_keys, redis_bytes > 0 AS has_memory, recommendation IS NOT NULL AS advises
  FROM cachesync.advise('va');
SELECT count(*) >= 1 AS one_row_per_table FROM cachesync.advise();
SELECT p.parameter_name, p.data_type
  FROM information_schema.parameters p
  JOIN information_schema.routines r USING (specific_schema, specific_name)
 WHERE r.routine_schema = 'cachesync' AND r.routine_name = 'advise' AND p.parameter_mode = 'OUT'
 ORDER BY p.ordinal_position;

-- admin functions are not for PUBLIC
CREATE ROLE regress_va_user;
GRANT SELECT ON va TO regress_va_user;
SET ROLE regress_va_user;
SELECT cachesync.validate('va');
SELECT * FROM cachesync.wait_validation(1);
SELECT cachesync.cancel_validation(1);
SELECT * FROM cachesync.advise();
SELECT * FROM cachesync.validations;
RESET ROLE;

SET client_min_messages = warning;
SELECT cachesync.unregister('va', purge => true);
DROP TABLE va, va_unregistered;
DROP ROLE regress_va_user;
