/*-------------------------------------------------------------------------
 *
 * functions.c
 *	  Source of the Redis Function library "cachesync".
 *
 * Every function takes the row key and its version key (KEYS[1], KEYS[2])
 * and a version (ARGV[1]), and acts only when that version is newer than the
 * stored one, so an older row never overwrites a newer one and a deleted row
 * never comes back (see version.c).
 *
 *   cachesync_put    version, ttl_ms (0: none), format, value | field, value...
 *   cachesync_del    version, tombstone_ttl_ms
 *   cachesync_undo   version, tombstone_ttl_ms: removes what that version wrote
 *   cachesync_push   a whole transaction in one call: KEYS are the intent set
 *                    then (row key, version key) pairs; ARGV version, reset
 *                    ('1': empty the intent set first), intent_ttl_ms,
 *                    tombstone_ttl_ms, then per pair 'i' (intent only),
 *                    'd' (delete) or 'p', ttl_ms, format, n, n values (put)
 *   cachesync_version  the library version, to decide whether to reload it
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "functions.h"

const char	cs_functions_code[] =
"#!lua name=cachesync\n"
"\n"
"local function newer(verkey, version)\n"
"  local cur = redis.call('GET', verkey)\n"
"  return not cur or tonumber(cur) < tonumber(version)\n"
"end\n"
"\n"
"local function put(keys, args)\n"
"  if not newer(keys[2], args[1]) then return 0 end\n"
"  local ttl = tonumber(args[2])\n"
"  if args[3] == 'json' then\n"
"    if ttl > 0 then redis.call('SET', keys[1], args[4], 'PX', ttl)\n"
"    else redis.call('SET', keys[1], args[4]) end\n"
"  else\n"
"    redis.call('DEL', keys[1])\n"
"    if #args > 4 then redis.call('HSET', keys[1], unpack(args, 4)) end\n"
"    if ttl > 0 then redis.call('PEXPIRE', keys[1], ttl) end\n"
"  end\n"
"  if ttl > 0 then redis.call('SET', keys[2], args[1], 'PX', ttl)\n"
"  else redis.call('SET', keys[2], args[1]) end\n"
"  return 1\n"
"end\n"
"\n"
"local function del(keys, args)\n"
"  if not newer(keys[2], args[1]) then return 0 end\n"
"  redis.call('DEL', keys[1])\n"
"  redis.call('SET', keys[2], args[1], 'PX', tonumber(args[2]))\n"
"  return 1\n"
"end\n"
"\n"
"local function undo(keys, args)\n"
"  if redis.call('GET', keys[2]) ~= args[1] then return 0 end\n"
"  redis.call('DEL', keys[1])\n"
"  redis.call('SET', keys[2], args[1], 'PX', tonumber(args[2]))\n"
"  return 1\n"
"end\n"
"\n"
"local function push(keys, args)\n"
"  if args[2] == '1' then redis.call('DEL', keys[1]) end\n"
"  local a = 5\n"
"  for k = 2, #keys, 2 do\n"
"    redis.call('SADD', keys[1], keys[k])\n"
"    local op = args[a]\n"
"    if op == 'p' then\n"
"      local n = tonumber(args[a + 3])\n"
"      put({keys[k], keys[k + 1]}, {args[1], args[a + 1], args[a + 2], unpack(args, a + 4, a + 3 + n)})\n"
"      a = a + 4 + n\n"
"    else\n"
"      if op == 'd' then del({keys[k], keys[k + 1]}, {args[1], args[4]}) end\n"
"      a = a + 1\n"
"    end\n"
"  end\n"
"  redis.call('PEXPIRE', keys[1], args[3])\n"
"  return 1\n"
"end\n"
"\n"
"redis.register_function('cachesync_put', put)\n"
"redis.register_function('cachesync_push', push)\n"
"redis.register_function('cachesync_del', del)\n"
"redis.register_function('cachesync_undo', undo)\n"
"redis.register_function{function_name = 'cachesync_version',\n"
"  callback = function() return '" CS_FUNCTIONS_VERSION "' end, flags = {'no-writes'}}\n";
