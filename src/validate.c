/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  cachesync.validate(): compare a table's rows with their cache entries
 *	  in a dynamic background worker, and repair the drift when asked.
 *
 * validate() records a job in cachesync.validation_jobs, starts a dynamic
 * background worker for it and returns the job id.  The worker first waits
 * for the calling transaction to end (an aborted validate() leaves no row:
 * the worker then simply exits), marks the job running and walks:
 *
 * - the rows, one page of cachesync.batch_size rows per transaction, in key
 *   order, with one pipelined GET (json) or HGETALL (hash) per page.  Values
 *   are compared as values: JSON as jsonb (key order and whitespace do not
 *   count), hashes as field sets.  An absent key is "missing", a different
 *   value (or a key of the wrong type) "stale".
 * - the keys under the table's prefix, one SCAN page per transaction.  A key
 *   that is no row's key (its row is gone, or it cannot be a row key of the
 *   table) is "orphaned"; the table's streams are not rows and are skipped.
 *
 * A page with drift is looked at again after cs_version_for_read() has
 * waited out every cache push in flight, so a write committing while the
 * page was read is not counted; only what the second look confirms counts.
 * Repair goes through the populator path (cs_sync_keys with a version drawn
 * before its fresh snapshot): the committed row is written or the key
 * removed, fenced, so a value changed while the job ran is never overwritten
 * by an older one.
 *
 * After every page the worker writes its counters to the job row and reads
 * back the state: cancel_validation() sets it to cancelled and the worker
 * stops there.  The row keeps the server generation and the worker's pid:
 * a job whose worker is gone (server restart, crash, terminate) shows as
 * failed in cachesync.validations and is marked so by the next validate().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "cachesync.h"
#include "keys.h"
#include "redis.h"
#include "registry.h"
#include "rowformat.h"
#include "shmem.h"
#include "stats.h"
#include "sync.h"
#include "version.h"

PG_FUNCTION_INFO_V1(cachesync_validate);
PG_FUNCTION_INFO_V1(cachesync_job_alive);
PG_FUNCTION_INFO_V1(cachesync_wait_job);

PGDLLEXPORT void cachesync_validate_main(Datum arg);

/* how many example keys of each kind a job keeps */
#define CS_EXAMPLES 5
/* keys asked for per SCAN call */
#define CS_VALIDATE_SCAN_COUNT "1000"

/* what validate() hands its worker (bgw_extra) */
typedef struct CsJobStart
{
	Oid			dbid;
	Oid			userid;			/* who called validate() (for the log) */
	TransactionId xid;			/* validate()'s transaction, to wait for */
	int64		job;
} CsJobStart;

typedef enum CsDrift
{
	CS_DRIFT_NONE,
	CS_DRIFT_MISSING,
	CS_DRIFT_STALE,
	CS_DRIFT_ORPHANED,
	CS_NUM_DRIFT
} CsDrift;

static const char *const drift_names[CS_NUM_DRIFT] = {NULL, "missing", "stale", "orphaned"};

/* A job's progress, kept across its transactions. */
typedef struct CsJob
{
	int64		id;
	bool		repair;
	int64		rows_checked;
	int64		counts[CS_NUM_DRIFT];
	int64		repaired;
	List	   *examples[CS_NUM_DRIFT];
	MemoryContext cxt;			/* lives as long as the job */
	bool		cancelled;
} CsJob;

/* ---------------------------------------------------------------- */
/* calling backend                                                  */
/* ---------------------------------------------------------------- */

/* Runs an SPI statement with int8/other args; throws on failure. */
static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc != expect)
		elog(ERROR, "SPI_execute_with_args failed: %s (%s)", SPI_result_code_string(rc), sql);
}

/* Marks jobs whose worker is gone as failed. */
static void
fail_interrupted_jobs(void)
{
	spi_exec("UPDATE cachesync.validation_jobs"
			 "   SET state = 'failed', finished_at = now(),"
			 "       error = 'interrupted: its worker exited (server restart, crash or termination)'"
			 " WHERE state IN ('queued', 'running')"
			 "   AND NOT cachesync._job_alive(generation, pid)",
			 0, NULL, NULL, NULL, SPI_OK_UPDATE);
}

