/*-------------------------------------------------------------------------
 *
 * guc.c
 *	  The cachesync.* settings.
 *
 * Connection settings are PGC_SIGHUP: every backend and the worker must
 * talk to the same Redis, and a reload makes each of them reconnect (the
 * Redis module compares the settings it connected with before each use).
 * The password alone is PGC_POSTMASTER, because a reload logs the new value
 * of every changed setting, and the password must never reach the log.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "cachesync.h"
#include "hotkeys.h"

char	   *cachesync_redis_host = NULL;
int			cachesync_redis_port = 6379;
char	   *cachesync_redis_username = NULL;
char	   *cachesync_redis_password = NULL;
int			cachesync_redis_db = 0;
int			cachesync_connect_timeout = 1000;
int			cachesync_command_timeout = 1000;
char	   *cachesync_database = NULL;
char	   *cachesync_key_prefix = NULL;
int			cachesync_on_redis_error = CS_ON_ERROR_QUEUE;
int			cachesync_batch_size = 1000;
bool		cachesync_enabled = true;
int			cachesync_max_transaction_changes = 10000;
int			cachesync_tombstone_ttl = 600000;
int			cachesync_changes_maxlen = 100000;
bool		cachesync_writeback_collapse = true;

static const struct config_enum_entry on_redis_error_options[] = {
	{"queue", CS_ON_ERROR_QUEUE, false},
	{"error", CS_ON_ERROR_ERROR, false},
	{NULL, 0, false}
};

/*
 * Returns PGC_POSTMASTER while preloading.  A library loaded later by a
 * backend may not define postmaster-only settings, and then has no worker
 * and no capture anyway.
 */
static GucContext
postmaster_context(void)
{
	return process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP;
}

/* Defines the Redis connection settings. */
static void
define_connection_gucs(void)
{
	DefineCustomStringVariable("cachesync.redis_host",
							   "Redis server host name or IP address, or a Unix socket path.",
							   "A value that starts with a slash is the path of Redis's Unix socket.",
							   &cachesync_redis_host, "127.0.0.1",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.redis_port",
							"Redis server TCP port.",
							"Ignored when cachesync.redis_host is a Unix socket path.",
							&cachesync_redis_port, 6379, 1, 65535,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("cachesync.redis_username",
							   "Redis ACL user name.",
							   "Empty means the default user; with a password set, AUTH then sends the password alone.",
							   &cachesync_redis_username, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("cachesync.redis_password",
							   "Redis password (AUTH).",
							   "Visible to superusers only and never printed in a message. Empty means no AUTH. "
							   "Changing it needs a restart: on a reload the server would log the new value.",
							   &cachesync_redis_password, "",
							   postmaster_context(), GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.redis_db",
							"Redis logical database number (SELECT).",
							"Every backend and the worker use this database; Redis Cluster supports only 0.",
							&cachesync_redis_db, 0, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.connect_timeout",
							"Longest wait for a connection to Redis to open.",
							"A backend whose Redis cannot be reached fails or queues its changes (see cachesync.on_redis_error) after this long.",
							&cachesync_connect_timeout, 1000, 1, 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.command_timeout",
							"Longest time Redis may stay silent while a command is under way.",
							"The timer restarts whenever Redis sends or accepts data, so a large pipeline is not cut short while it progresses.",
							&cachesync_command_timeout, 1000, 1, 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
}

/* Defines the read-through, hot-key and warm-up settings. */
static void
define_read_gucs(void)
{
	DefineCustomIntVariable("cachesync.hot_keys",
							"Read counters kept per table to find its hottest keys.",
							"cachesync.get() and get_many() count reads per key in an approximate top-k of this many keys per table (space-saving); prefill(rel, top_n) and warm-up use it. 0 turns counting off. Costs about 150 bytes per counter and table.",
							&cachesync_hot_keys, 1000, 0, 100000,
							postmaster_context(), 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.hot_keys_tables",
							"Tables whose hot keys are tracked, across every database.",
							"Tables read after this many are tracked already are not counted.",
							&cachesync_hot_keys_tables, 16, 1, 10000,
							postmaster_context(), 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("cachesync.warmup",
							 "Whether the worker warms the hottest keys of every table when Redis comes back empty.",
							 "Runs before write_through and async tables are loaded in full, so hot keys are served first; write_around tables get only these.",
							 &cachesync_warmup, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.warmup_keys",
							"How many of each table's hottest keys warm-up loads.",
							"At most cachesync.hot_keys are known per table.",
							&cachesync_warmup_keys, 1000, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.debug_read_pause_lock",
							"Test hook: advisory lock cachesync.get() waits for between reading a missed row and storing it.",
							"0 (the default) turns it off. Isolation tests use it to commit a writer exactly there.",
							&cachesync_debug_read_pause_lock, 0, 0, INT_MAX,
							PGC_SUSET, GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);
}

/* Defines every cachesync.* setting; called from _PG_init. */
void
cachesync_define_gucs(void)
{
	define_connection_gucs();

	DefineCustomStringVariable("cachesync.database",
							   "Database the cachesync background worker serves.",
							   "The registered tables of this database are synchronised; run one server per database to serve more.",
							   &cachesync_database, "postgres",
							   postmaster_context(), 0, NULL, NULL, NULL);
	DefineCustomStringVariable("cachesync.key_prefix",
							   "Prefix prepended to every Redis key and stream cachesync uses.",
							   "Lets several clusters share one Redis. Changing it orphans the keys written under the old prefix.",
							   &cachesync_key_prefix, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("cachesync.on_redis_error",
							 "What write_through and write_around tables do when Redis is unreachable at commit.",
							 "queue commits and lets the background worker apply the change once Redis is back; error makes the transaction fail.",
							 &cachesync_on_redis_error, CS_ON_ERROR_QUEUE,
							 on_redis_error_options,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.batch_size",
							"Number of changes or stream entries the background worker handles per transaction.",
							"Larger batches drain a backlog faster (fewer commits, longer pipelines); smaller ones hold locks and memory for less time.",
							&cachesync_batch_size, 1000, 1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("cachesync.writeback_collapse",
							 "Folds each write-back batch's entries per row and applies them with a few set-based statements.",
							 "Off applies every entry with its own statements, so that the table's triggers fire once per entry; on, entries a later entry of the same row supersedes within a batch fire no triggers and only the folded row meets the constraints.",
							 &cachesync_writeback_collapse, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("cachesync.enabled",
							 "Captures changes of registered tables; off stops capture for maintenance.",
							 "Changes made while it is off are not sent to Redis: call cachesync.reload() afterwards.",
							 &cachesync_enabled, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("cachesync.max_transaction_changes",
							"Keys a transaction keeps in memory before handing its changes to the queue.",
							"A larger transaction queues every change for the background worker, which applies them after commit instead of before COMMIT returns.",
							&cachesync_max_transaction_changes, 10000, 1, INT_MAX / 2,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("cachesync.tombstone_ttl",
							"How long Redis remembers the version of a deleted row.",
							"While it lives, no reader holding an older snapshot can put the deleted row back. Make it longer than the longest cache fill (get, reload, prefill) can take.",
							&cachesync_tombstone_ttl, 600000, 1000, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	define_read_gucs();
	DefineCustomIntVariable("cachesync.changes_maxlen",
							"About how many entries a table's change stream keeps.",
							"The worker appends with XADD MAXLEN ~ this value: Redis trims the oldest entries in whole nodes, so a stream may hold somewhat more. Consumers that fall further behind miss entries.",
							&cachesync_changes_maxlen, 100000, 1, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	MarkGUCPrefixReserved("cachesync");
}
