-- Registration: happy paths, re-registration, and every argument error.
SET client_min_messages = notice;

CREATE TABLE users (id int PRIMARY KEY, name text, email text, password_hash text);

-- default: primary key, every column, json, no ttl, "<schema>.<table>:"
SELECT cachesync.register('users');
SELECT rel, mode, key_columns, columns, format, ttl, key_prefix,
       writeback_stream, writeback_dlq, change_stream, notify, changes
  FROM cachesync.tables;

-- registering again changes the settings and says so
SELECT cachesync.register('users', columns => ARRAY['email', 'name']);
SELECT cachesync.register('users', columns => ARRAY['email', 'name']);
SELECT rel, key_columns, columns FROM cachesync.tables;

-- every option
CREATE TABLE orders (region text NOT NULL, no int NOT NULL, total numeric,
                     UNIQUE (no, region));
SELECT cachesync.register('orders', mode => 'write_back',
                          key_columns => ARRAY['region', 'no'],
                          format => 'hash', ttl => '10 minutes',
                          key_prefix => 'ord:', notify => true, changes => true);
SELECT rel, mode, key_columns, columns, format, ttl, key_prefix,
       writeback_stream, writeback_dlq, change_stream, notify, changes
  FROM cachesync.tables ORDER BY rel::text;
SELECT cachesync.register('orders', mode => 'async', key_columns => ARRAY['no', 'region'],
                          key_prefix => 'ord:');
SELECT cachesync.register('orders', mode => 'write_around', key_columns => ARRAY['no', 'region'],
                          key_prefix => 'ord:');

-- partitioned tables can be registered, their partitions cannot
CREATE TABLE events (id bigint, region text, payload text, PRIMARY KEY (id, region))
  PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
SELECT cachesync.register('events');
SELECT cachesync.register('events_eu');

-- errors: the table
SELECT cachesync.register(NULL);
SELECT cachesync.register('no_such_table');
CREATE VIEW users_view AS SELECT * FROM users;
SELECT cachesync.register('users_view');
CREATE MATERIALIZED VIEW users_mv AS SELECT * FROM users;
SELECT cachesync.register('users_mv');
CREATE SEQUENCE a_seq;
SELECT cachesync.register('a_seq');
CREATE TEMP TABLE temp_t (id int PRIMARY KEY);
SELECT cachesync.register('temp_t');
SELECT cachesync.register('pg_class');
SELECT cachesync.register('information_schema.sql_features');
SELECT cachesync.register('cachesync.registrations');

-- errors: keys
CREATE TABLE no_pk (a int NOT NULL, b int);
SELECT cachesync.register('no_pk');
SELECT cachesync.register('no_pk', key_columns => ARRAY['b']);
SELECT cachesync.register('no_pk', key_columns => ARRAY['a']);
CREATE UNIQUE INDEX ON no_pk (a) WHERE a > 0;
SELECT cachesync.register('no_pk', key_columns => ARRAY['a']);
CREATE UNIQUE INDEX ON no_pk ((a + 1));
SELECT cachesync.register('no_pk', key_columns => ARRAY['a']);
CREATE UNIQUE INDEX ON no_pk (a);
SELECT cachesync.register('no_pk', key_columns => ARRAY['a']);
SELECT cachesync.register('users', key_columns => ARRAY['nope']);
SELECT cachesync.register('users', key_columns => ARRAY['id', 'id']);
SELECT cachesync.register('users', key_columns => ARRAY[]::text[]);
SELECT cachesync.register('users', key_columns => ARRAY['id', NULL]);
SELECT cachesync.register('users', key_columns => ARRAY['ctid']);
SELECT cachesync.register('orders', key_columns => ARRAY['region']);
-- key types whose text form depends on session settings
CREATE TABLE by_day (day date PRIMARY KEY, n int);
SELECT cachesync.register('by_day');
CREATE TABLE by_time (at timestamptz NOT NULL UNIQUE, n int);
SELECT cachesync.register('by_time', key_columns => ARRAY['at']);
DROP TABLE by_day, by_time;

-- errors: columns
SELECT cachesync.register('users', columns => ARRAY['name', 'nope']);
SELECT cachesync.register('users', columns => ARRAY['name', 'name']);
SELECT cachesync.register('users', columns => ARRAY[NULL]::text[]);

-- errors: mode, format, ttl, flags
SELECT cachesync.register('users', mode => 'write_sometimes');
SELECT cachesync.register('users', mode => NULL);
SELECT cachesync.register('users', format => 'xml');
SELECT cachesync.register('users', format => NULL);
SELECT cachesync.register('users', ttl => '-5 seconds');
SELECT cachesync.register('users', ttl => '0');
SELECT cachesync.register('users', ttl => '1 day -25 hours');
SELECT cachesync.register('users', ttl => '500 microseconds');
SELECT cachesync.register('users', notify => NULL);
SELECT cachesync.register('users', changes => NULL);

-- errors: key prefix
SELECT cachesync.register('users', key_prefix => '');
SELECT cachesync.register('users', key_prefix => '__cachesync:users:');
SELECT cachesync.register('users', key_prefix => '__cache');
SELECT cachesync.register('users', key_prefix => 'ord:x:');
SELECT cachesync.register('users', key_prefix => 'or');
-- a failed re-registration left the old settings in place
SELECT rel, mode, key_columns, columns, format, ttl, key_prefix
  FROM cachesync.tables ORDER BY rel::text;

-- unregister
SELECT cachesync.unregister('events');
SELECT cachesync.unregister('events');
SELECT cachesync.unregister(NULL);
SELECT cachesync.unregister('users', purge => NULL);

-- a dropped table takes its registration along
DROP VIEW users_view;
DROP MATERIALIZED VIEW users_mv;
DROP TABLE users;
SELECT rel FROM cachesync.tables ORDER BY rel::text;

DROP TABLE orders, events, no_pk;
DROP SEQUENCE a_seq;
SELECT count(*) FROM cachesync.registrations;