/* Throws when a job that covers rel (InvalidOid: any table) is active. */
static void
refuse_overlap(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	char		nulls[1] = {OidIsValid(relid) ? ' ' : 'n'};
	bool		isnull;
	int64		other;

	spi_exec("SELECT id FROM cachesync.validation_jobs"
			 " WHERE state IN ('queued', 'running')"
			 "   AND ($1 IS NULL OR rel IS NULL OR rel = $1::regclass)"
			 " ORDER BY id LIMIT 1",
			 1, types, values, nulls, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	other = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_IN_USE),
			 errmsg("validation job " INT64_FORMAT " is already running on %s",
					other, OidIsValid(relid) ? "this table" : "a registered table"),
			 errdetail("Two validations never run on one table at once."),
			 errhint("Wait for it with cachesync.wait_validation(" INT64_FORMAT
					 ") or stop it with cachesync.cancel_validation(" INT64_FORMAT ").",
					 other, other)));
}

/* Inserts the job row; returns its id. */
static int64
insert_job(Oid relid, bool repair)
{
	Oid			types[3] = {OIDOID, BOOLOID, INT8OID};
	Datum		values[3] = {ObjectIdGetDatum(relid), BoolGetDatum(repair),
	Int64GetDatum((int64) cs_shared->generation)};
	char		nulls[3] = {OidIsValid(relid) ? ' ' : 'n', ' ', ' '};
	bool		isnull;

	spi_exec("INSERT INTO cachesync.validation_jobs (rel, repair, generation)"
			 " VALUES ($1::regclass, $2, $3) RETURNING id",
			 3, types, values, nulls, SPI_OK_INSERT_RETURNING);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Starts the job's worker and waits until it runs; returns its pid. */
static pid_t
start_worker(int64 job)
{
	BackgroundWorker w = {0};
	BackgroundWorkerHandle *handle;
	CsJobStart	start = {MyDatabaseId, GetUserId(), GetTopTransactionId(), job};
	pid_t		pid;

	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "cachesync");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "cachesync_validate_main");
	snprintf(w.bgw_name, BGW_MAXLEN, "cachesync validation " INT64_FORMAT, job);
	snprintf(w.bgw_type, BGW_MAXLEN, "cachesync validation");
	memcpy(w.bgw_extra, &start, sizeof(start));
	w.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&w, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a background worker for the validation"),
				 errhint("Raise max_worker_processes, or wait for running workers to finish.")));
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("the validation's background worker did not start"),
				 errhint("See the server log.")));
	return pid;
}

/* cs_registry_foreach callback: the caller must be able to read t. */
static void
require_select_of(CsTable *t, void *arg)
{
	cs_require_select(t->relid);
}

/* cachesync.validate(rel regclass DEFAULT NULL, repair boolean DEFAULT false) RETURNS bigint */
Datum
cachesync_validate(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_ARGISNULL(0) ? InvalidOid : PG_GETARG_OID(0);
	bool		repair = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	int64		job;
	pid_t		pid;

	cs_shmem_require();
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("repair must not be NULL")));
	if (OidIsValid(relid))
	{
		(void) cs_registry_get(relid);
		cs_require_select(relid);
	}
	else
		cs_registry_foreach(require_select_of, NULL);
	SPI_connect();
	fail_interrupted_jobs();
	/* serialises validate() calls: the overlap check sees every earlier job */
	spi_exec("LOCK TABLE cachesync.validation_jobs IN SHARE ROW EXCLUSIVE MODE",
			 0, NULL, NULL, NULL, SPI_OK_UTILITY);
	refuse_overlap(relid);
	job = insert_job(relid, repair);
	pid = start_worker(job);
	{
		Oid			types[2] = {INT8OID, INT4OID};
		Datum		values[2] = {Int64GetDatum(job), Int32GetDatum(pid)};

		spi_exec("UPDATE cachesync.validation_jobs SET pid = $2 WHERE id = $1",
				 2, types, values, NULL, SPI_OK_UPDATE);
	}
	SPI_finish();
	PG_RETURN_INT64(job);
}

