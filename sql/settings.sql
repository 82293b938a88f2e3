-- Settings: defaults, contexts, and the password kept from non-superusers.
SELECT name, setting, unit, context, vartype
  FROM pg_settings
 WHERE name LIKE 'cachesync.%'
   AND name NOT IN ('cachesync.redis_port', 'cachesync.redis_host', 'cachesync.database')
 ORDER BY name;

-- connection settings are server-wide
SET cachesync.redis_host = 'elsewhere';
SET cachesync.redis_password = 'x';
-- per-session policy settings are for superusers
SET cachesync.on_redis_error = 'error';
SHOW cachesync.on_redis_error;
SET cachesync.on_redis_error = 'sometimes';
RESET cachesync.on_redis_error;
SET cachesync.command_timeout = '250ms';
SHOW cachesync.command_timeout;
SET cachesync.command_timeout = 0;
RESET cachesync.command_timeout;
-- the prefix is reserved: a typo is an error, not a silent placeholder
SET cachesync.no_such_setting = 1;

-- the password is visible to superusers only
CREATE ROLE regress_cachesync_plain;
SET ROLE regress_cachesync_plain;
SHOW cachesync.redis_password;
SELECT count(*) FROM pg_settings WHERE name = 'cachesync.redis_password';
SET cachesync.on_redis_error = 'error';
SET cachesync.enabled = off;
RESET ROLE;
DROP ROLE regress_cachesync_plain;
