/*-------------------------------------------------------------------------
 *
 * warmup.c
 *	  Warming the hottest keys: cachesync.prefill(rel, top_n), and the
 *	  worker's warm-up when Redis comes back empty.
 *
 * Both take a table's hottest keys from the read counters (hotkeys.c) and
 * sync them through the populator path, cachesync.batch_size keys per
 * pipeline, each batch with its own version drawn before its fresh
 * snapshot: a write committed meanwhile wins, and a hot key whose row is
 * gone is removed (fenced), never brought back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/lsyscache.h"

#include "cachesync.h"
#include "hotkeys.h"
#include "keys.h"
#include "redis.h"
#include "registry.h"
#include "shmem.h"
#include "stats.h"
#include "sync.h"
#include "version.h"

bool		cachesync_warmup = true;
int			cachesync_warmup_keys = 1000;

PG_FUNCTION_INFO_V1(cachesync_prefill_top);

/*
 * Syncs the top_n hottest keys of t in batches; adds to *r.  Returns false
 * when Redis failed.  SPI is connected.
 */
static bool
warm_table(CsTable *t, int top_n, CsSyncResult *r)
{
	List	   *hot = cs_hot_top(t->relid, top_n);
	List	   *batch = NIL;
	ListCell   *lc;

	foreach(lc, hot)
	{
		StringInfoData key;

		initStringInfo(&key);
		cs_key_start(&key, t);
		appendStringInfoString(&key, lfirst(lc));
		batch = lappend(batch, key.data);
		if (list_length(batch) >= cachesync_batch_size || lnext(hot, lc) == NULL)
		{
			if (!cs_sync_keys(t, batch, cs_version_for_read(), r))
				return false;
			batch = NIL;
		}
	}
	return true;
}

/* cachesync.prefill(rel regclass, top_n integer) RETURNS bigint */
Datum
cachesync_prefill_top(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	int32		top_n = PG_GETARG_INT32(1);
	CsTable    *t;
	CsSyncResult r = {0};

	cs_shmem_require();
	if (top_n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("top_n must not be negative")));
	cs_require_no_writes("cachesync.prefill()");
	t = cs_registry_get(relid);
	cs_require_select(relid);
	SPI_connect();
	if (!warm_table(t, top_n, &r))
		cs_redis_raise_failure();
	SPI_finish();
	cs_stats_add(relid, CS_STAT_PUSHED, r.pushed);
	PG_RETURN_INT64(r.pushed);
}

typedef struct WarmState
{
	bool		failed;
	int			tables;
	int64		rows;
} WarmState;

/* cs_registry_foreach callback: warms one table's hot keys. */
static void
warm_one(CsTable *t, void *arg)
{
	WarmState  *st = arg;
	CsSyncResult r = {0};

	/* write_back tables start in Redis: a row read from the table may be older */
	if (st->failed || t->broken || t->mode == CS_MODE_WRITE_BACK)
		return;
	if (!warm_table(t, cachesync_warmup_keys, &r))
		st->failed = true;
	cs_stats_add(t->relid, CS_STAT_PUSHED, r.pushed);
	if (r.pushed > 0)
		st->tables++;
	st->rows += r.pushed;
}

/*
 * The worker's warm-up, when Redis came back empty: loads the hottest keys
 * of every table (cachesync.warmup_keys each) before anything else.
 * Returns false when Redis failed.  Runs in the worker's transaction, SPI
 * connected.
 */
bool
cs_warmup(void)
{
	WarmState	st = {0};

	if (!cachesync_warmup || cachesync_warmup_keys == 0)
		return true;
	cs_registry_foreach(warm_one, &st);
	if (!st.failed && st.rows > 0)
		ereport(LOG,
				(errmsg("cachesync worker: warmed " INT64_FORMAT " hot keys of %d tables",
						st.rows, st.tables)));
	return !st.failed;
}