/*
 * cachesync._job_alive(generation bigint, pid integer) RETURNS boolean:
 * whether a job's worker may still be running.  A job of an earlier server
 * generation is not; one with a pid needs that process.
 */
Datum
cachesync_job_alive(PG_FUNCTION_ARGS)
{
	cs_shmem_require();
	if (PG_ARGISNULL(0) || (uint64) PG_GETARG_INT64(0) != cs_shared->generation)
		PG_RETURN_BOOL(false);
	if (PG_ARGISNULL(1))
		PG_RETURN_BOOL(true);	/* validate() has not committed yet */
	/* not BackendPidGetProc(): a worker just forked is not in the proc array yet */
	PG_RETURN_BOOL(kill(PG_GETARG_INT32(1), 0) == 0 || errno == EPERM);
}

/*
 * cachesync._wait_job(id bigint, timeout interval) RETURNS void: waits
 * until the job is no longer queued or running, polling its row and
 * sleeping on the latch in between, so a cancel interrupts it at once.
 */
Datum
cachesync_wait_job(PG_FUNCTION_ARGS)
{
	int64		job = PG_GETARG_INT64(0);
	int64		timeout_ms = cs_interval_ms(PG_GETARG_INTERVAL_P(1));
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job)};
	long		nap = 10;

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cachesync.wait_validation() needs READ COMMITTED"),
				 errdetail("In this isolation level the job's row would never change.")));
	SPI_connect();
	for (;;)
	{
		char	   *state;

		bool		isnull;
		TransactionId xmin;

		spi_exec("SELECT v.state, j.xmin FROM cachesync.validations v"
				 "  JOIN cachesync.validation_jobs j ON j.id = v.id WHERE v.id = $1",
				 1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("validation job " INT64_FORMAT " does not exist", job)));
		state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (strcmp(state, "queued") != 0 && strcmp(state, "running") != 0)
			break;
		/* the worker waits for validate()'s transaction: waiting in it would never end */
		xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (TransactionIdIsCurrentTransactionId(xmin))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("validation job " INT64_FORMAT " was started by this transaction", job),
					 errdetail("Its worker starts once the transaction that called cachesync.validate() has committed."),
					 errhint("Commit first, then call cachesync.wait_validation().")));
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("validation job " INT64_FORMAT " did not finish within the timeout", job),
					 errhint("Wait again, or stop it with cachesync.cancel_validation(" INT64_FORMAT ").", job)));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 nap, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		nap = Min(nap * 2, 200);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------- */
/* the job's worker                                                 */
/* ---------------------------------------------------------------- */

/* Notes a drifted key: counts it and keeps it as an example. */
static void
note_drift(CsJob *job, CsDrift kind, const char *key)
{
	job->counts[kind]++;
	if (list_length(job->examples[kind]) < CS_EXAMPLES)
	{
		MemoryContext old = MemoryContextSwitchTo(job->cxt);

		job->examples[kind] = lappend(job->examples[kind], pstrdup(key));
		MemoryContextSwitchTo(old);
	}
}

/* Returns the job's examples as a JSON object text. */
static char *
examples_json(CsJob *job)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int k = CS_DRIFT_MISSING; k < CS_NUM_DRIFT; k++)
	{
		ListCell   *lc;

		appendStringInfo(&buf, "%s\"%s\": [", k == CS_DRIFT_MISSING ? "" : ", ", drift_names[k]);
		foreach(lc, job->examples[k])
		{
			if (lc != list_head(job->examples[k]))
				appendStringInfoString(&buf, ", ");
			escape_json(&buf, lfirst(lc));
		}
		appendStringInfoChar(&buf, ']');
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * Writes the job's counters to its row; returns false when the job is no
 * longer running (cancelled).
 */
static bool
save_progress(CsJob *job)
{
	Oid			types[7] = {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID};
	Datum		values[7] = {Int64GetDatum(job->id), Int64GetDatum(job->rows_checked),
		Int64GetDatum(job->counts[CS_DRIFT_MISSING]), Int64GetDatum(job->counts[CS_DRIFT_STALE]),
		Int64GetDatum(job->counts[CS_DRIFT_ORPHANED]), Int64GetDatum(job->repaired),
	CStringGetTextDatum(examples_json(job))};
	char	   *state;

	spi_exec("UPDATE cachesync.validation_jobs"
			 "   SET rows_checked = $2, missing = $3, stale = $4, orphaned = $5,"
			 "       repaired = $6, examples = $7::jsonb"
			 " WHERE id = $1 RETURNING state",
			 7, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return false;
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	return strcmp(state, "running") == 0;
}

/* Returns true when two JSON texts hold the same value (as jsonb). */
static bool
json_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool equal = false;

	if (alen == blen && memcmp(a, b, alen) == 0)
		return true;
	/* jsonb_in throws on text it refuses: not a value, so not equal */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Datum		ja = DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(a, alen)));
		Datum		jb = DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(b, blen)));

		equal = DatumGetBool(DirectFunctionCall2(jsonb_eq, ja, jb));
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return equal;
}

