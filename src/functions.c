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
 *   cachesync_put_many  many rows of one table with one version: KEYS are
 *                    (row key, version key) pairs; ARGV version, ttl_ms,
 *                    format, then per row its value (json) or its field
 *                    count and fields (hash); each row as cachesync_put;
 *                    returns how many rows were written
 *   cachesync_del_many  KEYS (row key, version key) pairs; ARGV version,
 *                    tombstone_ttl_ms; each key as cachesync_del; returns
 *                    how many keys were deleted
 *   cachesync_sweep  reload's orphan pass: KEYS (row key, version key)
 *                    pairs; ARGV min_version, tombstone_ttl_ms: each key
 *                    that exists and whose version is missing or older
 *                    than min_version is deleted with a tombstone of
 *                    min_version (see cs_sync_orphans); returns how many
 *   cachesync_version  the library version, to decide whether to reload it
 *
 * Write-back (see writeback.c):
 *   cachesync_upsert  KEYS row key, write-back stream; ARGV data (JSON
 *                     object): merges data into the cached value (json: into
 *                     the cached object, or a new one; hash: HSET, a JSON null
 *                     removes the field), keeping only cached columns, sets the
 *                     table's TTL, appends op=upsert, records the entry id as
 *                     the row's write-back guard; returns the entry id
 *   cachesync_delete  the same with DEL and op=delete
 *                     (both refuse a row key naming one of the table's
 *                     streams: __writeback, __writeback:dlq, __changes,
 *                     and data longer than CS_WB_MAX_DATA bytes)
 *   cachesync_settle  KEYS row key, version key, guard key; ARGV entry id,
 *                     'p' or 'd', then the put or del arguments: the worker
 *                     writes the stored row unless the guard names another
 *                     entry (a newer application write, not yet applied)
 *   cachesync_deadletter  KEYS dead-letter stream; ARGV original id, fields:
 *                     appends once per original id (its id is reused)
 *   cachesync_replay  KEYS dead-letter stream, write-back stream; ARGV
 *                     count, global prefix, ids (none: the first count)
 *
 * The table's format, TTL, row key prefix and cached columns come from the
 * hash <global prefix>__cachesync:writeback (field: the stream name after the
 * global prefix) that the worker publishes; the functions find the global
 * prefix by trying each split of the stream name, so no client passes it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "functions.h"
