/*-------------------------------------------------------------------------
 *
 * reload.c
 *	  cachesync.reload(rel): rebuild a table's cache from its rows.
 *
 * Every row is written (pages in key order, each with a populator version
 * and a fresh snapshot, so writes committed meanwhile win), then every key
 * under the table's prefix whose row is gone is removed (SCAN pages, fenced
 * deletes).  Nothing is flushed first: cached rows stay readable throughout.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/lsyscache.h"

#include "cachesync.h"
#include "redis.h"
#include "registry.h"
#include "shmem.h"
#include "stats.h"
#include "sync.h"
#include "version.h"

PG_FUNCTION_INFO_V1(cachesync_reload);

/* Reloads one table; returns the rows loaded.  Throws when Redis fails. */
static int64
reload_table(CsTable *t)
{
	CsSyncResult r = {0};
	CsSyncResult orphans = {0};

	cs_require_select(t->relid);
	if (!cs_sync_table(t, &r) || !cs_sync_prefix(t, cs_version_for_read(), &orphans))
		cs_redis_raise_failure();
	cs_stats_add(t->relid, CS_STAT_PUSHED, r.pushed);
	cs_stats_add(t->relid, CS_STAT_INVALIDATED, orphans.removed);
	cs_stats_reloaded(t->relid);
	ereport(NOTICE,
			(errmsg("reloaded " INT64_FORMAT " rows of \"%s\"; removed " INT64_FORMAT " keys without a row",
					r.pushed, get_rel_name(t->relid), orphans.removed)));
	return r.pushed;
}

typedef struct ReloadAll
{
	int64		rows;
} ReloadAll;

/* cs_registry_foreach callback for reload(NULL). */
static void
reload_one(CsTable *t, void *arg)
{
	if (!t->broken)
		((ReloadAll *) arg)->rows += reload_table(t);
}

/* cachesync.reload(rel regclass DEFAULT NULL) RETURNS bigint */
Datum
cachesync_reload(PG_FUNCTION_ARGS)
{
	ReloadAll	all = {0};

	cs_shmem_require();
	if (GetTopTransactionIdIfAny() != InvalidTransactionId)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cachesync.reload() cannot run in a transaction that has written data"),
				 errdetail("It reads the latest committed rows, which would include this transaction's uncommitted changes."),
				 errhint("Run it in its own transaction.")));
	SPI_connect();
	if (PG_ARGISNULL(0))
		cs_registry_foreach(reload_one, &all);
	else
		all.rows = reload_table(cs_registry_get(PG_GETARG_OID(0)));
	SPI_finish();
	PG_RETURN_INT64(all.rows);
}