/* Returns true when a HGETALL reply holds exactly the value's fields. */
static bool
hash_equal(CsValue *v, CsReply *r)
{
	if (r->nelem != (size_t) v->nargs)
		return false;
	for (size_t i = 0; i + 1 < r->nelem; i += 2)
	{
		bool		found = false;

		for (int j = 0; j + 1 < v->nargs && !found; j += 2)
		{
			if (r->elem[i]->len == v->lens[j] &&
				memcmp(r->elem[i]->str, v->args[j], v->lens[j]) == 0)
			{
				if (r->elem[i + 1]->len != v->lens[j + 1] ||
					memcmp(r->elem[i + 1]->str, v->args[j + 1], v->lens[j + 1]) != 0)
					return false;
				found = true;
			}
		}
		if (!found)
			return false;
	}
	return true;
}

/* Classifies the cache entry r of a row whose expected value is v. */
static CsDrift
classify(CsTable *t, CsValue *v, CsReply *r)
{
	if (r->type == CS_REPLY_NIL || (r->type == CS_REPLY_ARRAY && r->nelem == 0))
		return CS_DRIFT_MISSING;
	if (t->format == CS_FORMAT_JSON)
	{
		if (r->type != CS_REPLY_STRING)
			return CS_DRIFT_STALE;	/* WRONGTYPE: a hash where a string belongs */
		return json_equal(r->str, r->len, v->args[0], v->lens[0]) ? CS_DRIFT_NONE : CS_DRIFT_STALE;
	}
	if (r->type != CS_REPLY_ARRAY)
		return CS_DRIFT_STALE;
	return hash_equal(v, r) ? CS_DRIFT_NONE : CS_DRIFT_STALE;
}

/* Returns the query reading the page of t's rows after the given key. */
static char *
rows_page_query(CsTable *t, bool first)
{
	StringInfoData q;
	StringInfoData order;
	char	   *rel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(t->relid)),
												 get_rel_name(t->relid));

	initStringInfo(&order);
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&order, "%sr.%s", i ? ", " : "",
						 quote_identifier(get_attname(t->relid, t->key_attnums[i], false)));
	initStringInfo(&q);
	/* (r.*), not r: a column named r would be read instead of the row */
	appendStringInfo(&q, "SELECT (r.*)::%s FROM %s r", rel, rel);
	if (!first)
	{
		appendStringInfo(&q, " WHERE (%s) > (", order.data);
		for (int i = 0; i < t->nkeys; i++)
			appendStringInfo(&q, "%s$%d::%s", i ? ", " : "", i + 1,
							 format_type_with_typemod(t->key_types[i], t->key_typmods[i]));
		appendStringInfoChar(&q, ')');
	}
	appendStringInfo(&q, " ORDER BY %s LIMIT %d", order.data, cachesync_batch_size);
	return q.data;
}

/* One page of rows compared with Redis. */
typedef struct CsRowsPage
{
	int			n;
	char	  **keys;
	CsDrift    *drift;
	bool		any;			/* some drift */
	char	   *last;			/* the last row's key */
} CsRowsPage;

