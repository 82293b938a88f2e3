/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Per-table counters in shared memory, and cachesync._table_stats()
 *	  behind the cachesync.stats view.
 *
 * A fixed array of CS_STATS_MAX_TABLES entries keyed by (database, table),
 * under cs_shared->lock.  Updates happen once per transaction per table, so
 * the lock is not hot.  When the array is full, new tables are not counted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "shmem.h"
#include "stats.h"

#define CS_STATS_MAX_TABLES 1024
#define CS_ERROR_LEN 256

typedef struct CsTableStats
{
	Oid			dbid;
	Oid			relid;
	int64		counters[CS_NUM_STATS];
	TimestampTz last_error_at;
	char		last_error[CS_ERROR_LEN];
	TimestampTz last_reload_at; /* 0: none since the server started */
	int64		last_validation_id; /* 0: none */
} CsTableStats;

typedef struct CsStatsArray
{
	int			n;
	CsTableStats entries[CS_STATS_MAX_TABLES];
} CsStatsArray;

static CsStatsArray *cs_stats = NULL;

PG_FUNCTION_INFO_V1(cachesync_table_stats);

/* Returns the shared memory the counters need. */
Size
cs_stats_shmem_size(void)
{
	return sizeof(CsStatsArray);
}

/* Creates or attaches to the counters; called under AddinShmemInitLock. */
void
cs_stats_shmem_init(void)
{
	bool		found;

	cs_stats = ShmemInitStruct("cachesync stats", sizeof(CsStatsArray), &found);
	if (!found)
		memset(cs_stats, 0, sizeof(CsStatsArray));
}

/* Returns the entry of relid in this database, adding it; NULL when full. */
static CsTableStats *
stats_entry(Oid relid)
{
	for (int i = 0; i < cs_stats->n; i++)
	{
		CsTableStats *e = &cs_stats->entries[i];

		if (e->relid == relid && e->dbid == MyDatabaseId)
			return e;
	}
	if (cs_stats->n >= CS_STATS_MAX_TABLES)
		return NULL;
	cs_stats->entries[cs_stats->n].dbid = MyDatabaseId;
	cs_stats->entries[cs_stats->n].relid = relid;
	return &cs_stats->entries[cs_stats->n++];
}

/* Adds n to a counter of relid.  Never throws. */
void
cs_stats_add(Oid relid, CsStat stat, int64 n)
{
	CsTableStats *e;

	if (cs_stats == NULL || n == 0)
		return;
	LWLockAcquire(cs_shared->lock, LW_EXCLUSIVE);
	e = stats_entry(relid);
	if (e)
		e->counters[stat] += n;
	LWLockRelease(cs_shared->lock);
}

/* Sets a gauge of relid.  Never throws. */
void
cs_stats_set(Oid relid, CsStat stat, int64 value)
{
	CsTableStats *e;

	if (cs_stats == NULL)
		return;
	LWLockAcquire(cs_shared->lock, LW_EXCLUSIVE);
	e = stats_entry(relid);
	if (e)
		e->counters[stat] = value;
	LWLockRelease(cs_shared->lock);
}

/* Counts an error of relid and keeps its message.  Never throws. */
void
cs_stats_error(Oid relid, const char *message)
{
	CsTableStats *e;

	if (cs_stats == NULL)
		return;
	LWLockAcquire(cs_shared->lock, LW_EXCLUSIVE);
	e = stats_entry(relid);
	if (e)
	{
		e->counters[CS_STAT_ERRORS]++;
		strlcpy(e->last_error, message, CS_ERROR_LEN);
		e->last_error_at = GetCurrentTimestamp();
	}
	LWLockRelease(cs_shared->lock);
}

/* Notes that relid was just reloaded.  Never throws. */
void
cs_stats_reloaded(Oid relid)
{
	CsTableStats *e;

	if (cs_stats == NULL)
		return;
	LWLockAcquire(cs_shared->lock, LW_EXCLUSIVE);
	e = stats_entry(relid);
	if (e)
		e->last_reload_at = GetCurrentTimestamp();
	LWLockRelease(cs_shared->lock);
}

/* Notes the latest validation job of relid.  Never throws. */
void
cs_stats_validation(Oid relid, int64 job)
{
	CsTableStats *e;

	if (cs_stats == NULL)
		return;
	LWLockAcquire(cs_shared->lock, LW_EXCLUSIVE);
	e = stats_entry(relid);
	if (e)
		e->last_validation_id = job;
	LWLockRelease(cs_shared->lock);
}

/*
 * cachesync._table_stats() RETURNS TABLE(relid oid, pushed bigint,
 *		invalidated bigint, errors bigint, hits bigint, misses bigint,
 *		wb_applied bigint, wb_dead_lettered bigint, queued bigint,
 *		wb_pending bigint, wb_oldest_ms bigint,
 *		published bigint, publish_lost bigint, changes_appended bigint,
 *		last_error text, last_error_at timestamptz,
 *		last_reload_at timestamptz, last_validation_id bigint)
 */
Datum
cachesync_table_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	cs_shmem_require();
	InitMaterializedSRF(fcinfo, 0);
	LWLockAcquire(cs_shared->lock, LW_SHARED);
	for (int i = 0; i < cs_stats->n; i++)
	{
		CsTableStats *e = &cs_stats->entries[i];
		Datum		values[CS_NUM_STATS + 5];
		bool		nulls[CS_NUM_STATS + 5] = {0};

		if (e->dbid != MyDatabaseId)
			continue;
		values[0] = ObjectIdGetDatum(e->relid);
		for (int s = 0; s < CS_NUM_STATS; s++)
			values[s + 1] = Int64GetDatum(e->counters[s]);
		values[CS_NUM_STATS + 1] = CStringGetTextDatum(e->last_error);
		nulls[CS_NUM_STATS + 1] = (e->last_error[0] == '\0');
		values[CS_NUM_STATS + 2] = TimestampTzGetDatum(e->last_error_at);
		nulls[CS_NUM_STATS + 2] = (e->last_error_at == 0);
		values[CS_NUM_STATS + 3] = TimestampTzGetDatum(e->last_reload_at);
		nulls[CS_NUM_STATS + 3] = (e->last_reload_at == 0);
		values[CS_NUM_STATS + 4] = Int64GetDatum(e->last_validation_id);
		nulls[CS_NUM_STATS + 4] = (e->last_validation_id == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(cs_shared->lock);
	return (Datum) 0;
}