#include "keys.h"

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
"-- one version, TTL and format for every row: what a populator's batch shares\n"
"local function put_many(keys, args)\n"
"  local version, v, ttl, json = args[1], tonumber(args[1]), tonumber(args[2]), args[3] == 'json'\n"
"  local a, n = 4, 0\n"
"  for k = 1, #keys, 2 do\n"
"    local cur = redis.call('GET', keys[k + 1])\n"
"    local ok = not cur or tonumber(cur) < v\n"
"    if json then\n"
"      if ok then\n"
"        if ttl > 0 then redis.call('SET', keys[k], args[a], 'PX', ttl)\n"
"        else redis.call('SET', keys[k], args[a]) end\n"
"      end\n"
"      a = a + 1\n"
"    else\n"
"      local c = tonumber(args[a])\n"
"      if ok then\n"
"        redis.call('DEL', keys[k])\n"
"        if c > 0 then redis.call('HSET', keys[k], unpack(args, a + 1, a + c)) end\n"
"        if ttl > 0 then redis.call('PEXPIRE', keys[k], ttl) end\n"
"      end\n"
"      a = a + 1 + c\n"
"    end\n"
"    if ok then\n"
"      if ttl > 0 then redis.call('SET', keys[k + 1], version, 'PX', ttl)\n"
"      else redis.call('SET', keys[k + 1], version) end\n"
"      n = n + 1\n"
"    end\n"
"  end\n"
"  return n\n"
"end\n"
"\n"
"local function del_many(keys, args)\n"
"  local n = 0\n"
"  for k = 1, #keys, 2 do\n"
"    n = n + del({keys[k], keys[k + 1]}, args)\n"
"  end\n"
"  return n\n"
"end\n"
"\n"
"local function sweep(keys, args)\n"
"  local v, n = tonumber(args[1]), 0\n"
"  for k = 1, #keys, 2 do\n"
"    if redis.call('EXISTS', keys[k]) == 1 then\n"
"      local cur = redis.call('GET', keys[k + 1])\n"
"      if not cur or tonumber(cur) < v then\n"
"        redis.call('DEL', keys[k])\n"
"        redis.call('SET', keys[k + 1], args[1], 'PX', tonumber(args[2]))\n"
"        n = n + 1\n"
"      end\n"
"    end\n"
"  end\n"
"  return n\n"
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
"-- write-back: the table's metadata, published by the cachesync worker\n"
"local function wb_meta(stream)\n"
"  for i = 0, #stream do\n"
"    local g = string.sub(stream, 1, i)\n"
"    local m = redis.call('HGET', g .. '" CS_INTERNAL_PREFIX "writeback', string.sub(stream, i + 1))\n"
"    if m then return cjson.decode(m), g end\n"
"  end\n"
"  return nil\n"
"end\n"
"\n"
"local function wb_check(keys, args)\n"
"  if #keys ~= 2 or #args ~= 1 then\n"
"    return nil, 'ERR cachesync: expected 2 keys (row key, write-back stream) and 1 argument (data)'\n"
"  end\n"
"  -- the table's own streams (the stream's name is the row prefix followed\n"
"  -- by __writeback): a SET or DEL there would destroy them\n"
"  local base = string.sub(keys[2], 1, #keys[2] - 11)\n"
"  if keys[1] == keys[2] or keys[1] == keys[2] .. ':dlq' or keys[1] == base .. '__changes' then\n"
"    return nil, 'ERR cachesync: ' .. keys[1] .. ' is a stream of the table, not a row key'\n"
"  end\n"
"  if #args[1] > " CppAsString2(CS_WB_MAX_DATA) " then\n"
"    return nil, 'ERR cachesync: data is larger than " CppAsString2(CS_WB_MAX_DATA) " bytes'\n"
"  end\n"
"  local meta, g = wb_meta(keys[2])\n"
"  if not meta then\n"
"    return nil, 'ERR cachesync: ' .. keys[2] .. ' is not the write-back stream of a write_back table (or the cachesync worker has not published its metadata yet)'\n"
"  end\n"
"  if #keys[1] <= #meta.prefix or string.sub(keys[1], 1, #meta.prefix) ~= meta.prefix then\n"
"    return nil, 'ERR cachesync: row key ' .. keys[1] .. ' is not under the table prefix ' .. meta.prefix\n"
"  end\n"
"  local ok, data = pcall(cjson.decode, args[1])\n"
"  if not ok or type(data) ~= 'table' then\n"
"    return nil, 'ERR cachesync: data must be a JSON object'\n"
"  end\n"
"  return meta, g, data\n"
"end\n"
"\n"
"local function wb_append(keys, g, op, data, ttl)\n"
"  local id = redis.call('XADD', keys[2], '*', 'op', op, 'data', data, 'key', keys[1])\n"
"  local guard = g .. '" CS_INTERNAL_PREFIX "wbid:' .. string.sub(keys[1], #g + 1)\n"
"  if ttl > 0 then redis.call('SET', guard, id, 'PX', ttl)\n"
"  else redis.call('SET', guard, id) end\n"
"  return id\n"
"end\n"
"\n"
"local function wb_text(v)\n"
"  if type(v) == 'table' then return cjson.encode(v) end\n"
"  if type(v) == 'boolean' then return v and 't' or 'f' end\n"
"  return tostring(v)\n"
"end\n"
"\n"
"local function wb_upsert(keys, args)\n"
"  local meta, g, data = wb_check(keys, args)\n"
"  if not meta then return redis.error_reply(g) end\n"
"  local ttl = tonumber(meta.ttl)\n"
"  if meta.format == 'json' then\n"
"    local obj = {}\n"
"    local cur = redis.pcall('GET', keys[1])\n"
"    if type(cur) == 'string' then\n"
"      local ok, o = pcall(cjson.decode, cur)\n"
"      if ok and type(o) == 'table' then obj = o end\n"
"    end\n"
"    for k, v in pairs(data) do\n"
"      if not meta.columns or meta.columns[k] then obj[k] = v end\n"
"    end\n"
"    if ttl > 0 then redis.call('SET', keys[1], cjson.encode(obj), 'PX', ttl)\n"
"    else redis.call('SET', keys[1], cjson.encode(obj)) end\n"
"  else\n"
"    if redis.call('TYPE', keys[1]).ok ~= 'hash' then redis.call('DEL', keys[1]) end\n"
"    for k, v in pairs(data) do\n"
"      if not meta.columns or meta.columns[k] then\n"
"        if v == cjson.null then redis.call('HDEL', keys[1], k)\n"
"        else redis.call('HSET', keys[1], k, wb_text(v)) end\n"
"      end\n"
"    end\n"
"    if ttl > 0 then redis.call('PEXPIRE', keys[1], ttl) end\n"
"  end\n"
"  return wb_append(keys, g, 'upsert', args[1], ttl)\n"
"end\n"
"\n"
"local function wb_delete(keys, args)\n"
"  local meta, g = wb_check(keys, args)\n"
"  if not meta then return redis.error_reply(g) end\n"
"  redis.call('DEL', keys[1])\n"
"  return wb_append(keys, g, 'delete', args[1], tonumber(meta.ttl))\n"
"end\n"
"\n"
"local function settle(keys, args)\n"
"  local g = redis.call('GET', keys[3])\n"
"  if g and g ~= args[1] then return 0 end\n"
"  if g then redis.call('DEL', keys[3]) end\n"
"  if args[2] == 'p' then return put({keys[1], keys[2]}, {unpack(args, 3)}) end\n"
"  return del({keys[1], keys[2]}, {unpack(args, 3)})\n"
"end\n"
"\n"
"local function deadletter(keys, args)\n"
"  if #redis.call('XRANGE', keys[1], args[1], args[1]) > 0 then return 0 end\n"
"  local r = redis.pcall('XADD', keys[1], args[1], unpack(args, 2))\n"
"  if type(r) == 'table' and r.err then redis.call('XADD', keys[1], '*', unpack(args, 2)) end\n"
"  return 1\n"
"end\n"
"\n"
"local function replay(keys, args)\n"
"  local entries = {}\n"
"  if #args > 2 then\n"
"    for i = 3, #args do\n"
"      local e = redis.call('XRANGE', keys[1], args[i], args[i])\n"
"      if #e > 0 then table.insert(entries, e[1]) end\n"
"    end\n"
"  else\n"
"    entries = redis.call('XRANGE', keys[1], '-', '+', 'COUNT', args[1])\n"
"  end\n"
"  local g = args[2]\n"
"  for _, e in ipairs(entries) do\n"
"    local f, out, key = e[2], {}, nil\n"
"    for i = 1, #f, 2 do\n"
"      if f[i] == 'key' then key = f[i + 1] end\n"
"      if f[i] ~= 'error' and f[i] ~= 'sqlstate' and f[i] ~= 'id' then\n"
"        table.insert(out, f[i]); table.insert(out, f[i + 1])\n"
"      end\n"
"    end\n"
"    local id = redis.call('XADD', keys[2], '*', unpack(out))\n"
"    if key and string.sub(key, 1, #g) == g then\n"
"      redis.call('SET', g .. '" CS_INTERNAL_PREFIX "wbid:' .. string.sub(key, #g + 1), id)\n"
"    end\n"
"    redis.call('XDEL', keys[1], e[1])\n"
"  end\n"
"  return #entries\n"
"end\n"
"\n"
"redis.register_function('cachesync_upsert', wb_upsert)\n"
"redis.register_function('cachesync_delete', wb_delete)\n"
"redis.register_function('cachesync_settle', settle)\n"
"redis.register_function('cachesync_deadletter', deadletter)\n"
"redis.register_function('cachesync_replay', replay)\n"
"redis.register_function('cachesync_put', put)\n"
"redis.register_function('cachesync_push', push)\n"
"redis.register_function('cachesync_del', del)\n"
"redis.register_function('cachesync_put_many', put_many)\n"
"redis.register_function('cachesync_del_many', del_many)\n"
"redis.register_function('cachesync_sweep', sweep)\n"
"redis.register_function('cachesync_undo', undo)\n"
"redis.register_function{function_name = 'cachesync_version',\n"
"  callback = function() return '" CS_FUNCTIONS_VERSION "' end, flags = {'no-writes'}}\n";