/*
 * Reads the page of t's rows after last (NULL: the first) with a fresh
 * snapshot and compares each with its cache entry, read in one pipeline.
 */
static void
compare_rows_page(CsTable *t, char **last, CsRowsPage *pg)
{
	Oid		   *types = palloc(sizeof(Oid) * t->nkeys);
	Datum	   *args = palloc(sizeof(Datum) * t->nkeys);
	CsValue   **vals;
	CsPipeline *p = cs_pipeline_create();
	CsReply   **replies;
	Relation	rel;
	Snapshot	snap;
	int			rc;
	bool		ignore_missing = (t->mode == CS_MODE_WRITE_AROUND || t->ttl_ms > 0);
	CsAsOwner	save;

	cs_become_owner(t->relid, &save);
	for (int i = 0; i < t->nkeys; i++)
	{
		types[i] = TEXTOID;
		if (last)
			args[i] = CStringGetTextDatum(last[i]);
	}
	snap = RegisterSnapshot(GetLatestSnapshot());
	{
		SPIPlanPtr	plan = SPI_prepare(rows_page_query(t, last == NULL), last ? t->nkeys : 0, types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		rc = SPI_execute_snapshot(plan, args, NULL, snap, InvalidSnapshot, true, false, 0);
	}
	UnregisterSnapshot(snap);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read rows of \"%s\"", get_rel_name(t->relid));

	pg->n = SPI_processed;
	pg->keys = palloc(sizeof(char *) * Max(pg->n, 1));
	pg->drift = palloc0(sizeof(CsDrift) * Max(pg->n, 1));
	pg->any = false;
	vals = palloc(sizeof(CsValue *) * Max(pg->n, 1));
	rel = relation_open(t->relid, AccessShareLock);
	for (int r = 0; r < pg->n; r++)
	{
		bool		isnull;
		HeapTupleHeader hdr = DatumGetHeapTupleHeader(SPI_getbinval(SPI_tuptable->vals[r],
																	 SPI_tuptable->tupdesc, 1, &isnull));
		HeapTupleData tuple;

		cs_row_tuple(&tuple, hdr, t->relid);
		pg->keys[r] = cs_row_key(t, &tuple, RelationGetDescr(rel));
		vals[r] = cs_row_value(t, &tuple, RelationGetDescr(rel));
		cs_pipeline_append_strs(p, 2, (const char *[]) {
			t->format == CS_FORMAT_JSON ? "GET" : "HGETALL", pg->keys[r]});
	}
	relation_close(rel, AccessShareLock);
	cs_stop_being_owner(&save);
	pg->last = pg->n > 0 ? pg->keys[pg->n - 1] : NULL;
	if (pg->n == 0)
		return;
	replies = cs_redis_run(p);
	for (int r = 0; r < pg->n; r++)
	{
		pg->drift[r] = classify(t, vals[r], replies[r]);
		if (pg->drift[r] == CS_DRIFT_MISSING && ignore_missing)
			pg->drift[r] = CS_DRIFT_NONE;
		pg->any |= (pg->drift[r] != CS_DRIFT_NONE);
	}
}

/* Repairs keys of t through the fenced populator path. */
static void
repair_keys(CsJob *job, CsTable *t, List *keys)
{
	CsSyncResult res = {0};

	if (keys == NIL || !job->repair)
		return;
	if (!cs_sync_keys(t, keys, cs_version_for_read(), &res))
		cs_redis_raise_failure();
	job->repaired += list_length(keys);
}

/*
 * Validates one page of rows of t after *last; advances *last (NULL at
 * the end, kept in the job's context).  Returns false at the end.
 */
