/* cachesync--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION cachesync" to load this file. \quit

GRANT USAGE ON SCHEMA cachesync TO PUBLIC;

--
-- Registrations: one row per registered table.  Kept by pg_dump.
--
CREATE TABLE cachesync.registrations (
    rel           regclass PRIMARY KEY,
    mode          text NOT NULL DEFAULT 'write_through'
                  CHECK (mode IN ('write_through', 'write_around', 'async', 'write_back')),
    key_columns   text[] NOT NULL CHECK (cardinality(key_columns) > 0),
    columns       text[],
    format        text NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'hash')),
    ttl           interval CHECK (ttl > interval '0'),
    key_prefix    text NOT NULL UNIQUE CHECK (key_prefix <> ''),
    notify        boolean NOT NULL DEFAULT false,
    changes       boolean NOT NULL DEFAULT false,
    registered_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cachesync.registrations IS 'Tables kept in sync with Redis; written by cachesync.register() and cachesync.unregister()';
COMMENT ON COLUMN cachesync.registrations.mode IS 'write_through, write_around, async or write_back';
COMMENT ON COLUMN cachesync.registrations.key_columns IS 'columns whose values form the Redis key, in key order';
COMMENT ON COLUMN cachesync.registrations.columns IS 'cached columns in table order, key columns included; NULL caches every column';
COMMENT ON COLUMN cachesync.registrations.format IS 'json: one JSON object per row; hash: a Redis hash, one field per non-NULL column';
COMMENT ON COLUMN cachesync.registrations.ttl IS 'expiry of cached entries; NULL for none';
COMMENT ON COLUMN cachesync.registrations.key_prefix IS 'the table''s key prefix, after cachesync.key_prefix';
SELECT pg_catalog.pg_extension_config_dump('cachesync.registrations', '');
REVOKE ALL ON cachesync.registrations FROM PUBLIC;

--
-- Registration
--
CREATE FUNCTION cachesync.register(
    rel regclass,
    mode text DEFAULT 'write_through',
    key_columns text[] DEFAULT NULL,
    columns text[] DEFAULT NULL,
    format text DEFAULT 'json',
    ttl interval DEFAULT NULL,
    key_prefix text DEFAULT NULL,
    notify boolean DEFAULT false,
    changes boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'cachesync_register'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cachesync.register IS 'registers a table (or changes its settings) so its committed changes reach Redis';

CREATE FUNCTION cachesync.unregister(rel regclass, purge boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'cachesync_unregister'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cachesync.unregister IS 'stops syncing a table; with purge, also removes its keys from Redis';

CREATE FUNCTION cachesync.key(rel regclass, VARIADIC key_values text[])
RETURNS text
AS 'MODULE_PATHNAME', 'cachesync_key'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION cachesync.key IS 'the Redis key of the row with the given key values';

CREATE VIEW cachesync.tables AS
SELECT r.rel,
       r.mode,
       r.key_columns,
       r.columns,
       r.format,
       r.ttl,
       coalesce(current_setting('cachesync.key_prefix', true), '') || r.key_prefix AS key_prefix,
       CASE WHEN r.mode = 'write_back'
            THEN coalesce(current_setting('cachesync.key_prefix', true), '') || r.key_prefix || '__writeback'
       END AS writeback_stream,
       CASE WHEN r.mode = 'write_back'
            THEN coalesce(current_setting('cachesync.key_prefix', true), '') || r.key_prefix || '__writeback:dlq'
       END AS writeback_dlq,
       CASE WHEN r.changes
            THEN coalesce(current_setting('cachesync.key_prefix', true), '') || r.key_prefix || '__changes'
       END AS change_stream,
       CASE WHEN r.notify
            THEN coalesce(current_setting('cachesync.key_prefix', true), '') || '__cachesync:invalidate:'
                 || (SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = r.rel)
       END AS invalidate_channel,
       CASE WHEN r.notify
            THEN coalesce(current_setting('cachesync.key_prefix', true), '') || '__cachesync:invalidate'
       END AS invalidate_all_channel,
       r.notify,
       r.changes,
       r.registered_at
FROM cachesync.registrations r;
COMMENT ON VIEW cachesync.tables IS 'registered tables with their full key prefix and stream names';
REVOKE ALL ON cachesync.tables FROM PUBLIC;

CREATE FUNCTION cachesync.prefill(rel regclass, keys text[])
RETURNS bigint
AS 'MODULE_PATHNAME', 'cachesync_prefill_keys'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cachesync.prefill(regclass, text[]) IS 'loads the rows of the given keys into Redis (keys whose row is gone are removed); returns the rows loaded';

CREATE FUNCTION cachesync.reload(rel regclass DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'cachesync_reload'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cachesync.reload(regclass) IS 'rewrites the cache of one table (or all) from its rows and removes keys without a row; returns the rows loaded';

--
-- A dropped table takes its registration with it.  SECURITY DEFINER: the
-- trigger fires for every role's DROP, and those roles cannot write here.
--
CREATE FUNCTION cachesync.forget_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM cachesync.registrations r
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass
      AND d.objsubid = 0
      AND r.rel::oid = d.objid;
    -- the write-back progress table is created at the end of this script
    IF to_regclass('cachesync.writeback_progress') IS NOT NULL THEN
        DELETE FROM cachesync.writeback_progress p
        USING pg_event_trigger_dropped_objects() d
        WHERE d.classid = 'pg_class'::regclass
          AND d.objsubid = 0
          AND p.rel::oid = d.objid;
    END IF;
END
$$;
CREATE EVENT TRIGGER cachesync_forget_dropped_tables ON sql_drop
    EXECUTE FUNCTION cachesync.forget_dropped_tables();

--
-- Capture: row and TRUNCATE triggers that register() installs
--
CREATE FUNCTION cachesync.capture()
RETURNS trigger
AS 'MODULE_PATHNAME', 'cachesync_capture'
LANGUAGE C;
COMMENT ON FUNCTION cachesync.capture() IS 'row trigger of registered tables: records each change for Redis';

CREATE FUNCTION cachesync.capture_truncate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'cachesync_capture_truncate'
LANGUAGE C;
COMMENT ON FUNCTION cachesync.capture_truncate() IS 'TRUNCATE trigger of registered tables: queues the removal of every key';

--
-- The durable queue: keys the background worker brings in line with the
-- table (async tables, TRUNCATE, prepared transactions, changes that could
-- not reach Redis).  Transient: not dumped.
--
CREATE TABLE cachesync.queue (
    rel         oid NOT NULL,
    key         text,
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp()
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);
COMMENT ON TABLE cachesync.queue IS 'keys whose cache entry the background worker must bring in line with the table; no index: writers append with a plain heap insert, the worker walks it by ctid';
COMMENT ON COLUMN cachesync.queue.key IS 'the Redis key; NULL for every key of the table (TRUNCATE)';
REVOKE ALL ON cachesync.queue FROM PUBLIC;

--
-- Statistics
--
CREATE FUNCTION cachesync._table_stats(
    OUT relid oid,
    OUT pushed bigint,
    OUT invalidated bigint,
    OUT errors bigint,
    OUT hits bigint,
    OUT misses bigint,
    OUT wb_applied bigint,
    OUT wb_dead_lettered bigint,
    OUT queued bigint,
    OUT wb_pending bigint,
    OUT wb_oldest_ms bigint,
    OUT published bigint,
    OUT publish_lost bigint,
    OUT changes_appended bigint,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT last_reload_at timestamptz,
    OUT last_validation_id bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'cachesync_table_stats'
LANGUAGE C VOLATILE;

CREATE VIEW cachesync.stats AS
SELECT r.rel,
       r.mode,
       coalesce(s.pushed, 0) AS pushed,
       coalesce(s.invalidated, 0) AS invalidated,
       coalesce(q.depth, 0) AS queue_depth,
       q.lag AS queue_lag,
       coalesce(s.wb_applied, 0) AS wb_applied,
       coalesce(s.wb_dead_lettered, 0) AS wb_dead_lettered,
       CASE WHEN r.mode = 'write_back' THEN coalesce(s.wb_pending, 0) END AS wb_pending,
       coalesce(s.hits, 0) AS hits,
       coalesce(s.misses, 0) AS misses,
       coalesce(s.errors, 0) AS errors,
       s.last_error,
       s.last_error_at,
       s.last_reload_at,
       s.last_validation_id,
       coalesce(s.queued, 0) AS queued,
       CASE WHEN coalesce(s.hits, 0) + coalesce(s.misses, 0) > 0
            THEN round(s.hits::numeric / (s.hits + s.misses), 4)
       END AS hit_ratio,
       CASE WHEN r.mode = 'write_back' THEN
            CASE WHEN s.wb_oldest_ms > 0
                 THEN greatest(clock_timestamp() - to_timestamp(s.wb_oldest_ms / 1000.0), interval '0')
                 ELSE interval '0' END
       END AS wb_lag,
       coalesce(s.published, 0) AS published,
       coalesce(s.publish_lost, 0) AS publish_lost,
       coalesce(s.changes_appended, 0) AS changes_appended
FROM cachesync.registrations r
LEFT JOIN cachesync._table_stats() s ON s.relid = r.rel::oid
LEFT JOIN (SELECT rel, count(*) AS depth, clock_timestamp() - min(enqueued_at) AS lag
             FROM cachesync.queue GROUP BY rel) q ON q.rel = r.rel::oid;
COMMENT ON VIEW cachesync.stats IS 'per registered table: values pushed, keys invalidated, queue depth and lag, errors';
REVOKE ALL ON cachesync.stats FROM PUBLIC;

--
-- A partition created or attached under a registered table gets the
-- TRUNCATE trigger too (statement triggers are not cloned to partitions).
--
CREATE FUNCTION cachesync.cover_new_partitions()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part regclass;
BEGIN
    -- ATTACH PARTITION reports the parent, CREATE TABLE ... PARTITION OF the
    -- child: check every partition of every registered partitioned table
    FOR part IN
        SELECT t.relid
          FROM cachesync.registrations r,
               LATERAL pg_partition_tree(r.rel) t
         WHERE NOT EXISTS (SELECT 1 FROM pg_trigger
                            WHERE tgrelid = t.relid AND tgname = 'cachesync_truncate')
    LOOP
        EXECUTE format('CREATE TRIGGER cachesync_truncate AFTER TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION cachesync.capture_truncate()',
                       part);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER cachesync_cover_new_partitions ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION cachesync.cover_new_partitions();
REVOKE ALL ON FUNCTION cachesync.cover_new_partitions() FROM PUBLIC;
-- register() creates the triggers as the extension owner; nobody else may
-- attach capture to a table of their own
REVOKE ALL ON FUNCTION cachesync.capture() FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.capture_truncate() FROM PUBLIC;

--
-- Redis connection
--
CREATE FUNCTION cachesync.redis_status(
    OUT server text,
    OUT redis_version text,
    OUT redis_mode text,
    OUT role text,
    OUT username text,
    OUT db integer,
    OUT ping_ms double precision)
RETURNS record
AS 'MODULE_PATHNAME', 'cachesync_redis_status'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cachesync.redis_status IS 'connects to Redis and reports the server, the ACL user, the database and a PING round trip';

CREATE FUNCTION cachesync.redis_command(VARIADIC args text[])
RETURNS text
AS 'MODULE_PATHNAME', 'cachesync_redis_command'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cachesync.redis_command IS 'runs one Redis command (for inspection); arrays come back as JSON';

-- admin functions are not for PUBLIC
REVOKE ALL ON FUNCTION cachesync.register(regclass, text, text[], text[], text, interval, text, boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.unregister(regclass, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.redis_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.redis_command(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.prefill(regclass, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.reload(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync._table_stats() FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.forget_dropped_tables() FROM PUBLIC;

-- ==== read-through, hot keys and warm-up ====

CREATE FUNCTION cachesync.get(rel regclass, VARIADIC key_values text[])
RETURNS jsonb
AS 'MODULE_PATHNAME', 'cachesync_get'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cachesync.get(regclass, text[]) IS 'read-through: the cached row from Redis, or on a miss from the table (then stored in Redis); NULL when the row does not exist';

CREATE FUNCTION cachesync.get_many(rel regclass, keys text[])
RETURNS TABLE(key text, value jsonb)
AS 'MODULE_PATHNAME', 'cachesync_get_many'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cachesync.get_many(regclass, text[]) IS 'read-through of many single-column keys: one Redis round trip for the hits, one query for the misses; value NULL where no row exists';

-- the privileges that count are the table's: get() checks them itself
GRANT EXECUTE ON FUNCTION cachesync.get(regclass, text[]) TO PUBLIC;
GRANT EXECUTE ON FUNCTION cachesync.get_many(regclass, text[]) TO PUBLIC;

CREATE FUNCTION cachesync.prefill(rel regclass, top_n integer)
RETURNS bigint
AS 'MODULE_PATHNAME', 'cachesync_prefill_top'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cachesync.prefill(regclass, integer) IS 'loads the top_n most read keys of the table into Redis (keys whose row is gone are removed); returns the rows loaded';
REVOKE ALL ON FUNCTION cachesync.prefill(regclass, integer) FROM PUBLIC;

CREATE FUNCTION cachesync._hot_keys(OUT relid oid, OUT key text, OUT hits bigint, OUT error bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'cachesync_hot_keys_list'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION cachesync._hot_keys() FROM PUBLIC;

CREATE VIEW cachesync.hot_keys AS
SELECT r.rel,
       coalesce(current_setting('cachesync.key_prefix', true), '') || r.key_prefix || h.key AS key,
       h.hits,
       h.hits - h.error AS hits_at_least
FROM cachesync._hot_keys() h
JOIN cachesync.registrations r ON r.rel::oid = h.relid;
COMMENT ON VIEW cachesync.hot_keys IS 'the most read keys of each registered table (approximate top-k, hottest first): hits is an upper bound, hits_at_least a lower bound';
REVOKE ALL ON cachesync.hot_keys FROM PUBLIC;

-- ==== write-back ====
--
-- The last write-back entry applied per table, written in the transaction
-- that applies it: entries at or before it are skipped when they come back
-- after a crash (exactly once in effect).
--
CREATE TABLE cachesync.writeback_progress (
    rel        regclass PRIMARY KEY,
    last_id    text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cachesync.writeback_progress IS 'per write_back table: the id of the last stream entry applied (or dead-lettered)';
REVOKE ALL ON cachesync.writeback_progress FROM PUBLIC;

CREATE FUNCTION cachesync.dead_letters(rel regclass, max_entries integer DEFAULT 100)
RETURNS TABLE(id text, op text, data text, key text, error text, sqlstate text)
AS 'MODULE_PATHNAME', 'cachesync_dead_letters'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION cachesync.dead_letters(regclass, integer) IS 'the oldest entries of a write_back table''s dead-letter stream, with the error and SQLSTATE that put them there';

CREATE FUNCTION cachesync.replay_dead_letters(rel regclass, ids text[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'cachesync_replay_dead_letters'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cachesync.replay_dead_letters(regclass, text[]) IS 'appends dead letters (all, or those with the given ids) to the write-back stream again and removes them from the dead-letter stream; returns how many';

REVOKE ALL ON FUNCTION cachesync.dead_letters(regclass, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.replay_dead_letters(regclass, text[]) FROM PUBLIC;

-- ==== change events (invalidation broadcast, change stream) ====
--
-- The change stream's outbox: the row trigger of a table registered with
-- changes => true appends one entry per change inside the writer's
-- transaction; the worker appends entries to the table's stream
-- (<prefix><table prefix>__changes) lowest pos first, then deletes them.
-- No index: writers append with a plain heap insert; the worker reads the
-- lowest pos with a top-N sort.  Transient: not dumped.
--
CREATE TABLE cachesync.changes_outbox (
    rel   oid NOT NULL,
    pos   bigint NOT NULL,
    op    text NOT NULL,
    key   text,
    "row" text
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
        autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000);
COMMENT ON TABLE cachesync.changes_outbox IS 'committed changes of tables registered with changes => true, not yet appended to their change stream';
COMMENT ON COLUMN cachesync.changes_outbox.pos IS 'commit-ordered per key (drawn from the version clock under the key''s lock); duplicates in the stream carry the same pos';
COMMENT ON COLUMN cachesync.changes_outbox.op IS 'insert, update, delete or truncate';
COMMENT ON COLUMN cachesync.changes_outbox.key IS 'the Redis key of the row; NULL for truncate';
COMMENT ON COLUMN cachesync.changes_outbox."row" IS 'the new row as the table''s JSON (cached columns); NULL for delete and truncate';
REVOKE ALL ON cachesync.changes_outbox FROM PUBLIC;

-- ==== reload, validate, advise ====

--
-- Validation jobs: one row per cachesync.validate() call.  Not dumped: a
-- job's outcome describes one Redis at one moment.
--
CREATE TABLE cachesync.validation_jobs (
    id           bigserial PRIMARY KEY,
    rel          regclass,
    repair       boolean NOT NULL,
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    rows_checked bigint NOT NULL DEFAULT 0,
    missing      bigint NOT NULL DEFAULT 0,
    stale        bigint NOT NULL DEFAULT 0,
    orphaned     bigint NOT NULL DEFAULT 0,
    repaired     bigint NOT NULL DEFAULT 0,
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    examples     jsonb NOT NULL DEFAULT '{}',
    error        text,
    generation   bigint NOT NULL,
    pid          integer
);
COMMENT ON TABLE cachesync.validation_jobs IS 'validation jobs started by cachesync.validate(); read them through cachesync.validations';
COMMENT ON COLUMN cachesync.validation_jobs.rel IS 'the table validated; NULL: every registered table, in one job';
COMMENT ON COLUMN cachesync.validation_jobs.generation IS 'the server run that owns the job: a job of an earlier run was interrupted';
COMMENT ON COLUMN cachesync.validation_jobs.pid IS 'the job''s background worker';
REVOKE ALL ON cachesync.validation_jobs FROM PUBLIC;

CREATE FUNCTION cachesync._job_alive(generation bigint, pid integer)
RETURNS boolean
AS 'MODULE_PATHNAME', 'cachesync_job_alive'
LANGUAGE C VOLATILE;

CREATE VIEW cachesync.validations AS
SELECT j.id,
       j.rel,
       CASE WHEN j.state IN ('queued', 'running') AND NOT cachesync._job_alive(j.generation, j.pid)
            THEN 'failed' ELSE j.state END AS state,
       j.rows_checked,
       j.missing,
       j.stale,
       j.orphaned,
       j.repaired,
       j.started_at,
       j.finished_at,
       j.examples,
       CASE WHEN j.state IN ('queued', 'running') AND NOT cachesync._job_alive(j.generation, j.pid)
            THEN 'interrupted: its worker exited (server restart, crash or termination)'
            ELSE j.error END AS error
FROM cachesync.validation_jobs j;
COMMENT ON VIEW cachesync.validations IS 'validation jobs: state, rows checked, drift found (missing, stale, orphaned) and repaired, example keys';
REVOKE ALL ON cachesync.validations FROM PUBLIC;

CREATE FUNCTION cachesync.validate(rel regclass DEFAULT NULL, repair boolean DEFAULT false)
RETURNS bigint
AS 'MODULE_PATHNAME', 'cachesync_validate'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION cachesync.validate(regclass, boolean) IS 'starts a background job comparing a table''s rows (or every registered table''s) with Redis, optionally repairing the drift; returns the job id';

CREATE FUNCTION cachesync._wait_job(id bigint, timeout interval)
RETURNS void
AS 'MODULE_PATHNAME', 'cachesync_wait_job'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION cachesync.wait_validation(id bigint, timeout interval DEFAULT '5 min')
RETURNS cachesync.validations
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT cachesync._wait_job(id, timeout);
    SELECT * FROM cachesync.validations v WHERE v.id = wait_validation.id;
$$;
COMMENT ON FUNCTION cachesync.wait_validation(bigint, interval) IS 'waits until a validation job ends and returns its row';

CREATE FUNCTION cachesync.cancel_validation(id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cachesync.validation_jobs j WHERE j.id = cancel_validation.id) THEN
        RAISE EXCEPTION 'validation job % does not exist', id USING ERRCODE = 'undefined_object';
    END IF;
    UPDATE cachesync.validation_jobs j SET state = 'cancelled', finished_at = now()
     WHERE j.id = cancel_validation.id AND j.state IN ('queued', 'running');
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION cachesync.cancel_validation(bigint) IS 'stops a queued or running validation job (it stops after its current page); false when it had already ended';

REVOKE ALL ON FUNCTION cachesync._job_alive(bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.validate(regclass, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync._wait_job(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.wait_validation(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.cancel_validation(bigint) FROM PUBLIC;

--
-- advise(): does the cache still pay?
--
CREATE FUNCTION cachesync._redis_footprint(
    rel regclass,
    sample integer,
    OUT keys bigint,
    OUT bytes bigint,
    OUT sampled integer,
    OUT exact boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'cachesync_redis_footprint'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION cachesync.advise(rel regclass DEFAULT NULL)
RETURNS TABLE(
    table_name regclass,
    table_bytes bigint,
    index_bytes bigint,
    shared_buffers_bytes bigint,
    pg_hit_ratio double precision,
    cache_hit_ratio double precision,
    redis_keys bigint,
    redis_bytes bigint,
    recommendation text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sb bigint := (SELECT s.setting::bigint * pg_size_bytes(s.unit)
                    FROM pg_settings s WHERE s.name = 'shared_buffers');
    r record;
    total bigint;
    pg_reads bigint;
    cache_reads bigint;
    f record;
BEGIN
    IF advise.rel IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cachesync.registrations g WHERE g.rel = advise.rel) THEN
        RAISE EXCEPTION 'table "%" is not registered with cachesync', advise.rel
            USING ERRCODE = 'undefined_object',
                  HINT = 'Call cachesync.advise() without an argument to see every registered table.';
    END IF;
    FOR r IN
        SELECT g.rel AS relid,
               pg_table_size(g.rel) AS tb,
               pg_indexes_size(g.rel) AS ib,
               coalesce(io.heap_blks_hit, 0) + coalesce(io.idx_blks_hit, 0) AS hit,
               coalesce(io.heap_blks_read, 0) + coalesce(io.idx_blks_read, 0) AS rd,
               coalesce(st.hits, 0) AS chits,
               coalesce(st.misses, 0) AS cmisses
          FROM cachesync.registrations g
          LEFT JOIN pg_statio_all_tables io ON io.relid = g.rel::oid
          LEFT JOIN cachesync.stats st ON st.rel = g.rel
         WHERE advise.rel IS NULL OR g.rel = advise.rel
         ORDER BY g.rel::oid
    LOOP
        f := cachesync._redis_footprint(r.relid, 200);
        total := r.tb + r.ib;
        pg_reads := r.hit + r.rd;
        cache_reads := r.chits + r.cmisses;
        table_name := r.relid;
        table_bytes := r.tb;
        index_bytes := r.ib;
        shared_buffers_bytes := sb;
        pg_hit_ratio := CASE WHEN pg_reads > 0 THEN r.hit::float8 / pg_reads END;
        cache_hit_ratio := CASE WHEN cache_reads > 0 THEN r.chits::float8 / cache_reads END;
        redis_keys := f.keys;
        redis_bytes := f.bytes;
        recommendation := CASE
            WHEN total <= sb AND pg_reads >= 1000 AND pg_hit_ratio >= 0.99 THEN
                format('the cache may be unnecessary: table and indexes (%s) fit in shared_buffers (%s) and Postgres serves %s%% of their reads from memory',
                       pg_size_pretty(total), pg_size_pretty(sb), round((pg_hit_ratio * 100)::numeric, 1))
            WHEN cache_reads >= 1000 AND cache_hit_ratio >= 0.9 AND total > sb THEN
                format('the cache earns its keep: it answers %s%% of reads, while holding table and indexes (%s) in Postgres would need %s more shared_buffers (now %s); Redis holds ~%s',
                       round((cache_hit_ratio * 100)::numeric, 1), pg_size_pretty(total),
                       pg_size_pretty(total - sb), pg_size_pretty(sb), pg_size_pretty(f.bytes))
            WHEN total > sb THEN
                format('%s more shared_buffers (%s instead of %s) would hold table and indexes (%s) in Postgres; the cache hit ratio is %s and Redis holds ~%s',
                       pg_size_pretty(total - sb), pg_size_pretty(total), pg_size_pretty(sb), pg_size_pretty(total),
                       coalesce(round((cache_hit_ratio * 100)::numeric, 1) || '%', 'unknown (no reads through cachesync.get yet)'),
                       pg_size_pretty(f.bytes))
            ELSE
                format('table and indexes (%s) fit in shared_buffers (%s) but Postgres served %s of their reads from memory so far; the cache hit ratio is %s: look again after more traffic',
                       pg_size_pretty(total), pg_size_pretty(sb),
                       coalesce(round((pg_hit_ratio * 100)::numeric, 1) || '%', 'none'),
                       coalesce(round((cache_hit_ratio * 100)::numeric, 1) || '%', 'unknown'))
        END;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION cachesync.advise(regclass) IS 'per registered table: sizes, shared_buffers, Postgres and cache hit ratios, Redis memory (sampled) and a recommendation';

REVOKE ALL ON FUNCTION cachesync._redis_footprint(regclass, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION cachesync.advise(regclass) FROM PUBLIC;
