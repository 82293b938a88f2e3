/*-------------------------------------------------------------------------
 *
 * reload.c
 *	  cachesync.reload(rel): rebuild a table's cache from its rows.
 *
 * Two passes.  First every row is written: pages of cachesync.batch_size
 * rows in key order, each read with its own fresh snapshot taken after the
 * page's populator version was drawn (cs_version_for_read), and sent as
 * multi-key fenced puts (cachesync_put_many).  Then every key under the
 * table's prefix whose row does not exist is removed: SCAN pages, and per
 * page a Redis-side sweep that deletes the keys whose version is older than
 * the first pass's first version (see cs_sync_orphans for why that is
 * exactly the keys without a row).  Nothing is flushed first:
 * cached rows stay readable throughout, and Redis only ever receives
 * committed rows.
 *
 * Why a fresh snapshot per page rather than one for the whole reload: a
 * row's image is always read after its version was drawn, so a write
 * committed later carries a higher version and wins; a write committed
 * earlier is in the snapshot.  One long snapshot would also be correct for
 * writes, but not for deletes: the deleted row's tombstone only lives for
 * cachesync.tombstone_ttl, and a reload running longer than that would
 * bring the deleted row back from its old snapshot.  Per page the window is
 * one page long, and no snapshot holds back vacuum for the whole reload.
 *
 * Cancel (pg_cancel_backend, statement_timeout) stops it between pages or
 * inside a Redis wait: what was written up to then are committed rows and
 * fenced deletes, so Redis is no worse than before.  Progress shows in
 * pg_stat_activity.query ("cachesync.reload: <table>: N rows ...") and in a
 * NOTICE every CS_RELOAD_NOTICE_MS; cachesync.stats keeps last_reload_at.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "pgstat.h"
#include "tcop/tcopprot.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "cachesync.h"
#include "redis.h"
#include "registry.h"
#include "shmem.h"
#include "stats.h"
#include "sync.h"
#include "version.h"

PG_FUNCTION_INFO_V1(cachesync_reload);

/* how often a running reload says how far it got */
#define CS_RELOAD_NOTICE_MS 5000

static TimestampTz last_notice = 0;

/* cs_sync_progress_hook: shows how far the reload of t got. */
static void
reload_progress(CsTable *t, CsSyncResult *sofar)
{
	char	   *msg = psprintf("cachesync.reload: \"%s\": " INT64_FORMAT " rows written",
							   get_rel_name(t->relid), sofar->pushed);

	pgstat_report_activity(STATE_RUNNING, msg);
	if (TimestampDifferenceExceeds(last_notice, GetCurrentTimestamp(), CS_RELOAD_NOTICE_MS))
	{
		ereport(NOTICE, (errmsg_internal("%s", msg + strlen("cachesync.reload: "))));
		last_notice = GetCurrentTimestamp();
	}
	pfree(msg);
}

/* Reloads one table; returns the rows loaded.  Throws when Redis fails. */
static int64
reload_table(CsTable *t)
{
	CsSyncResult r = {0};
	CsSyncResult orphans = {0};

	cs_require_select(t->relid);
	last_notice = GetCurrentTimestamp();
	if (!cs_sync_table(t, &r))
		cs_redis_raise_failure();
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("cachesync.reload: \"%s\": " INT64_FORMAT " rows written; removing keys without a row",
									get_rel_name(t->relid), r.pushed));
	if (!cs_sync_orphans(t, r.first_version, &orphans))
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
	cs_require_no_writes("cachesync.reload()");
	SPI_connect();
	cs_sync_progress_hook = reload_progress;
	PG_TRY();
	{
		if (PG_ARGISNULL(0))
			cs_registry_foreach(reload_one, &all);
		else
			all.rows = reload_table(cs_registry_get(PG_GETARG_OID(0)));
	}
	PG_FINALLY();
	{
		cs_sync_progress_hook = NULL;
		if (debug_query_string)
			pgstat_report_activity(STATE_RUNNING, debug_query_string);
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT64(all.rows);
}