static bool
validate_rows_page(CsJob *job, CsTable *t, char ***last)
{
	CsRowsPage	pg;
	List	   *drifted = NIL;

	compare_rows_page(t, *last, &pg);
	if (pg.any)
	{
		/* look again once every push in flight has landed: count only what stays */
		(void) cs_version_for_read();
		compare_rows_page(t, *last, &pg);
	}
	for (int r = 0; r < pg.n; r++)
	{
		if (pg.drift[r] == CS_DRIFT_NONE)
			continue;
		note_drift(job, pg.drift[r], pg.keys[r]);
		drifted = lappend(drifted, pg.keys[r]);
	}
	job->rows_checked += pg.n;
	repair_keys(job, t, drifted);
	if (pg.n < cachesync_batch_size)
		return false;
	{
		char	  **values = cs_key_parse(t, pg.last, strlen(pg.last));
		MemoryContext old = MemoryContextSwitchTo(job->cxt);

		*last = palloc(sizeof(char *) * t->nkeys);
		for (int i = 0; i < t->nkeys; i++)
			(*last)[i] = pstrdup(values[i]);
		MemoryContextSwitchTo(old);
	}
	return true;
}

/* Returns those of keys that still exist in Redis. */
static List *
still_in_redis(List *keys)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **r;
	List	   *result = NIL;
	ListCell   *lc;
	int			i = 0;

	if (keys == NIL)
		return NIL;
	foreach(lc, keys)
		cs_pipeline_append_strs(p, 2, (const char *[]) {"EXISTS", lfirst(lc)});
	r = cs_redis_run(p);
	foreach(lc, keys)
	{
		if (r[i]->type == CS_REPLY_INTEGER && r[i]->integer > 0)
			result = lappend(result, lfirst(lc));
		i++;
	}
	return result;
}

/*
 * Validates one SCAN page of t's prefix from *cursor (kept in the job's
 * context).  Returns false once the scan is complete.
 */
static bool
validate_keys_page(CsJob *job, CsTable *t, char **cursor)
{
	char	   *pattern = cs_key_glob_pattern(psprintf("%s%s", cachesync_key_prefix, t->key_prefix));
	CsReply    *page = cs_redis_command_strs(6, (const char *[]) {"SCAN", *cursor, "MATCH",
		pattern, "COUNT", CS_VALIDATE_SCAN_COUNT});
	List	   *keys = NIL;
	List	   *orphans;
	ListCell   *lc;

	cs_redis_check_reply(page, "SCAN");
	if (page->type != CS_REPLY_ARRAY || page->nelem != 2)
		elog(ERROR, "unexpected reply to SCAN");
	for (size_t i = 0; i < page->elem[1]->nelem; i++)
		keys = lappend(keys, page->elem[1]->elem[i]->str);
	orphans = cs_orphans_among(t, keys);
	if (orphans != NIL)
	{
		/* a row committing or a key being removed just now is not drift */
		(void) cs_version_for_read();
		orphans = still_in_redis(cs_orphans_among(t, orphans));
	}
	foreach(lc, orphans)
		note_drift(job, CS_DRIFT_ORPHANED, lfirst(lc));
	repair_keys(job, t, orphans);
	*cursor = MemoryContextStrdup(job->cxt, page->elem[0]->str);
	return strcmp(*cursor, "0") != 0;
}

/* Starts a unit of work of the worker: a transaction with SPI. */
static void
begin_step(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Ends a unit of work: commits. */
static void
end_step(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
}

/*
 * Validates table relid, page by page, one transaction each.  Returns
 * false when the job was cancelled.
 */
static bool
validate_table(CsJob *job, Oid relid)
{
	char	  **last = NULL;
	char	   *cursor = MemoryContextStrdup(job->cxt, "0");
	bool		more = true;
	MemoryContext page_cxt = AllocSetContextCreate(TopMemoryContext, "cachesync validate page",
												   ALLOCSET_DEFAULT_SIZES);

	while (more)
	{
		CsTable    *t;

		CHECK_FOR_INTERRUPTS();
		begin_step("validating rows");
		MemoryContextSwitchTo(page_cxt);
		t = cs_registry_lookup(relid);
		if (t == NULL || t->broken)
		{
			end_step();
			MemoryContextDelete(page_cxt);
			return true;		/* unregistered meanwhile: nothing to compare */
		}
		more = validate_rows_page(job, t, &last);
		if (!more)
			last = NULL;
		if (!save_progress(job))
			job->cancelled = true;
		end_step();
		MemoryContextReset(page_cxt);
		if (job->cancelled)
			break;
	}
	more = !job->cancelled;
	while (more)
	{
		CsTable    *t;

		CHECK_FOR_INTERRUPTS();
		begin_step("validating keys");
		MemoryContextSwitchTo(page_cxt);
		t = cs_registry_lookup(relid);
		more = (t != NULL && !t->broken) && validate_keys_page(job, t, &cursor);
		if (!save_progress(job))
			job->cancelled = true;
		end_step();
		MemoryContextReset(page_cxt);
		if (job->cancelled)
			break;
	}
	MemoryContextDelete(page_cxt);
	return !job->cancelled;
}

/* Marks the job running; returns its table (InvalidOid: all), false if gone. */
static pg_noinline bool
claim_job(CsJob *job, Oid *relid)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job->id)};
	bool		isnull;
	bool		found;

	begin_step("starting a validation");
	spi_exec("UPDATE cachesync.validation_jobs SET state = 'running', started_at = now()"
			 " WHERE id = $1 AND state = 'queued' RETURNING rel::oid, repair",
			 1, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	found = (SPI_processed == 1);
	if (found)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		*relid = isnull ? InvalidOid : DatumGetObjectId(d);
		job->repair = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	end_step();
	return found;
}

