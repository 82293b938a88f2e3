-- The Redis connection as a DBA checks it from psql.
SELECT server IS NOT NULL AS has_server,
       redis_version ~ '^\d+\.\d+' AS has_version,
       role, username, db, ping_ms >= 0 AS pinged
  FROM cachesync.redis_status();
-- the connection is reused
SELECT role FROM cachesync.redis_status();