/* Returns the registered tables (all of them, or just relid). */
static List *
job_tables(Oid relid)
{
	List	   *rels = NIL;
	MemoryContext old;

	if (OidIsValid(relid))
		return list_make1_oid(relid);
	begin_step("listing registered tables");
	spi_exec("SELECT rel::oid FROM cachesync.registrations ORDER BY rel::oid",
			 0, NULL, NULL, NULL, SPI_OK_SELECT);
	old = MemoryContextSwitchTo(TopMemoryContext);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		rels = lappend_oid(rels, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[r],
																SPI_tuptable->tupdesc, 1, &isnull)));
	}
	MemoryContextSwitchTo(old);
	end_step();
	return rels;
}

/* Records how the job ended (state done or failed) unless it was cancelled. */
static void
finish_job(CsJob *job, const char *state, const char *error)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3] = {Int64GetDatum(job->id), CStringGetTextDatum(state),
	error ? CStringGetTextDatum(error) : (Datum) 0};
	char		nulls[3] = {' ', ' ', error ? ' ' : 'n'};

	begin_step("finishing a validation");
	(void) save_progress(job);
	spi_exec("UPDATE cachesync.validation_jobs SET state = $2, error = $3, finished_at = now()"
			 " WHERE id = $1 AND state = 'running'",
			 3, types, values, nulls, SPI_OK_UPDATE);
	end_step();
}

/* Entry point of a validation job's dynamic background worker. */
void
cachesync_validate_main(Datum arg)
{
	CsJobStart	start;
	CsJob		job = {0};
	Oid			relid = InvalidOid;
	MemoryContext cxt;

	memcpy(&start, MyBgworkerEntry->bgw_extra, sizeof(start));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/*
	 * Connect as the bootstrap superuser, like the main worker, to keep the
	 * job row up to date; rows are read as each table's owner (and
	 * validate() checked that its caller may SELECT the table).
	 */
	BackgroundWorkerInitializeConnectionByOid(start.dbid, InvalidOid, 0);
	job.id = start.job;
	job.cxt = AllocSetContextCreate(TopMemoryContext, "cachesync validation job",
									ALLOCSET_DEFAULT_SIZES);

	/* validate() inserted the job: wait until its transaction is over */
	StartTransactionCommand();
	XactLockTableWait(start.xid, NULL, NULL, XLTW_None);
	CommitTransactionCommand();
	if (!claim_job(&job, &relid))
		proc_exit(0);			/* validate() rolled back, or cancelled at once */

	cxt = CurrentMemoryContext;
	PG_TRY();
	{
		List	   *rels = job_tables(relid);
		ListCell   *lc;
		bool		go_on = true;

		foreach(lc, rels)
			cs_stats_validation(lfirst_oid(lc), job.id);
		foreach(lc, rels)
		{
			if (go_on)
				go_on = validate_table(&job, lfirst_oid(lc));
		}
		finish_job(&job, "done", NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		RESUME_INTERRUPTS();
		finish_job(&job, "failed", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	proc_exit(0);
}
