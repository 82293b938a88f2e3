/*-------------------------------------------------------------------------
 *
 * writeback.c
 *	  Write-back: the "cachesync writeback" background worker that applies
 *	  each write_back table's Redis stream to the table, and the SQL
 *	  functions over its dead letters.
 *
 * Applications call cachesync_upsert / cachesync_delete (functions.c): one
 * Lua call changes the cached value, appends (op, data, key) to the table's
 * stream and records the entry id as the row's guard.  The table's format,
 * TTL, prefix and cached columns come from metadata this worker publishes
 * (and publishes again after a restart, a flush or a registration change).
 *
 * The worker is a process of its own, with its own Redis connection, so
 * that a blocking XREADGROUP never delays the queue shipping in worker.c.
 * It waits on the Redis socket (cs_redis_try_run_blocking), so SIGTERM, the
 * latch and postmaster death end the wait at once.
 *
 * A batch of one stream is:
 *   1. one transaction (constraints all immediate, so deferred ones are
 *      checked per statement): with cachesync.writeback_collapse, the
 *      entries folded per row key and applied set-based in one
 *      subtransaction (see "The collapsing path" below; a batch it cannot
 *      apply falls back to what follows); otherwise every entry in stream
 *      order, each in its own
 *      subtransaction, as the table's owner, with capture of that table
 *      off (no echo); an entry that fails is rolled back alone and its
 *      original fields, error and SQLSTATE go to the dead-letter stream,
 *      appended before the commit under the entry's own id, so a replay
 *      after a crash finds it there instead of adding it twice; the last
 *      entry id is stored in cachesync.writeback_progress; commit (without
 *      waiting for the WAL flush when the batch wrote nothing but the
 *      table: see WbAcks);
 *   2. settle: the cache gets each touched row (dead-lettered ones too) as
 *      Postgres stored it (defaults, triggers, generated columns; no row:
 *      no key), read with a fresh snapshot and a populator version
 *      (version.c), through cachesync_settle, which writes only unless the
 *      row's guard names a newer entry (an application wrote the key again
 *      meanwhile; that entry settles it);
 *   3. XACK the entries and XTRIM MINID past the last one (applied
 *      entries leave the stream: it cannot grow without bound).  Only
 *      after the settle: a crash or a failed settle before the ack brings
 *      the entries back, skipped as applied and settled again.  And only
 *      once the commit's WAL is flushed (WbAcks): a crash that loses the
 *      commit brings them back too, applied again.
 *
 * Exactly once in effect: an entry's change and the progress row commit
 * together.  After a crash before the commit, nothing of the batch is
 * applied and the entries are still pending in the group: the worker reads
 * its own pending entries first (XREADGROUP ... 0) whenever it starts or
 * reconnects.  After a crash between the commit and XACK, those entries come
 * back too, and are skipped as ids <= the stored last id (and settled).
 *
 * Recovery: a failure (Redis down, NOGROUP after FLUSHALL or a deleted
 * stream or group, an ERROR) backs off exponentially up to 5 s and then
 * publishes the metadata and creates the groups again (XGROUP CREATE ...
 * MKSTREAM), so a flushed Redis never becomes a hot loop.  A stream whose
 * group cannot be created (WRONGTYPE) is left out alone until a refresh.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/genam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/namespace.h"
#include "catalog/pg_index.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/syncrep.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "cachesync.h"
#include "capture.h"
#include "functions.h"
#include "keys.h"
#include "redis.h"
#include "registry.h"
#include "rowformat.h"
#include "shmem.h"
#include "stats.h"
#include "sync.h"
#include "version.h"
#include "worker.h"
#include "writeback.h"

#define WB_GROUP "cachesync"
#define WB_CONSUMER "worker"
#define WB_BLOCK_MS 1000
#define WB_REFRESH_MS 5000
#define WB_MAX_BACKOFF_MS 5000
#define WB_MAX_READ 1000		/* entries read per stream and round */
#define WB_MAX_DEAD_LETTERS 10000	/* rows dead_letters() returns at most */

PGDLLEXPORT void cachesync_writeback_main(Datum arg);

PG_FUNCTION_INFO_V1(cachesync_dead_letters);
PG_FUNCTION_INFO_V1(cachesync_replay_dead_letters);

/* One write_back table as the worker reads it. */
typedef struct WbTable
{
	Oid			relid;
	char	   *stream;
	char	   *field;			/* the stream name after the global prefix */
	char	   *meta;			/* the JSON the write-back functions read */
} WbTable;

/* outcome of one round */
typedef enum WbWork
{
	WB_IDLE,					/* no write_back table: sleep */
	WB_DONE,					/* look again at once */
	WB_FAILED					/* back off */
} WbWork;

static MemoryContext tables_cxt = NULL;
static List *wb_tables = NIL;
static bool wb_ready = false;	/* metadata and groups are in place */
static bool wb_read_own = true; /* read our pending entries first */
static TimestampTz wb_refresh_at = 0;
static bool wb_redis_down = false;
static char *wb_broken = NULL;	/* streams left out at the last publish */

/* Registers the write-back worker; called from _PG_init while preloading. */
void
cs_writeback_register(void)
{
	cs_register_bgworker("cachesync_writeback_main", "cachesync writeback");
}

/* Notes a failure: logged once until the next success. */
static WbWork
wb_failed(const char *what, const char *detail)
{
	if (!wb_redis_down)
		ereport(LOG,
				(errmsg("cachesync writeback: %s failed; retrying with back-off", what),
				 errdetail_internal("%s", detail)));
	wb_redis_down = true;
	wb_ready = false;
	return WB_FAILED;
}

/* Notes a success after failures. */
static void
wb_ok(void)
{
	if (wb_redis_down)
		ereport(LOG, (errmsg("cachesync writeback: reading the write-back streams again")));
	wb_redis_down = false;
}

/* Returns the value of field name among an entry's field/value pairs. */
static const char *
entry_field(const CsReply *fields, const char *name)
{
	if (fields == NULL || fields->type != CS_REPLY_ARRAY)
		return NULL;
	for (size_t i = 0; i + 1 < fields->nelem; i += 2)
	{
		if (fields->elem[i]->str && strcmp(fields->elem[i]->str, name) == 0)
			return fields->elem[i + 1]->str;
	}
	return NULL;
}

/* Parses a stream id "ms-seq"; a missing part counts as 0. */
static void
parse_id(const char *id, uint64 *ms, uint64 *seq)
{
	char	   *end;

	*ms = strtou64(id, &end, 10);
	*seq = (*end == '-') ? strtou64(end + 1, NULL, 10) : 0;
}

/* Returns true when stream id a is at or before b. */
static bool
id_le(const char *a, const char *b)
{
	uint64		ams,
				aseq,
				bms,
				bseq;

	parse_id(a, &ams, &aseq);
	parse_id(b, &bms, &bseq);
	return ams < bms || (ams == bms && aseq <= bseq);
}

/* Returns the qualified, quoted name of relid. */
static char *
rel_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/* Returns the metadata JSON of t for the write-back functions. */
static char *
table_meta(CsTable *t)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfo(&b, "{\"format\":\"%s\",\"ttl\":" INT64_FORMAT ",\"prefix\":",
					 t->format == CS_FORMAT_JSON ? "json" : "hash", t->ttl_ms);
	escape_json(&b, psprintf("%s%s", cachesync_key_prefix, t->key_prefix));
	if (!t->all_columns)
	{
		appendStringInfoString(&b, ",\"columns\":{");
		for (int i = 0; i < t->ncolumns; i++)
		{
			if (i > 0)
				appendStringInfoChar(&b, ',');
			escape_json(&b, get_attname(t->relid, t->column_attnums[i], false));
			appendStringInfoString(&b, ":true");
		}
		appendStringInfoChar(&b, '}');
	}
	appendStringInfoChar(&b, '}');
	return b.data;
}

/* cs_registry_foreach callback: adds a write_back table to wb_tables. */
static void
collect_table(CsTable *t, void *arg)
{
	MemoryContext old;
	WbTable    *wt;

	if (t->broken || t->mode != CS_MODE_WRITE_BACK)
		return;
	old = MemoryContextSwitchTo(tables_cxt);
	wt = palloc(sizeof(WbTable));
	wt->relid = t->relid;
	wt->stream = cs_wb_stream(t, false);
	wt->field = pstrdup(wt->stream + strlen(cachesync_key_prefix));
	wt->meta = table_meta(t);
	wb_tables = lappend(wb_tables, wt);
	MemoryContextSwitchTo(old);
}

/* cs_worker_xact step: reads the write_back tables into wb_tables. */
static bool
load_tables(void *arg)
{
	MemoryContextReset(tables_cxt);
	wb_tables = NIL;
	cs_registry_invalidate();
	cs_registry_foreach(collect_table, NULL);
	return true;
}

/*
 * Publishes every write_back table's metadata (replacing the hash in one
 * MULTI, so a table unregistered since loses its entry and no application
 * call sees a half-written hash) and creates each stream's group.
 */
static bool
publish(void)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **r;
	char	   *meta_key = cs_wb_meta_key();
	ListCell   *lc;
	int			base;
	StringInfoData broken;
	int			created = 0;

	cs_pipeline_append_strs(p, 1, (const char *[]) {"MULTI"});
	cs_pipeline_append_strs(p, 2, (const char *[]) {"DEL", meta_key});
	foreach(lc, wb_tables)
	{
		WbTable    *wt = lfirst(lc);

		cs_pipeline_append_strs(p, 4, (const char *[]) {"HSET", meta_key, wt->field, wt->meta});
	}
	cs_pipeline_append_strs(p, 1, (const char *[]) {"EXEC"});
	base = p->ncommands;
	foreach(lc, wb_tables)
	{
		WbTable    *wt = lfirst(lc);

		cs_pipeline_append_strs(p, 6, (const char *[]) {"XGROUP", "CREATE", wt->stream,
								WB_GROUP, "0", "MKSTREAM"});
	}
	if (!cs_redis_try_run(p, &r))
		return wb_failed("publishing write-back metadata", cs_redis_last_error()) != WB_FAILED;
	if (r[base - 1]->type != CS_REPLY_ARRAY)
		return wb_failed("publishing write-back metadata",
						 r[base - 1]->str ? r[base - 1]->str : "EXEC failed") != WB_FAILED;
	/*
	 * A stream whose group cannot be created (its key holds another type,
	 * say) is left out until the next refresh, alone: the other tables go
	 * on.  Logged once per stream and error, not at every refresh.
	 */
	initStringInfo(&broken);
	foreach(lc, wb_tables)
	{
		WbTable    *wt = lfirst(lc);
		CsReply    *g = r[base + created++];	/* index in the list changes */
		char	   *line;

		if (g->type != CS_REPLY_ERROR || strncmp(g->str, "BUSYGROUP", 9) == 0)
			continue;
		line = psprintf("%s: %s\n", wt->stream, g->str);
		if (wb_broken == NULL || strstr(wb_broken, line) == NULL)
			ereport(LOG,
					(errmsg("cachesync writeback: cannot read write-back stream \"%s\"; skipping it until it can be",
							wt->stream),
					 errdetail_internal("%s", g->str)));
		appendStringInfoString(&broken, line);
		wb_tables = foreach_delete_current(wb_tables, lc);
	}
	if (wb_broken)
		pfree(wb_broken);
	wb_broken = MemoryContextStrdup(TopMemoryContext, broken.data);
	return true;
}

/* Returns the write_back table whose stream is name, or NULL. */
static WbTable *
table_of_stream(const char *name)
{
	ListCell   *lc;

	foreach(lc, wb_tables)
	{
		WbTable    *wt = lfirst(lc);

		if (strcmp(wt->stream, name) == 0)
			return wt;
	}
	return NULL;
}

/* A batch of one stream, and what applying it found. */
/* what a table's triggers and rules allow a batch (table_triggers) */
typedef enum WbTriggers
{
	WB_TRIGGERS_NONE,
	WB_TRIGGERS_BEFORE_ROW,
	WB_TRIGGERS_OTHER
} WbTriggers;

typedef struct WbBatch
{
	WbTable    *wt;
	CsReply    *entries;		/* [id, fields] pairs in stream order */
	MemoryContext cxt;			/* where results live */
	List	   *acks;			/* entry ids */
	char	   *last;			/* the last entry id of the batch */
	HTAB	   *guards;			/* row key -> entry id (CsSyncGuard) */
	List	   *guard_keys;
	int64		applied;
	int64		dead;
	char	   *last_error;
	Datum	   *rows;			/* rows the collapsed upserts stored, or NULL */
	int			nrows;
	List	   *gone;			/* keys the collapsed path deleted */
	CsPipeline *settle;			/* their settles (settle_from_rows), or NULL */
	HTAB	   *settled;		/* the keys settle covers */
	List	   *rest;			/* the other keys (settle_rest) */
	List	   *unguarded;		/* rows' keys no entry names (a trigger's) */
	WbTriggers	triggers;		/* of the table, for this batch */
	bool		alone;			/* writes nothing but the table (table_triggers) */
	XLogRecPtr	lsn;			/* the WAL its acknowledgement waits for */
} WbBatch;

/* Returns the last applied entry id of relid ("0-0" for none). */
static char *
read_progress(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};

	if (SPI_execute_with_args("SELECT last_id FROM cachesync.writeback_progress WHERE rel::pg_catalog.oid = $1",
							  1, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read cachesync.writeback_progress");
	if (SPI_processed == 0)
		return "0-0";
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/* Stores the last applied entry id of relid, in the batch's transaction. */
static void
write_progress(Oid relid, const char *id)
{
	Oid			types[2] = {OIDOID, TEXTOID};
	Datum		args[2] = {ObjectIdGetDatum(relid), CStringGetTextDatum(id)};

	if (SPI_execute_with_args("INSERT INTO cachesync.writeback_progress AS p (rel, last_id) "
							  "VALUES ($1::pg_catalog.regclass, $2) ON CONFLICT (rel) DO UPDATE "
							  "SET last_id = EXCLUDED.last_id, applied_at = pg_catalog.now()",
							  2, types, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write cachesync.writeback_progress");
}

/*
 * Throws unless every JSON key of data names a cached column of t (42703
 * for no such column, 42501 for one not cached); returns their attnums.
 */
static List *
data_columns(CsTable *t, Jsonb *data)
{
	JsonbIterator *it = JsonbIteratorInit(&data->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *cols = NIL;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *name;
		AttrNumber	att;

		if (tok != WJB_KEY)
			continue;
		name = pnstrdup(v.val.string.val, v.val.string.len);
		att = get_attnum(t->relid, name);
		if (att <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"%s\" does not exist",
							name, get_rel_name(t->relid))));
		if (!cs_column_is_cached(t, att))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("column \"%s\" of relation \"%s\" is not cached and cannot be written back",
							name, get_rel_name(t->relid)),
					 errhint("Write-back writes only the columns registered with columns => (key columns included).")));
		cols = lappend_int(cols, att);
	}
	for (int i = 0; i < t->nkeys; i++)
	{
		if (!list_member_int(cols, t->key_attnums[i]))
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("write-back data lacks key column \"%s\"",
							get_attname(t->relid, t->key_attnums[i], false)),
					 errhint("Every entry's data holds the key columns of its row.")));
	}
	return cols;
}

/* prepared statements by SQL text, kept across batches (plancache
 * revalidates them after DDL); bounded: beyond the limit, not kept */
#define WB_MAX_PLANS 256

typedef struct WbPlan
{
	char	   *sql;			/* hash key */
	SPIPlanPtr	plan;
} WbPlan;

static HTAB *wb_plans = NULL;

/*
 * Runs sql with one jsonb argument through a kept plan (a write-back batch
 * runs the same few statements thousands of times).  Returns the SPI code.
 */
static int
run_jsonb(const char *sql, Datum arg, bool read_only, long count)
{
	Oid			types[1] = {JSONBOID};
	WbPlan	   *p;
	bool		found;
	char	   *key = (char *) sql;

	if (wb_plans == NULL)
		wb_plans = cs_keyset_create("cachesync write-back plans", 64,
									sizeof(WbPlan), TopMemoryContext);
	p = hash_search(wb_plans, &key, HASH_FIND, NULL);
	if (p == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, 1, types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (hash_get_num_entries(wb_plans) >= WB_MAX_PLANS)
			return SPI_execute_plan(plan, &arg, NULL, read_only, count);
		SPI_keepplan(plan);
		key = MemoryContextStrdup(TopMemoryContext, sql);
		p = hash_search(wb_plans, &key, HASH_ENTER, &found);
		p->sql = key;
		p->plan = plan;
	}
	return SPI_execute_plan(p->plan, &arg, NULL, read_only, count);
}

/* Returns the quoted name of column att of t. */
static const char *
col(CsTable *t, AttrNumber att)
{
	return quote_identifier(get_attname(t->relid, att, false));
}

/* Returns true when att is one of t's key columns. */
static bool
is_key(CsTable *t, AttrNumber att)
{
	for (int i = 0; i < t->nkeys; i++)
	{
		if (t->key_attnums[i] == att)
			return true;
	}
	return false;
}

/*
 * Returns true when folding relid's entries gives what applying them one by
 * one in stream order gives:
 * - every key column's text output is canonical for its equality (integers,
 *   uuid, date, bool, text with a deterministic collation): the fold groups
 *   entries by the row key's text, so keys that are equal but spelled
 *   differently ('1' and '1.0' as numeric, citext) would make two folds of
 *   one row, applied out of order;
 * - no unique or exclusion index besides the key's: the folded statements
 *   run deletes before upserts across rows, and a unique value moving from
 *   one row to another could then succeed where stream order fails, or the
 *   reverse.
 * Other tables take the per-entry path.
 */
static CsTable *wb_lookup(Oid relid);

static bool
collapse_is_safe(Oid relid)
{
	CsTable    *t = wb_lookup(relid);
	Relation	rel;
	List	   *indexes;
	ListCell   *lc;
	bool		safe = true;
	int			nkeys;
	AttrNumber	keys[INDEX_MAX_KEYS];

	if (t == NULL || t->nkeys > INDEX_MAX_KEYS)
		return false;
	/* opening relations may rebuild the registry: keep what we need */
	nkeys = t->nkeys;
	memcpy(keys, t->key_attnums, sizeof(AttrNumber) * nkeys);
	for (int i = 0; i < nkeys; i++)
	{
		Oid			typid;
		int32		typmod;
		Oid			collid;

		get_atttypetypmodcoll(relid, keys[i], &typid, &typmod, &collid);
		switch (getBaseType(typid))
		{
			case INT2OID:
			case INT4OID:
			case INT8OID:
			case OIDOID:
			case UUIDOID:
			case DATEOID:
			case BOOLOID:
				break;
			case TEXTOID:
			case VARCHAROID:
				if (OidIsValid(collid) && !get_collation_isdeterministic(collid))
					return false;
				break;
			default:
				return false;
		}
	}
	rel = relation_open(relid, AccessShareLock);
	indexes = RelationGetIndexList(rel);
	foreach(lc, indexes)
	{
		Relation	ind = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index form = ind->rd_index;
		bool		is_key = form->indisunique && !form->indisexclusion &&
			form->indnkeyatts == nkeys &&
			heap_attisnull(ind->rd_indextuple, Anum_pg_index_indpred, NULL);

		for (int k = 0; is_key && k < nkeys; k++)
		{
			bool		found = false;

			for (int j = 0; j < nkeys; j++)
				found = found || form->indkey.values[k] == keys[j];
			is_key = found;
		}
		if ((form->indisunique || form->indisexclusion) && !is_key)
			safe = false;
		index_close(ind, AccessShareLock);
	}
	list_free(indexes);
	relation_close(rel, AccessShareLock);
	return safe;
}

/*
 * Returns the row key of data (the table's row type filled from it); throws
 * for values the column types refuse and for NULL key values.
 */
static char *
data_key(CsTable *t, const char *rel, Datum data)
{
	Relation	r;
	HeapTupleHeader hdr;
	HeapTupleData tuple;
	bool		isnull;
	char	   *key;

	if (run_jsonb(psprintf("SELECT pg_catalog.jsonb_populate_record(NULL::%s, $1)", rel),
				  data, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read write-back data");
	hdr = DatumGetHeapTupleHeader(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	cs_row_tuple(&tuple, hdr, t->relid);
	r = relation_open(t->relid, AccessShareLock);
	for (int i = 0; i < t->nkeys; i++)
	{
		if (heap_attisnull(&tuple, t->key_attnums[i], RelationGetDescr(r)))
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("write-back data has a null value in key column \"%s\"",
							get_attname(t->relid, t->key_attnums[i], false))));
	}
	key = cs_row_key(t, &tuple, RelationGetDescr(r));
	relation_close(r, AccessShareLock);
	return key;
}

/*
 * Returns the upsert statement of the given data columns: of one row ($1 a
 * JSON object), or with many of a row set ($1 a JSON array of objects, at
 * most one per key: ON CONFLICT cannot change a row twice in a statement).
 * With returning, it returns every row it stored, as a whole-row value.
 */
static char *
upsert_sql(CsTable *t, const char *rel, List *cols, bool many, bool returning)
{
	StringInfoData q;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&q);
	appendStringInfo(&q, "INSERT INTO %s AS t (", rel);
	foreach(lc, cols)
		appendStringInfo(&q, "%s%s", foreach_current_index(lc) ? ", " : "", col(t, lfirst_int(lc)));
	appendStringInfoString(&q, ") SELECT ");
	foreach(lc, cols)
		appendStringInfo(&q, "%sr.%s", foreach_current_index(lc) ? ", " : "", col(t, lfirst_int(lc)));
	appendStringInfo(&q, " FROM pg_catalog.jsonb_populate_record%s(NULL::%s, $1) r ON CONFLICT (",
					 many ? "set" : "", rel);
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "%s%s", i ? ", " : "", col(t, t->key_attnums[i]));
	appendStringInfoString(&q, ") DO UPDATE SET ");
	foreach(lc, cols)
	{
		if (is_key(t, lfirst_int(lc)))
			continue;
		appendStringInfo(&q, "%s%s = EXCLUDED.%s", first ? "" : ", ",
						 col(t, lfirst_int(lc)), col(t, lfirst_int(lc)));
		first = false;
	}
	if (first)					/* only key columns: touch the row */
		appendStringInfo(&q, "%s = EXCLUDED.%s", col(t, t->key_attnums[0]),
						 col(t, t->key_attnums[0]));
	/* (t.*), not t: a column named t would be returned instead of the row */
	if (returning)
		appendStringInfo(&q, " RETURNING (t.*)::%s", rel);
	return q.data;
}

/*
 * Returns the delete statement of a row given by its key columns ($1 a JSON
 * object), or with many of the rows of a JSON array of such objects.
 */
static char *
delete_sql(CsTable *t, const char *rel, bool many, bool returning)
{
	StringInfoData q;

	initStringInfo(&q);
	appendStringInfo(&q, "DELETE FROM ONLY %s t USING pg_catalog.jsonb_populate_record%s(NULL::%s, $1) r WHERE ",
					 rel, many ? "set" : "", rel);
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "%st.%s = r.%s", i ? " AND " : "",
						 col(t, t->key_attnums[i]), col(t, t->key_attnums[i]));
	if (returning)
		appendStringInfo(&q, " RETURNING (t.*)::%s", rel);
	return q.data;
}

/*
 * Applies one entry (its field/value pairs) to t; returns its row key.
 * Throws for every kind of bad entry, with the SQLSTATE that names it.
 * With check_only, runs every check but changes nothing.  The key of the
 * row an upsert stored, when a trigger made it another key than the
 * entry's, is added to *moved (allocated in cxt), to be read back.
 */
static char *
apply_fields(CsTable *t, const CsReply *fields, bool check_only, List **moved,
			 MemoryContext cxt)
{
	Oid			relid = t->relid;
	const char *op = entry_field(fields, "op");
	const char *data = entry_field(fields, "data");
	const char *given = entry_field(fields, "key");
	char	   *rel = rel_name(t->relid);
	Datum		jb;
	List	   *cols;
	char	   *key;
	bool		upsert;

	if (op == NULL || data == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("write-back entry lacks the \"%s\" field", op ? "data" : "op"),
				 errhint("Append entries with cachesync_upsert or cachesync_delete.")));
	upsert = strcmp(op, "upsert") == 0;
	if (!upsert && strcmp(op, "delete") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown write-back operation \"%s\"", op),
				 errhint("The op field is upsert or delete.")));
	jb = DirectFunctionCall1(jsonb_in, CStringGetDatum(data));
	if (!JB_ROOT_IS_OBJECT(DatumGetJsonbP(jb)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("write-back data is not a JSON object")));
	cols = data_columns(t, DatumGetJsonbP(jb));
	key = data_key(t, rel, jb);
	if (given != NULL && strcmp(given, key) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("row key \"%s\" does not match the key columns of the data", given),
				 errdetail("The data names the row whose key is \"%s\".", key)));
	if (check_only)
		return key;
	/* t is not used after this: its triggers may rebuild the registry */
	if (run_jsonb(upsert ? upsert_sql(t, rel, cols, false, true) : delete_sql(t, rel, false, false),
				  jb, false, 0) < 0)
		elog(ERROR, "could not apply a write-back entry");
	if (upsert && SPI_processed == 1 && (t = cs_registry_lookup(relid)) != NULL && !t->broken)
	{
		Relation	r = relation_open(relid, AccessShareLock);
		HeapTupleData tuple;
		bool		isnull;
		char	   *stored;

		cs_row_tuple(&tuple, DatumGetHeapTupleHeader(SPI_getbinval(SPI_tuptable->vals[0],
																	SPI_tuptable->tupdesc, 1, &isnull)),
					 relid);
		stored = cs_row_key(t, &tuple, RelationGetDescr(r));
		if (strcmp(stored, key) != 0)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			*moved = lappend(*moved, pstrdup(stored));
			MemoryContextSwitchTo(old);
		}
		relation_close(r, AccessShareLock);
	}
	return key;
}

/*
 * Returns true for errors that say nothing about the entry: deadlock,
 * serialization failure (class 40), lock not available (55P03), query
 * cancel, statement timeout, shutdown (class 57), out of memory or disk
 * (class 53), system errors (class 58).  Such an entry is retried with
 * its whole batch, never dead-lettered.
 */
static bool
wb_transient(int sqlerrcode)
{
	return cs_error_is_transient(sqlerrcode) ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

/*
 * For the PG_CATCH of a subtransaction begun (BeginInternalSubTransaction)
 * while old was the memory context and owner the resource owner: rolls it
 * back (which restores the user, the security context and the GUCs),
 * restores both, throws a transient error (wb_transient) again, and returns
 * any other, copied into cxt.
 */
static ErrorData *
wb_subxact_failed(MemoryContext cxt, MemoryContext old, ResourceOwner owner)
{
	cs_capture_skip_relid = InvalidOid;
	return cs_subxact_failed(cxt, old, owner, wb_transient);
}

/*
 * Becomes relid's owner to apply write-back entries, in a restricted
 * operation.  The table's own triggers run as they would in a session of
 * its owner: with the default search_path, not the pinned one (our
 * statements qualify every name; pg_catalog, implicitly first, wins every
 * operator lookup).
 */
static void
wb_become_owner(Oid relid, CsAsOwner *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec);
	SetUserIdAndSecContext(cs_rel_owner(relid),
						   save->sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save->nest = NewGUCNestLevel();
	(void) set_config_option("search_path", "\"$user\", public",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* Undoes wb_become_owner(). */
static void
wb_stop_being_owner(CsAsOwner *save)
{
	AtEOXact_GUC(true, save->nest);
	SetUserIdAndSecContext(save->userid, save->sec);
}

/*
 * Applies one entry in its own subtransaction, as the table's owner, with
 * capture of the table off.  A transient error (wb_transient) is thrown
 * again after the subtransaction's rollback: the batch rolls back and is
 * retried later with back-off.  t may be freed once this returns
 * (wb_lookup).  Returns true with *key set, or false with the error in
 * *edata (allocated in cxt) and nothing of the entry left.  With
 * check_only, only checks the entry (apply_fields).
 */
static bool
apply_entry(CsTable *t, const CsReply *fields, char **key, ErrorData **edata,
			MemoryContext cxt, bool check_only, List **moved)
{
	MemoryContext old = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(old);
	PG_TRY();
	{
		CsAsOwner	save;

		wb_become_owner(t->relid, &save);
		cs_capture_skip_relid = t->relid;
		*key = MemoryContextStrdup(cxt, apply_fields(t, fields, check_only, moved, cxt));
		cs_capture_skip_relid = InvalidOid;
		wb_stop_being_owner(&save);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(old);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		*edata = wb_subxact_failed(cxt, old, owner);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Remembers that key's cache entry is to be settled after entry id. */
static void
add_guard(WbBatch *b, CsTable *t, const char *key, const char *id)
{
	MemoryContext old;
	CsSyncGuard *g;
	bool		found;
	char	   *prefix = psprintf("%s%s", cachesync_key_prefix, t->key_prefix);

	if (key == NULL || strncmp(key, prefix, strlen(prefix)) != 0)
		return;					/* not a row key of t: nothing to settle */
	old = MemoryContextSwitchTo(b->cxt);
	key = pstrdup(key);
	g = hash_search(b->guards, &key, HASH_ENTER, &found);
	if (!found)
	{
		g->key = (char *) key;
		b->guard_keys = lappend(b->guard_keys, (char *) key);
	}
	g->id = pstrdup(id);		/* stream order: the later entry wins */
	MemoryContextSwitchTo(old);
}

/* Appends the dead letter of entry id (fields, error) to p. */
static void
append_dead_letter(CsPipeline *p, CsTable *t, const char *id,
				   const CsReply *fields, ErrorData *edata)
{
	int			n = (fields && fields->type == CS_REPLY_ARRAY) ? fields->nelem : 0;
	const char **argv = palloc(sizeof(char *) * (n + 11));
	size_t	   *lens = palloc(sizeof(size_t) * (n + 11));
	int			argc = 0;

#define ARG(s, l) (argv[argc] = (s), lens[argc++] = (l))
	ARG("FCALL", 5);
	ARG("cachesync_deadletter", 20);
	ARG("1", 1);
	ARG(cs_wb_stream(t, true), strlen(cs_wb_stream(t, true)));
	ARG(id, strlen(id));
	for (int i = 0; i < n; i++)
		ARG(fields->elem[i]->str ? fields->elem[i]->str : "", fields->elem[i]->len);
	ARG("error", 5);
	ARG(edata->message, strlen(edata->message));
	ARG("sqlstate", 8);
	ARG(unpack_sql_state(edata->sqlerrcode), 5);
	ARG("id", 2);
	ARG(id, strlen(id));
#undef ARG
	cs_pipeline_append(p, argc, argv, lens);
}

/*
 * Returns the registration of relid while it is a usable write_back table,
 * else NULL.  Looked up again after every entry: applying one fires the
 * capture trigger, whose lookup may rebuild the registry and free the
 * CsTable an earlier lookup returned.
 */
static CsTable *
wb_lookup(Oid relid)
{
	CsTable    *t = cs_registry_lookup(relid);

	if (t == NULL || t->broken || t->mode != CS_MODE_WRITE_BACK)
	{
		wb_ready = false;		/* registrations changed: load them again */
		return NULL;
	}
	return t;
}

/*
 * The collapsing path (cachesync.writeback_collapse): a batch's new entries
 * are checked one by one without a subtransaction each (every check that
 * needs no table read is made in C; the data of all of them is read as rows
 * in one statement), folded per row key in stream order, and the folded
 * rows are applied with a few set-based statements, all in one
 * subtransaction.  An entry that fails its checks is dead-lettered as the
 * per-entry path would (apply_entry with check_only gives its exact error)
 * and left out of the fold: a failing entry changes nothing, so the fold of
 * the others is what applying them one by one gives.  When anything else
 * fails (a value its column type refuses, a constraint the folded rows
 * violate), the subtransaction is rolled back and the batch takes the
 * per-entry path, where a bad entry isolates itself.
 */

/* One new entry of a batch, as the collapsing path reads it. */
typedef struct WbEntry
{
	const char *id;
	const CsReply *fields;
	bool		upsert;
	Jsonb	   *data;			/* NULL: the entry fails its checks */
	char	   *key;			/* its row key, once data is read */
	ErrorData  *edata;			/* why it fails (apply_entry, check_only) */
} WbEntry;

/* A row's entries of a batch folded in stream order. */
typedef struct WbFold
{
	char	   *key;			/* hash key */
	bool		deleted;		/* a delete came: the row is deleted first */
	Jsonb	   *keys;			/* the data of that delete (names the row) */
	Jsonb	   *data;			/* then upserted with these columns, or NULL */
} WbFold;

/* The folded rows with the same set of columns: one upsert statement. */
typedef struct WbGroup
{
	int			ncolumns;
	AttrNumber *columns;		/* their attnums, in the data's key order */
	List	   *cols;			/* the same, for upsert_sql */
	JsonbParseState *rows;		/* a JSON array being built */
} WbGroup;

/*
 * Returns true when an entry passes the checks apply_fields makes before
 * reading its data as a row (fields, op, a JSON object, known and cached
 * columns, the key columns present) and sets e->upsert and e->data.  Never
 * throws for a bad entry (pg_parse_json reports without throwing; jsonb_in
 * could still refuse what it accepted: the caller's subtransaction catches
 * that).
 */
/*
 * Returns the number of the column of desc named name (len bytes, not
 * NUL-terminated), or InvalidAttrNumber when there is none (dropped and
 * system columns included): get_attnum without a catalog lookup per entry.
 */
static AttrNumber
desc_attnum(TupleDesc desc, const char *name, int len)
{
	if (len <= 0 || len >= NAMEDATALEN)
		return InvalidAttrNumber;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *n = NameStr(att->attname);

		if (n[0] == name[0] && strncmp(n, name, len) == 0 && n[len] == '\0' &&
			!att->attisdropped)
			return att->attnum;
	}
	return InvalidAttrNumber;
}

/*
 * Parsing an entry's data into a Jsonb in one pass: jsonb_in's semantic
 * actions (jsonb.c), except that a malformed text returns NULL (parse_data)
 * instead of throwing.
 */
typedef struct WbJsonb
{
	JsonbParseState *st;
	JsonbValue *res;
} WbJsonb;

/* pushes a container's start or end */
static void
wbj_push(void *s, JsonbIteratorToken tok)
{
	WbJsonb    *j = s;

	j->res = pushJsonbValue(&j->st, tok, NULL);
}

static void
wbj_object_start(void *s)
{
	wbj_push(s, WJB_BEGIN_OBJECT);
}

static void
wbj_object_end(void *s)
{
	wbj_push(s, WJB_END_OBJECT);
}

static void
wbj_array_start(void *s)
{
	wbj_push(s, WJB_BEGIN_ARRAY);
}

static void
wbj_array_end(void *s)
{
	wbj_push(s, WJB_END_ARRAY);
}

/* a string's length as a JsonbValue may hold it (jsonb.c's checkStringLen) */
static int
wbj_len(size_t len)
{
	if (len > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("string too long to represent as jsonb string"),
				 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
						   JENTRY_OFFLENMASK)));
	return (int) len;
}

static void
wbj_field_start(void *s, char *fname, bool isnull)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.len = wbj_len(strlen(fname));
	v.val.string.val = fname;
	((WbJsonb *) s)->res = pushJsonbValue(&((WbJsonb *) s)->st, WJB_KEY, &v);
}

/* a scalar inside the object (parse_data refuses anything but an object) */
static void
wbj_scalar(void *s, char *token, JsonTokenType type)
{
	WbJsonb    *j = s;
	JsonbValue	v;

	switch (type)
	{
		case JSON_TOKEN_STRING:
			v.type = jbvString;
			v.val.string.len = wbj_len(strlen(token));
			v.val.string.val = token;
			break;
		case JSON_TOKEN_NUMBER:
			v.type = jbvNumeric;
			v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(token),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1)));
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			v.type = jbvBool;
			v.val.boolean = (type == JSON_TOKEN_TRUE);
			break;
		case JSON_TOKEN_NULL:
			v.type = jbvNull;
			break;
		default:
			elog(ERROR, "invalid json token type");
	}
	if (j->st == NULL)
		elog(ERROR, "unexpected scalar write-back data");
	j->res = pushJsonbValue(&j->st, j->st->contVal.type == jbvArray ? WJB_ELEM : WJB_VALUE, &v);
}

/* Returns data (a JSON object) as a Jsonb, or NULL when it is not one. */
static Jsonb *
parse_data(const char *data)
{
	size_t		len = strlen(data);
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	WbJsonb		j = {NULL, NULL};
	size_t		i = 0;

	while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
		i++;
	if (i == len || data[i] != '{')
		return NULL;
	lex = makeJsonLexContextCstringLen((char *) data, len, GetDatabaseEncoding(), true);
	sem.semstate = &j;
	sem.object_start = wbj_object_start;
	sem.object_end = wbj_object_end;
	sem.array_start = wbj_array_start;
	sem.array_end = wbj_array_end;
	sem.object_field_start = wbj_field_start;
	sem.scalar = wbj_scalar;
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS || j.res == NULL)
		return NULL;
	return JsonbValueToJsonb(j.res);
}

static bool
entry_precheck(CsTable *t, TupleDesc desc, WbEntry *e)
{
	const char *op = entry_field(e->fields, "op");
	const char *data = entry_field(e->fields, "data");
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	Jsonb	   *jb;
	int			nkeys = 0;

	if (op == NULL || data == NULL)
		return false;
	e->upsert = strcmp(op, "upsert") == 0;
	if (!e->upsert && strcmp(op, "delete") != 0)
		return false;
	if ((jb = parse_data(data)) == NULL || !JB_ROOT_IS_OBJECT(jb))
		return false;
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		AttrNumber	att;

		if (tok != WJB_KEY)
			continue;
		att = desc_attnum(desc, v.val.string.val, v.val.string.len);
		if (att <= 0 || !cs_column_is_cached(t, att))
			return false;
		if (is_key(t, att))
			nkeys++;			/* an object's keys are unique */
	}
	if (nkeys < t->nkeys)
		return false;
	e->data = jb;
	return true;
}

/* Appends the JSON object jb to the array being built in *st. */
static void
push_object(JsonbParseState **st, Jsonb *jb)
{
	JsonbValue	v;

	v.type = jbvBinary;
	v.val.binary.data = &jb->root;
	v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
	(void) pushJsonbValue(st, WJB_ELEM, &v);
}

/* Returns the JSON array built in *st. */
static Datum
end_array(JsonbParseState **st)
{
	return JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(st, WJB_END_ARRAY, NULL)));
}

/*
 * Returns the text a key column's type reads from the JSON value v, as
 * jsonb_populate_record gives it (populate_scalar): a string without its
 * quotes, a number's or a boolean's text, anything else as JSON.
 */
static char *
jsonb_scalar_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
	return NULL;					/* keep compiler quiet */
}

/*
 * Returns true when every key column of t has a plain base type (no domain,
 * array, composite, json or jsonb): jsonb_populate_record reads its value
 * from the JSON with the type's input function alone, so entry_keys can too.
 */
static bool
keys_are_plain(CsTable *t)
{
	for (int k = 0; k < t->nkeys; k++)
	{
		Oid			typ = t->key_types[k];

		if (get_typtype(typ) != TYPTYPE_BASE || OidIsValid(get_element_type(typ)) ||
			typ == JSONOID || typ == JSONBOID)
			return false;
	}
	return true;
}

/*
 * Sets each entry's row key from its data, as the table stores the key
 * columns (their input function, with the column's typmod, then output):
 * read here for plain key types (keys_are_plain), else through
 * jsonb_populate_recordset.  An entry with a missing or null key column,
 * or whose given key differs, gets data = NULL.  A value its type refuses
 * throws (the batch then goes entry by entry).
 */
static void
entry_keys(CsTable *t, TupleDesc desc, const char *rel, WbEntry *es, int n)
{
	JsonbParseState *st = NULL;
	uint64		row = 0;
	int			m = 0;

	if (keys_are_plain(t))
	{
		FmgrInfo   *in = palloc(sizeof(FmgrInfo) * t->nkeys);
		FmgrInfo   *out = palloc(sizeof(FmgrInfo) * t->nkeys);
		Oid		   *ioparam = palloc(sizeof(Oid) * t->nkeys);
		char	  **names = palloc(sizeof(char *) * t->nkeys);

		for (int k = 0; k < t->nkeys; k++)
		{
			Oid			func;
			bool		varlena;

			getTypeInputInfo(t->key_types[k], &func, &ioparam[k]);
			fmgr_info(func, &in[k]);
			getTypeOutputInfo(t->key_types[k], &func, &varlena);
			fmgr_info(func, &out[k]);
			names[k] = NameStr(TupleDescAttr(desc, t->key_attnums[k] - 1)->attname);
		}
		for (int i = 0; i < n; i++)
		{
			StringInfoData key;
			const char *given;

			if (es[i].data == NULL)
				continue;
			initStringInfo(&key);
			cs_key_start(&key, t);
			for (int k = 0; k < t->nkeys; k++)
			{
				JsonbValue *v = getKeyJsonValueFromContainer(&es[i].data->root, names[k],
															 strlen(names[k]), NULL);
				char	   *text;

				if (v == NULL || v->type == jbvNull)
				{
					es[i].data = NULL;
					break;
				}
				text = OutputFunctionCall(&out[k],
										  InputFunctionCall(&in[k], jsonb_scalar_text(v),
															ioparam[k], t->key_typmods[k]));
				if (k > 0)
					appendStringInfoChar(&key, ':');
				cs_key_append_part(&key, text, strlen(text));
			}
			if (es[i].data == NULL)
				continue;
			es[i].key = key.data;
			given = entry_field(es[i].fields, "key");
			if (given != NULL && strcmp(given, es[i].key) != 0)
				es[i].data = NULL;
		}
		return;
	}

	(void) pushJsonbValue(&st, WJB_BEGIN_ARRAY, NULL);
	for (int i = 0; i < n; i++)
	{
		if (es[i].data)
		{
			push_object(&st, es[i].data);
			m++;
		}
	}
	if (m == 0)
		return;
	if (run_jsonb(psprintf("SELECT pg_catalog.jsonb_populate_recordset(NULL::%s, $1)", rel),
				  end_array(&st), true, 0) != SPI_OK_SELECT || SPI_processed != m)
		elog(ERROR, "could not read write-back data");
	for (int i = 0; i < n; i++)
	{
		HeapTupleData tuple;
		bool		isnull;
		const char *given;

		if (es[i].data == NULL)
			continue;
		cs_row_tuple(&tuple, DatumGetHeapTupleHeader(SPI_getbinval(SPI_tuptable->vals[row++],
															 SPI_tuptable->tupdesc, 1, &isnull)),
					 t->relid);
		for (int k = 0; k < t->nkeys && es[i].data; k++)
		{
			if (heap_attisnull(&tuple, t->key_attnums[k], desc))
				es[i].data = NULL;
		}
		if (es[i].data == NULL)
			continue;
		es[i].key = cs_row_key(t, &tuple, desc);
		given = entry_field(es[i].fields, "key");
		if (given != NULL && strcmp(given, es[i].key) != 0)
			es[i].data = NULL;
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Folds the entries that passed their checks per row key, in stream order:
 * an upsert merges its columns into the row's (the later wins per column),
 * a delete resets the row (deleted first; what follows is upserted into no
 * row).  Returns the folds in the order of their keys' first entries.
 */
static List *
fold_entries(WbEntry *es, int n)
{
	HTAB	   *folds = cs_keyset_create("cachesync write-back folds", n,
										 sizeof(WbFold), CurrentMemoryContext);
	List	   *order = NIL;

	for (int i = 0; i < n; i++)
	{
		WbFold	   *f;
		bool		found;

		if (es[i].data == NULL)
			continue;
		f = hash_search(folds, &es[i].key, HASH_ENTER, &found);
		if (!found)
		{
			f->key = es[i].key;
			f->deleted = false;
			f->keys = f->data = NULL;
			order = lappend(order, f);
		}
		if (!es[i].upsert)
		{
			f->deleted = true;
			f->keys = es[i].data;
			f->data = NULL;
		}
		else if (f->data == NULL)
			f->data = es[i].data;
		else
			f->data = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
														 JsonbPGetDatum(f->data),
														 JsonbPGetDatum(es[i].data)));
	}
	return order;
}

/* Returns the group of folded rows with data's columns, added if new. */
static List *
group_of(TupleDesc desc, List *groups, Jsonb *data, WbGroup **gp)
{
	JsonbIterator *it = JsonbIteratorInit(&data->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	AttrNumber	atts[MaxHeapAttributeNumber];
	int			n = 0;
	ListCell   *lc;
	WbGroup    *g;

	/* an object's keys are unique, in one order (jsonb sorts them) */
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY && n < MaxHeapAttributeNumber)
			atts[n++] = desc_attnum(desc, v.val.string.val, v.val.string.len);
	}
	foreach(lc, groups)
	{
		g = lfirst(lc);
		if (g->ncolumns == n && memcmp(g->columns, atts, sizeof(AttrNumber) * n) == 0)
		{
			*gp = g;
			return groups;
		}
	}
	g = palloc0(sizeof(WbGroup));
	g->ncolumns = n;
	g->columns = palloc(sizeof(AttrNumber) * Max(n, 1));
	memcpy(g->columns, atts, sizeof(AttrNumber) * n);
	for (int i = 0; i < n; i++)
		g->cols = lappend_int(g->cols, atts[i]);
	(void) pushJsonbValue(&g->rows, WJB_BEGIN_ARRAY, NULL);
	*gp = g;
	return lappend(groups, g);
}

/*
 * Applies the folded rows: one DELETE of the rows whose fold has a delete,
 * then one upsert per set of columns (at most one row per key each, so ON
 * CONFLICT never meets a row twice).  Every statement is made before the
 * first runs: t may be freed by then (wb_lookup).  With rows, the upserts
 * return the rows they stored and the delete the rows it deleted, copied
 * into cxt: (*rows)[0 .. *ndeleted - 1] deleted, then up to *nrows stored.
 */
static void
apply_folds(CsTable *t, TupleDesc desc, const char *rel, List *folds, Datum **rows, int *nrows,
			int *ndeleted, MemoryContext cxt)
{
	JsonbParseState *deletes = NULL;
	List	   *groups = NIL;
	List	   *sqls = NIL;
	List	   *args = NIL;
	ListCell   *lc,
			   *lc2;
	int			ndeletes = 0;

	(void) pushJsonbValue(&deletes, WJB_BEGIN_ARRAY, NULL);
	foreach(lc, folds)
	{
		WbFold	   *f = lfirst(lc);
		WbGroup    *g;

		if (f->deleted)
		{
			push_object(&deletes, f->keys);
			ndeletes++;
		}
		if (f->data)
		{
			groups = group_of(desc, groups, f->data, &g);
			push_object(&g->rows, f->data);
		}
	}
	if (ndeletes > 0)
	{
		sqls = lappend(sqls, delete_sql(t, rel, true, rows != NULL));
		args = lappend(args, DatumGetPointer(end_array(&deletes)));
	}
	foreach(lc, groups)
	{
		WbGroup    *g = lfirst(lc);

		sqls = lappend(sqls, upsert_sql(t, rel, g->cols, true, rows != NULL));
		args = lappend(args, DatumGetPointer(end_array(&g->rows)));
	}
	if (rows)
	{
		/* a fold's row is deleted at most once and stored at most once */
		*rows = MemoryContextAlloc(cxt, sizeof(Datum) * Max(2 * list_length(folds), 1));
		*nrows = 0;
		*ndeleted = 0;
	}
	forboth(lc, sqls, lc2, args)
	{
		int			rc = run_jsonb(lfirst(lc), PointerGetDatum(lfirst(lc2)), false, 0);
		MemoryContext old;

		if (rc < 0)
			elog(ERROR, "could not apply write-back entries");
		if (rows == NULL ||
			(rc != SPI_OK_INSERT_RETURNING && rc != SPI_OK_DELETE_RETURNING))
			continue;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);

			if (isnull || *nrows >= 2 * list_length(folds))
				elog(ERROR, "unexpected row returned by a write-back statement");
			old = MemoryContextSwitchTo(cxt);
			(*rows)[(*nrows)++] = datumCopy(d, false, -1);
			MemoryContextSwitchTo(old);
		}
		if (rc == SPI_OK_DELETE_RETURNING)
			*ndeleted = *nrows;	/* the delete runs first */
		SPI_freetuptable(SPI_tuptable);
	}
}

/* check_functions_in_node callback: true for a function not built in */
static bool
user_function(Oid func, void *context)
{
	return func >= FirstNormalObjectId;
}

/*
 * Returns true when the expression may call a function that is not built
 * in: it names one, or casts to a domain (whose checks may), or compares
 * values of a type that is not built in (MinMaxExpr).
 */
static bool
calls_user_function(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (check_functions_in_node(node, user_function, context) ||
		IsA(node, CoerceToDomain) ||
		(IsA(node, MinMaxExpr) && ((MinMaxExpr *) node)->minmaxtype >= FirstNormalObjectId))
		return true;
	return expression_tree_walker(node, calls_user_function, context);
}

/*
 * Returns true when maintaining rel's indexes may call a function that is
 * not built in: an expression or a predicate that calls one, an operator
 * class that is not built in, or an exclusion constraint.
 */
static bool
indexes_call_user_functions(Relation rel)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		found = false;

	foreach(lc, indexes)
	{
		Relation	index = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index ix = index->rd_index;

		found = ix->indisexclusion ||
			calls_user_function((Node *) RelationGetIndexExpressions(index), NULL) ||
			calls_user_function((Node *) RelationGetIndexPredicate(index), NULL);
		for (int k = 0; !found && k < ix->indnkeyatts; k++)
			found = index->rd_opfamily[k] >= FirstNormalObjectId;
		index_close(index, AccessShareLock);
		if (found)
			break;
	}
	list_free(indexes);
	return found;
}

/*
 * Returns true when writing rel's rows can run no code but PostgreSQL's,
 * besides its triggers, so that it writes nothing else: no inheritance
 * children, no row-level security, every column of a built-in type (a
 * domain's checks, a user type's functions may run), nothing but built-in
 * functions in its defaults, generated columns and check constraints, and
 * none in its indexes.  A user function could write other tables.
 */
static bool
writes_only_itself(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleConstr *c = desc->constr;

	if (rel->rd_rel->relhassubclass || rel->rd_rel->relrowsecurity)
		return false;
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && att->atttypid >= FirstNormalObjectId)
			return false;
	}
	for (int i = 0; c != NULL && i < c->num_defval; i++)
	{
		if (calls_user_function(stringToNode(c->defval[i].adbin), NULL))
			return false;
	}
	for (int i = 0; c != NULL && i < c->num_check; i++)
	{
		if (calls_user_function(stringToNode(c->check[i].ccbin), NULL))
			return false;
	}
	return !indexes_call_user_functions(rel);
}

/*
 * Classifies relid's triggers and rules for a batch (WbBatch.triggers),
 * under RowExclusiveLock, the upserts' own, held to the end of the
 * transaction: no trigger or rule can be added (ShareRowExclusiveLock)
 * before the commit.  Only a plain table (not partitioned, no inheritance
 * children: their own triggers would not show here) without rules counts
 * as:
 * - WB_TRIGGERS_NONE: no trigger besides cachesync's own.  With *alone
 *   (writes_only_itself), applying its entries writes nothing else (no
 *   cascade, no trigger, no function), so nothing else uses Redis before
 *   the commit (process_stream's pipeline in flight can wait), and the
 *   batch need not wait for its commit's flush (WbAcks);
 * - WB_TRIGGERS_BEFORE_ROW: BEFORE ROW triggers too.  The rows its upserts
 *   return are the rows as the batch leaves them (a BEFORE ROW trigger's
 *   changes are in them), so the settle can take them instead of reading
 *   them back; an AFTER or a statement trigger could change them later.
 */
static WbTriggers
table_triggers(Oid relid, bool *alone)
{
	Relation	rel = relation_open(relid, RowExclusiveLock);
	TriggerDesc *td = rel->trigdesc;
	WbTriggers	kind = WB_TRIGGERS_NONE;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rules != NULL ||
		rel->rd_rel->relhassubclass)
		kind = WB_TRIGGERS_OTHER;
	for (int i = 0; kind != WB_TRIGGERS_OTHER && td != NULL && i < td->numtriggers; i++)
	{
		Trigger    *tg = &td->triggers[i];

		if ((strcmp(tg->tgname, "cachesync_capture") == 0 ||
			 strcmp(tg->tgname, "cachesync_truncate") == 0) &&
			get_func_namespace(tg->tgfoid) == get_namespace_oid("cachesync", false))
			continue;
		kind = TRIGGER_FOR_ROW(tg->tgtype) && TRIGGER_FOR_BEFORE(tg->tgtype) ?
			WB_TRIGGERS_BEFORE_ROW : WB_TRIGGERS_OTHER;
	}
	*alone = kind == WB_TRIGGERS_NONE && writes_only_itself(rel);
	relation_close(rel, NoLock);
	return kind;
}

static CsTable *wb_lookup_or_throw(Oid relid);

/* Returns the set of row keys of rows (whole-row values of relid). */
static HTAB *
deleted_keys(Oid relid, Datum *rows, int n)
{
	CsTable    *t = wb_lookup_or_throw(relid);
	Relation	rel = relation_open(relid, AccessShareLock);
	HTAB	   *keys = cs_keyset_create("cachesync write-back deleted keys", Max(n, 1),
										sizeof(char *), CurrentMemoryContext);

	for (int i = 0; i < n; i++)
	{
		HeapTupleData tuple;
		char	   *key;

		cs_row_tuple(&tuple, DatumGetHeapTupleHeader(rows[i]),
					 relid);
		key = cs_row_key(t, &tuple, RelationGetDescr(rel));
		hash_search(keys, &key, HASH_ENTER, NULL);
	}
	relation_close(rel, AccessShareLock);
	return keys;
}

/* Throws (to leave the collapsing path) unless relid is still write_back. */
static CsTable *
wb_lookup_or_throw(Oid relid)
{
	CsTable    *t = wb_lookup(relid);

	if (t == NULL)
		elog(ERROR, "write-back registration of relation %u changed", relid);
	return t;
}

/*
 * Checks, folds and applies entries es[0..n-1] (new ones, in stream order)
 * in one subtransaction, as the table's owner with capture of the table
 * off (as apply_entry).  Returns false, with nothing applied, when the
 * batch is to take the per-entry path; a transient error (wb_transient) is
 * thrown again, as there.  On success every entry that failed its checks
 * has its error in edata.
 */
static bool
apply_collapsed(WbBatch *b, Oid relid, WbEntry *es, int n)
{
	MemoryContext cxt = b->cxt;
	MemoryContext old = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;
	Datum	   *volatile rows = NULL;
	volatile int nrows_out = 0;
	List	   *volatile gone = NIL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(old);
	PG_TRY();
	{
		CsAsOwner	save;
		CsTable    *t = wb_lookup_or_throw(relid);
		char	   *rel = rel_name(relid);
		Relation	r = relation_open(relid, AccessShareLock);
		TupleDesc	desc = RelationGetDescr(r);
		List	   *folds;
		bool		returning;
		int			nrows = 0;
		int			ndeleted = 0;

		wb_become_owner(relid, &save);
		for (int i = 0; i < n; i++)
		{
			CHECK_FOR_INTERRUPTS();
			if (!entry_precheck(t, desc, &es[i]))
				es[i].data = NULL;
		}
		entry_keys(t, desc, rel, es, n);
		/* the exact error of each bad entry, as the per-entry path gives it */
		for (int i = 0; i < n; i++)
		{
			char	   *key;

			if (es[i].data != NULL)
				continue;
			t = wb_lookup_or_throw(relid);
			if (apply_entry(t, es[i].fields, &key, &es[i].edata, cxt, true, NULL))
				elog(ERROR, "write-back entry %s passed the checks it failed", es[i].id);
		}
		folds = fold_entries(es, n);
		returning = b->triggers != WB_TRIGGERS_OTHER;
		t = wb_lookup_or_throw(relid);
		cs_capture_skip_relid = relid;
		apply_folds(t, desc, rel, folds, returning ? (Datum **) &rows : NULL, &nrows, &ndeleted, cxt);
		cs_capture_skip_relid = InvalidOid;
		if (returning)
		{
			ListCell   *lc;
			HTAB	   *deleted = deleted_keys(relid, rows, ndeleted);

			/*
			 * Deleted keys the statement found a row for (a row it did not
			 * find, perhaps being inserted meanwhile, is read back), and the
			 * stored rows after them
			 */
			MemoryContextSwitchTo(cxt);
			foreach(lc, folds)
			{
				WbFold	   *f = lfirst(lc);

				if (f->deleted && f->data == NULL &&
					hash_search(deleted, &f->key, HASH_FIND, NULL) != NULL)
					gone = lappend(gone, pstrdup(f->key));
			}
			MemoryContextSwitchTo(old);
			rows += ndeleted;
			nrows_out = nrows - ndeleted;
		}
		relation_close(r, NoLock);
		wb_stop_being_owner(&save);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(old);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata = wb_subxact_failed(cxt, old, owner);

		ereport(DEBUG1,
				(errmsg_internal("cachesync writeback: collapsed batch of \"%s\" failed, applying its entries one by one: %s",
								 get_rel_name(relid), edata->message)));
		ok = false;
	}
	PG_END_TRY();
	if (ok && rows != NULL)
	{
		b->rows = rows;
		b->nrows = nrows_out;
		b->gone = gone;
	}
	return ok;
}

/*
 * Records in b how entry e went (applied, or dead-lettered with edata) and
 * remembers its key for the settle; returns false when relid is no longer
 * a write_back table.
 */
static bool
record_entry(WbBatch *b, Oid relid, CsPipeline *dlq, WbEntry *e, const char *key,
			 ErrorData *edata)
{
	CsTable    *t = wb_lookup(relid);

	if (t == NULL)
		return false;
	if (edata)
	{
		b->dead++;
		append_dead_letter(dlq, t, e->id, e->fields, edata);
		b->last_error = edata->message; /* edata lives in b->cxt */
		key = entry_field(e->fields, "key");
	}
	else
		b->applied++;
	add_guard(b, t, key, e->id);
	return true;
}

/* Applies entry e alone in its own subtransaction (apply_entry). */
static bool
apply_alone(WbBatch *b, Oid relid, CsPipeline *dlq, WbEntry *e)
{
	char	   *key = NULL;
	ErrorData  *edata = NULL;
	CsTable    *t;

	CHECK_FOR_INTERRUPTS();
	if ((t = wb_lookup(relid)) == NULL)
		return false;
	(void) apply_entry(t, e->fields, &key, &edata, b->cxt, false, &b->unguarded);
	return record_entry(b, relid, dlq, e, key, edata);
}

/*
 * Makes b->settle, the settles of the rows the collapsed path stored (and
 * of the keys it deleted), before the commit: they need no read-back.  The
 * version is drawn as a pusher's, after the statements that locked the
 * rows: a transaction that changed a row before them committed before, with
 * a lower version; one that changes it after them waits for this commit and
 * draws a higher one.  process_stream withdraws the published bound after
 * the commit.  Formatting runs user code (output functions): when it
 * fails, the settle reads every key back instead.
 */
static void
settle_from_rows(WbBatch *b, Oid relid)
{
	MemoryContext old = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	uint64		version = cs_version_begin_push();

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(b->cxt);
	PG_TRY();
	{
		CsAsOwner	save;
		CsTable    *t = wb_lookup_or_throw(relid);

		wb_become_owner(relid, &save);
		b->settled = cs_keyset_create("cachesync write-back settled keys",
									  b->nrows + list_length(b->gone), sizeof(char *), b->cxt);
		b->settle = cs_pipeline_create();
		cs_sync_append_settle(t, b->settle, b->rows, b->nrows, b->gone, b->guards,
							  version, b->settled, &b->unguarded);
		wb_stop_being_owner(&save);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(old);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata = wb_subxact_failed(b->cxt, old, owner);

		ereport(DEBUG1,
				(errmsg_internal("cachesync writeback: formatting the rows of \"%s\" failed, reading them back: %s",
								 get_rel_name(relid), edata->message)));
		b->settle = NULL;
		b->settled = NULL;
	}
	PG_END_TRY();
}

/* A pipeline in flight while the next batch is applied (process_stream). */
typedef struct WbFlight
{
	CsPipeline *p;
	int			nacks;			/* starts with this many XACKs and XTRIMs */
	WbBatch    *settling;		/* then the settles of this batch */
	int			nsettle;
	int			nread;			/* ends with this many XREADGROUPs of the stream */
} WbFlight;

static WbFlight wb_flight;		/* in flight while p != NULL */
static CsReply *wb_read_ahead[2];	/* what the last flight read */

static void acks_add(WbBatch *b);

/*
 * Reads the replies of f: true when every acknowledgement and settle
 * succeeded, with entries[0 .. f->nread - 1] set to the entries read (or
 * NULL).
 */
static bool
land(WbFlight *f, CsReply **entries)
{
	CsReply   **r;
	const char *error;
	int			i = 0;

	entries[0] = entries[1] = NULL;
	if (!cs_redis_try_run(f->p, &r))
		return wb_failed("settling and reading write-back entries", cs_redis_last_error()) != WB_FAILED;
	if (!cs_replies_ok(r, f->nacks, &error))
		return wb_failed("acknowledging write-back entries", error) != WB_FAILED;
	i += f->nacks;
	if (!cs_replies_ok(r + i, f->nsettle, &error))
		return wb_failed("settling the cache after write-back", error) != WB_FAILED;
	i += f->nsettle;
	for (int k = 0; k < f->nread; k++, i++)
	{
		if (r[i]->type == CS_REPLY_ERROR)
			return wb_failed("reading the write-back streams", r[i]->str) != WB_FAILED;
		if (r[i]->type == CS_REPLY_ARRAY && r[i]->nelem > 0)
			entries[k] = r[i]->elem[0]->elem[1];
	}
	return true;
}

/* Returns true when entries holds at least one entry. */
static bool
has_entries(CsReply *entries)
{
	return entries != NULL && entries->type == CS_REPLY_ARRAY && entries->nelem > 0;
}

/*
 * Lands the pipeline in flight, if any: wb_read_ahead then holds what it
 * read, and the batch it settled is added to the acknowledgements due.
 * Returns false on failure.
 */
static bool
land_flight(void)
{
	bool		ok;

	if (wb_flight.p == NULL)
		return true;
	ok = land(&wb_flight, wb_read_ahead);
	if (ok && wb_flight.settling)
		acks_add(wb_flight.settling);
	wb_flight.p = NULL;
	return ok;
}

/*
 * cs_worker_xact step: applies a batch of one stream (see the file header), dead
 * letters sent before the commit.  Returns false (roll back) when the
 * table is no longer a write_back table or Redis failed.
 */
static bool
apply_batch(void *arg)
{
	WbBatch    *b = arg;
	Oid			relid = b->wt->relid;
	CsPipeline *dlq;
	char	   *start;
	CsReply   **r;
	const char *error;
	WbEntry    *es = palloc0(sizeof(WbEntry) * Max(b->entries->nelem, 1));
	int			n = 0;
	MemoryContext old;
	bool		landed;
	CsTable    *t;

	if (wb_lookup(relid) == NULL)
		return false;
	/*
	 * Deferred constraints and constraint triggers would fire at COMMIT,
	 * outside every entry's subtransaction: one bad entry would abort the
	 * batch again and again.  Checked at the end of each entry's statement
	 * instead, a violation dead-letters that entry alone.
	 */
	if (SPI_execute("SET CONSTRAINTS ALL IMMEDIATE", false, 0) < 0)
		elog(ERROR, "could not set constraints immediate");
	b->triggers = table_triggers(relid, &b->alone);
	/* the lock may have waited for a change of the registration */
	if ((t = wb_lookup(relid)) == NULL)
		return false;
	b->alone = b->alone && !t->changes;

	/*
	 * Only cachesync's own triggers, nothing else written, and no change
	 * stream: their row events would all be skipped (the worker settles the
	 * keys itself), so they need not fire at all.  session_replication_role
	 * = replica fires only ENABLE ALWAYS and ENABLE REPLICA triggers;
	 * cachesync's are neither, table_triggers found no other (RI triggers
	 * included) on the table, and no other table is written.
	 */
	if (b->alone)
		(void) set_config_option("session_replication_role", "replica", PGC_SUSET,
								 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	dlq = cs_pipeline_create();
	start = read_progress(relid);
	for (size_t i = 0; i < b->entries->nelem; i++)
	{
		CsReply    *e = b->entries->elem[i];
		const char *id = e->elem[0]->str;
		CsReply    *fields = e->nelem > 1 ? e->elem[1] : NULL;
		CsTable    *t;
		MemoryContext old;

		old = MemoryContextSwitchTo(b->cxt);	/* results outlive SPI's memory */
		b->acks = lappend(b->acks, pstrdup(id));
		b->last = pstrdup(id);
		MemoryContextSwitchTo(old);
		if (fields == NULL || fields->type != CS_REPLY_ARRAY)
			continue;			/* deleted from the stream meanwhile */
		if (!id_le(id, start))
		{
			es[n].id = id;
			es[n++].fields = fields;
			continue;
		}
		/* applied before a crash: settle again, harmless */
		if ((t = wb_lookup(relid)) == NULL)
			return false;
		add_guard(b, t, entry_field(fields, "key"), id);
	}
	if (cachesync_writeback_collapse && n > 1 && collapse_is_safe(relid) &&
		apply_collapsed(b, relid, es, n))
	{
		for (int i = 0; i < n; i++)
		{
			if (!record_entry(b, relid, dlq, &es[i], es[i].key, es[i].edata))
				return false;
		}
	}
	else
	{
		b->rows = NULL;
		for (int i = 0; i < n; i++)
		{
			if (!apply_alone(b, relid, dlq, &es[i]))
				return false;
		}
	}

	/*
	 * The pipeline in flight comes first (replies are read in order): before
	 * the dead letters, and before a commit that may push other tables'
	 * changes (triggers, cascades).  Landed before settle_from_rows publishes
	 * its bound, so that no populator waits on these round trips.
	 */
	if (dlq->ncommands > 0 || !b->alone)
	{
		old = MemoryContextSwitchTo(b->cxt);
		landed = land_flight();
		MemoryContextSwitchTo(old);
		if (!landed)
			return false;
	}
	if (dlq->ncommands > 0)
	{
		if (!cs_redis_try_run(dlq, &r))
			return wb_failed("writing dead letters", cs_redis_last_error()) != WB_FAILED;
		if (!cs_replies_ok(r, dlq->ncommands, &error))
			return wb_failed("writing dead letters", error) != WB_FAILED;
	}
	if (b->rows != NULL)
		settle_from_rows(b, relid);
	if (n > 0)
		write_progress(relid, es[n - 1].id);

	/*
	 * Commit without waiting for the WAL flush: the entries are acknowledged
	 * only once it is flushed (see WbAcks).  Not when the batch may have
	 * written other tables (triggers, cascades, functions) or change
	 * events, which other cachesync processes may push to Redis right
	 * after the commit; nor with synchronous standbys, which the
	 * acknowledgement does not wait for.
	 */
	if (b->alone &&
		(SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] == '\0'))
		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	return true;
}

/* Returns the id right after id: XTRIM MINID of it drops id and all before. */
static char *
next_id(const char *id)
{
	uint64		ms,
				seq;

	parse_id(id, &ms, &seq);
	return psprintf(UINT64_FORMAT "-" UINT64_FORMAT, ms, seq + 1);
}

/*
 * Settles the keys of b that b->settle does not cover (dead-lettered
 * entries, entries applied before a crash, the per-entry path): reads their
 * rows back (cs_worker_xact step).
 */
static bool
settle_rest(void *arg)
{
	WbBatch    *b = arg;
	CsTable    *t = cs_registry_lookup(b->wt->relid);
	CsSyncResult r = {0};

	if (t == NULL || t->broken)
		return true;
	if (!cs_sync_keys_guarded(t, b->rest, b->guards, cs_version_for_read(), &r))
		return wb_failed("settling the cache after write-back", cs_redis_last_error()) != WB_FAILED;
	return true;
}

/* Sets b->rest, the keys b->settle does not cover; returns true when there are some. */
static bool
find_rest(WbBatch *b)
{
	ListCell   *lc;

	b->rest = NIL;
	foreach(lc, b->guard_keys)
	{
		char	   *key = lfirst(lc);

		if (b->settled == NULL || hash_search(b->settled, &key, HASH_FIND, NULL) == NULL)
			b->rest = lappend(b->rest, key);
	}
	b->rest = list_concat(b->rest, b->unguarded);
	return b->rest != NIL;
}

/*
 * Acknowledgements wait for the WAL.  A batch's transaction commits without
 * waiting for its WAL to reach disk (synchronous_commit off, see
 * apply_batch), and its entries are acknowledged only once the WAL is
 * flushed up to its commit record: until then they stay pending in the
 * group, so a crash that loses the commit brings them back, applied again
 * (the progress row was lost with it).  The walwriter flushes the WAL
 * meanwhile (at most wal_writer_delay later), while this worker applies the
 * next batches: the fsync leaves the apply path.  PostgreSQL's logical
 * replication apply worker confirms its flush position to the publisher in
 * the same way.  At the end of a stream's turn (at most WB_MAX_PREFETCH
 * batches) the worker flushes the WAL itself.
 */

typedef struct WbAcks
{
	MemoryContext cxt;			/* emptied after each acknowledgement */
	CsPipeline *p;				/* an XACK per batch, or NULL */
	const char *stream;
	char	   *last;			/* the last entry id acknowledged */
	XLogRecPtr	lsn;			/* the WAL that must be flushed first */
} WbAcks;

static WbAcks wb_acks;

/* Adds the entries of b (committed and settled) to the acknowledgements due. */
static void
acks_add(WbBatch *b)
{
	MemoryContext old;
	int			n = list_length(b->acks);
	const char **argv;
	ListCell   *lc;

	if (wb_acks.cxt == NULL)
		wb_acks.cxt = AllocSetContextCreate(TopMemoryContext, "cachesync write-back acks",
											ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(wb_acks.cxt);
	if (wb_acks.p == NULL)
		wb_acks.p = cs_pipeline_create();
	argv = palloc(sizeof(char *) * (n + 3));
	argv[0] = "XACK";
	argv[1] = b->wt->stream;
	argv[2] = WB_GROUP;
	foreach(lc, b->acks)
		argv[3 + foreach_current_index(lc)] = lfirst(lc);
	cs_pipeline_append_strs(wb_acks.p, n + 3, argv);
	pfree(argv);
	wb_acks.stream = pstrdup(b->wt->stream);
	wb_acks.last = pstrdup(b->last);
	wb_acks.lsn = Max(wb_acks.lsn, b->lsn);
	MemoryContextSwitchTo(old);
}

/* Forgets the acknowledgements due: their entries come back as pending. */
static void
acks_clear(void)
{
	if (wb_acks.cxt != NULL)
		MemoryContextReset(wb_acks.cxt);
	wb_acks.p = NULL;
	wb_acks.last = NULL;
	wb_acks.lsn = InvalidXLogRecPtr;
}

/*
 * Returns true when acknowledgements are due and may be sent: their WAL is
 * flushed, or force flushed it here.
 */
static bool
acks_ready(bool force)
{
	if (wb_acks.p == NULL)
		return false;
	if (GetFlushRecPtr(NULL) >= wb_acks.lsn)
		return true;
	if (!force)
		return false;
	XLogFlush(wb_acks.lsn);
	return true;
}

/*
 * Appends the acknowledgements due to p, with an XTRIM MINID past the last
 * entry (applied entries leave the stream), and forgets them.  Returns the
 * number of commands appended.
 */
static int
acks_append(CsPipeline *p)
{
	int			n = wb_acks.p->ncommands + 1;

	cs_pipeline_append_pipeline(p, wb_acks.p);
	cs_pipeline_append_strs(p, 4, (const char *[]) {"XTRIM", wb_acks.stream, "MINID",
							next_id(wb_acks.last)});
	acks_clear();
	return n;
}

/* Flushes the WAL if need be and sends the acknowledgements due. */
static bool
acks_send(void)
{
	CsPipeline *p;
	CsReply   **r;
	const char *error;
	int			n;

	if (!acks_ready(true))
		return true;
	p = cs_pipeline_create();
	n = acks_append(p);
	if (!cs_redis_try_run(p, &r))
		return wb_failed("acknowledging write-back entries", cs_redis_last_error()) != WB_FAILED;
	if (!cs_replies_ok(r, n, &error))
		return wb_failed("acknowledging write-back entries", error) != WB_FAILED;
	return true;
}

/*
 * Returns the WAL a batch's acknowledgement waits for, given
 * XactLastCommitEnd before its transaction: the end of its commit record,
 * which comes after the commit of any entry it found applied; or, when it
 * wrote none (it only skipped entries an earlier worker process applied,
 * whose commit may not be flushed yet), the end of the WAL inserted so far.
 * That is GetXLogInsertRecPtr() without the header of a page not begun yet
 * (as PostgreSQL 17's GetXLogInsertEndRecPtr), which XLogFlush could not
 * reach.
 */
static XLogRecPtr
batch_lsn(XLogRecPtr commit_end_before)
{
	XLogRecPtr	p;

	if (XactLastCommitEnd != commit_end_before)
		return XactLastCommitEnd;
	p = GetXLogInsertRecPtr();
	if (XLogSegmentOffset(p, wal_segment_size) == SizeOfXLogLongPHD)
		p -= SizeOfXLogLongPHD;
	else if (p % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		p -= SizeOfXLogShortPHD;
	return p;
}

/* batches of one stream applied back to back while its entries keep coming */
#define WB_MAX_PREFETCH 16

/*
 * Applies, settles and acknowledges the batches of one stream, starting with
 * entries.  Past our own pending entries, while the stream has more (at most
 * WB_MAX_PREFETCH batches, then the other streams get their turn), Redis
 * works while Postgres applies: after batch k commits, one pipeline carries
 * the XACKs due (batch k-1 and earlier: settled, and their commits flushed,
 * see WbAcks) and an XTRIM, the settles of batch k and an XREADGROUP of the
 * entries of batch k+2, and its
 * replies are read only after batch k+1 is applied.  Entries read before
 * an earlier batch settled are harmless: a key written again has a newer
 * guard, which the earlier settle leaves alone.  Any failure stops with
 * nothing more acknowledged; what was applied comes back as our pending
 * entries, skipped as applied and settled again.
 */
static bool
process_stream(WbTable *wt, CsReply *entries)
{
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext cxts[4] = {NULL, NULL, NULL, NULL};
	CsReply    *ahead[2] = {entries, NULL};	/* entries read, in order */
	int			rounds = 0;
	bool		ok = true;
	XLogRecPtr	commit_end;

	for (;;)
	{
		WbBatch    *b;
		CsPipeline *p;
		char		count[16];
		CsReply    *next;

		if (!has_entries(ahead[0]))
		{
			ahead[0] = ahead[1];
			ahead[1] = NULL;
		}
		if (!has_entries(ahead[0]))
		{
			if (wb_flight.p == NULL)
				break;
			ok = land_flight();
			ahead[0] = wb_read_ahead[0];
			ahead[1] = wb_read_ahead[1];
			wb_read_ahead[0] = wb_read_ahead[1] = NULL;
			if (!ok)
				break;
			continue;
		}
		next = ahead[0];
		ahead[0] = ahead[1];
		ahead[1] = NULL;

		/*
		 * A batch's memory (and the entries read while it was applied) lives
		 * until the batch three later is applied.
		 */
		if (cxts[3])
			MemoryContextDelete(cxts[3]);
		memmove(cxts + 1, cxts, sizeof(MemoryContext) * 3);
		cxts[0] = AllocSetContextCreate(outer, "cachesync write-back batch",
										ALLOCSET_DEFAULT_SIZES);
		MemoryContextSwitchTo(cxts[0]);
		b = palloc0(sizeof(WbBatch));
		b->wt = wt;
		b->entries = next;
		b->cxt = cxts[0];
		b->guards = cs_keyset_create("cachesync write-back guards", next->nelem,
									 sizeof(CsSyncGuard), cxts[0]);
		commit_end = XactLastCommitEnd;
		ok = cs_worker_xact(apply_batch, b, "applying write-back entries");
		cs_version_end_push();	/* committed, or rolled back (settle_from_rows) */
		if (!ok)
			break;
		b->lsn = batch_lsn(commit_end);
		cs_stats_add(wt->relid, CS_STAT_WB_APPLIED, b->applied);
		cs_stats_add(wt->relid, CS_STAT_WB_DEAD, b->dead);
		if (b->last_error)
			cs_stats_error(wt->relid, b->last_error);

		/*
		 * Committed.  Settle before acknowledging (and flush the commit, see
		 * WbAcks): until the entries are acked they come back after a crash
		 * or a failed settle (read as our
		 * pending entries), are skipped as already applied and settled again,
		 * so the cache never keeps what cachesync_upsert merged (perhaps a
		 * value Postgres refused) nor a guard without TTL.
		 */
		ok = land_flight();		/* or apply_batch did, before its dead letters */
		for (int k = 0; ok && k < 2; k++)
		{
			if (!has_entries(wb_read_ahead[k]))
				continue;
			/* never more than two in hand (see below); else start afresh */
			if (has_entries(ahead[1]))
				ok = wb_failed("reading write-back entries ahead", "too many batches in hand") != WB_FAILED;
			else
				ahead[has_entries(ahead[0]) ? 1 : 0] = wb_read_ahead[k];
		}
		wb_read_ahead[0] = wb_read_ahead[1] = NULL;
		if (!ok)
			break;
		if (find_rest(b) && !cs_worker_xact(settle_rest, b, "settling write-back rows"))
		{
			ok = false;
			break;
		}
		p = cs_pipeline_create();
		wb_flight.nacks = acks_ready(false) ? acks_append(p) : 0;
		wb_flight.settling = b;
		wb_flight.nsettle = b->settle ? b->settle->ncommands : 0;
		if (b->settle)
			cs_pipeline_append_pipeline(p, b->settle);
		/*
		 * Read ahead (past our own pending entries) so that one batch is in
		 * hand, to apply while this pipeline runs, and one arrives with it:
		 * two reads when none is in hand (then it lands at once), else one.
		 * At most two are ever in hand.
		 */
		wb_flight.nread = 0;
		if (!wb_read_own && (rounds += 1) < WB_MAX_PREFETCH)
			wb_flight.nread = 2 - has_entries(ahead[0]) - has_entries(ahead[1]);
		snprintf(count, sizeof(count), "%d", Min(cachesync_batch_size, WB_MAX_READ));
		for (int k = 0; k < wb_flight.nread; k++)
			cs_pipeline_append_strs(p, 9, (const char *[]) {"XREADGROUP", "GROUP", WB_GROUP,
									WB_CONSUMER, "COUNT", count, "STREAMS", wt->stream, ">"});
		cs_pipeline_flush(p);
		wb_flight.p = p;
	}
	MemoryContextSwitchTo(outer);
	/* after a failure, the pipeline's replies are not read: start afresh */
	if (wb_flight.p != NULL)
		cs_redis_disconnect();
	wb_flight.p = NULL;
	wb_read_ahead[0] = wb_read_ahead[1] = NULL;
	ok = ok && acks_send();
	acks_clear();
	if (!ok)
		wb_ready = false;		/* read our pending entries again */
	return ok;
}

/* Publishes each table's pending entries and the age of the oldest. */
static void
update_gauges(void)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **r;
	ListCell   *lc;

	foreach(lc, wb_tables)
	{
		WbTable    *wt = lfirst(lc);

		cs_pipeline_append_strs(p, 2, (const char *[]) {"XLEN", wt->stream});
		cs_pipeline_append_strs(p, 5, (const char *[]) {"XRANGE", wt->stream, "-", "+",
								"COUNT", "1"});
	}
	if (p->ncommands == 0 || !cs_redis_try_run(p, &r))
		return;
	foreach(lc, wb_tables)
	{
		WbTable    *wt = lfirst(lc);
		int			i = foreach_current_index(lc) * 2;
		uint64		ms = 0,
					seq;

		if (r[i]->type == CS_REPLY_INTEGER)
			cs_stats_set(wt->relid, CS_STAT_WB_PENDING, r[i]->integer);
		if (r[i + 1]->type == CS_REPLY_ARRAY && r[i + 1]->nelem > 0)
			parse_id(r[i + 1]->elem[0]->elem[0]->str, &ms, &seq);
		cs_stats_set(wt->relid, CS_STAT_WB_OLDEST_MS, (int64) ms);
	}
}

/*
 * Reads the next entries of every stream: our own pending ones first
 * (after a start or a failure), then new ones, blocking up to
 * WB_BLOCK_MS on the socket.  Returns the reply, or NULL on failure.
 */
static CsReply *
read_entries(void)
{
	int			n = list_length(wb_tables);
	const char **argv = palloc(sizeof(char *) * (10 + 2 * n));
	int			argc = 0;
	char		count[16];
	CsPipeline *p = cs_pipeline_create();
	CsReply   **r;
	ListCell   *lc;

	/* bounded per stream: an entry's data may be up to CS_WB_MAX_DATA */
	snprintf(count, sizeof(count), "%d", Min(cachesync_batch_size, WB_MAX_READ));
	argv[argc++] = "XREADGROUP";
	argv[argc++] = "GROUP";
	argv[argc++] = WB_GROUP;
	argv[argc++] = WB_CONSUMER;
	argv[argc++] = "COUNT";
	argv[argc++] = count;
	if (!wb_read_own)
	{
		argv[argc++] = "BLOCK";
		argv[argc++] = CppAsString2(WB_BLOCK_MS);
	}
	argv[argc++] = "STREAMS";
	foreach(lc, wb_tables)
		argv[argc++] = ((WbTable *) lfirst(lc))->stream;
	for (int i = 0; i < n; i++)
		argv[argc++] = wb_read_own ? "0" : ">";
	cs_pipeline_append_strs(p, argc, argv);
	if (!cs_redis_try_run_blocking(p, &r, wb_read_own ? 0 : WB_BLOCK_MS))
	{
		wb_failed("reading the write-back streams", cs_redis_last_error());
		return NULL;
	}
	if (r[0]->type == CS_REPLY_ERROR)
	{
		/* NOGROUP after FLUSHALL or a deleted stream: set up again, later */
		wb_failed("reading the write-back streams", r[0]->str);
		return NULL;
	}
	return r[0];
}

/* One round: set up when needed, read, apply. */
static WbWork
wb_round(void)
{
	CsReply    *reply;
	bool		any = false;

	if (!wb_ready || GetCurrentTimestamp() >= wb_refresh_at)
	{
		if (!cs_worker_xact(load_tables, NULL, "loading write_back tables"))
			return WB_FAILED;
		if (!publish())
			return WB_FAILED;
		wb_ready = true;
		wb_read_own = true;
		wb_refresh_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), WB_REFRESH_MS);
		update_gauges();
	}
	if (wb_tables == NIL)
		return WB_IDLE;
	reply = read_entries();
	if (reply == NULL)
		return WB_FAILED;
	wb_ok();
	for (size_t i = 0; reply->type == CS_REPLY_ARRAY && i < reply->nelem; i++)
	{
		CsReply    *s = reply->elem[i];
		WbTable    *wt = table_of_stream(s->elem[0]->str);

		if (wt == NULL || s->elem[1]->type != CS_REPLY_ARRAY || s->elem[1]->nelem == 0)
			continue;
		any = true;
		if (!process_stream(wt, s->elem[1]))
			return WB_FAILED;
	}
	if (!any)
		wb_read_own = false;	/* own pending entries done: read new ones */
	update_gauges();
	return WB_DONE;
}

/* before_shmem_exit callback: no populator may wait for a bound we left. */
static void
wb_exit(int code, Datum arg)
{
	cs_version_end_push();
}

/* Entry point of the write-back worker. */
void
cachesync_writeback_main(Datum arg)
{
	int			backoff = 100;
	MemoryContext round_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(cachesync_database, NULL, 0);
	/* a FATAL exit between settle_from_rows and the commit: withdraw the bound */
	before_shmem_exit(wb_exit, (Datum) 0);
	/*
	 * Entries are acknowledged and trimmed from Redis once their batch has
	 * committed: that commit must be durable first, whatever the database's
	 * setting, or a crash could lose applied-and-trimmed entries.
	 */
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
#ifdef __GLIBC__
	/*
	 * Every batch allocates and frees a few MB (entries, JSON, formatted
	 * rows).  glibc would hand big blocks back to the kernel at each reset
	 * (mmap'd chunks, heap trimming) and take them again, page by page: a
	 * tenth of a busy worker's CPU went to page faults.  Keep them.
	 */
	mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
	mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
#endif
	tables_cxt = AllocSetContextCreate(TopMemoryContext, "cachesync write-back tables",
									   ALLOCSET_DEFAULT_SIZES);
	round_cxt = AllocSetContextCreate(TopMemoryContext, "cachesync write-back round",
									  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		WbWork		w;
		long		wait;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			wb_ready = false;
		}
		MemoryContextSwitchTo(round_cxt);
		w = wb_round();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(round_cxt);
		if (w == WB_FAILED)
		{
			wait = backoff;
			backoff = Min(backoff * 2, WB_MAX_BACKOFF_MS);
		}
		else
		{
			backoff = 100;
			wait = (w == WB_IDLE) ? WB_REFRESH_MS / 5 : 0;
		}
		if (wait > 0)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* Returns t if it is a write_back table; throws otherwise. */
static CsTable *
writeback_table(Oid relid)
{
	CsTable    *t;

	cachesync_require_preload();
	t = cs_registry_get(relid);
	if (t->mode != CS_MODE_WRITE_BACK)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" is not registered in write_back mode",
						get_rel_name(relid)),
				 errhint("Dead letters exist only for write_back tables.")));
	return t;
}

/*
 * cachesync.dead_letters(rel regclass, max_entries integer DEFAULT 100)
 * RETURNS TABLE(id text, op text, data text, key text, error text, sqlstate text)
 */
Datum
cachesync_dead_letters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CsTable    *t = writeback_table(PG_GETARG_OID(0));
	int32		max = PG_GETARG_INT32(1);
	char		count[16];
	CsReply    *r;

	if (max <= 0 || max > WB_MAX_DEAD_LETTERS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_entries must be between 1 and %d", WB_MAX_DEAD_LETTERS),
				 errhint("List at most %d at a time; replayed dead letters leave the dead-letter stream.", WB_MAX_DEAD_LETTERS)));
	snprintf(count, sizeof(count), "%d", max);
	r = cs_redis_command_strs(6, (const char *[]) {"XRANGE", cs_wb_stream(t, true), "-", "+",
							  "COUNT", count});
	cs_redis_check_reply(r, "XRANGE");
	InitMaterializedSRF(fcinfo, 0);
	for (size_t i = 0; r->type == CS_REPLY_ARRAY && i < r->nelem; i++)
	{
		CsReply    *e = r->elem[i];
		const char *names[5] = {"op", "data", "key", "error", "sqlstate"};
		Datum		values[6];
		bool		nulls[6] = {0};

		values[0] = CStringGetTextDatum(e->elem[0]->str);
		for (int f = 0; f < 5; f++)
		{
			const char *v = entry_field(e->elem[1], names[f]);

			nulls[f + 1] = (v == NULL);
			if (v)
				values[f + 1] = CStringGetTextDatum(v);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * cachesync.replay_dead_letters(rel regclass, ids text[] DEFAULT NULL)
 * RETURNS bigint: appends the dead letters (all, or those with the given
 * ids) to the write-back stream again and removes them from the dead-letter
 * stream, each in one atomic call; returns how many.
 */
Datum
cachesync_replay_dead_letters(PG_FUNCTION_ARGS)
{
	CsTable    *t = writeback_table(PG_GETARG_OID(0));
	char	   *dlq = cs_wb_stream(t, true);
	char	   *stream = cs_wb_stream(t, false);
	int64		total = 0;
	CsReply    *r;

	if (!PG_ARGISNULL(1))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
		Datum	   *elems;
		bool	   *nulls;
		int			n;
		const char **argv;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		argv = palloc(sizeof(char *) * (n + 7));
		argv[0] = "FCALL";
		argv[1] = "cachesync_replay";
		argv[2] = "2";
		argv[3] = dlq;
		argv[4] = stream;
		argv[5] = "0";
		argv[6] = cachesync_key_prefix;
		for (int i = 0; i < n; i++)
		{
			if (nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("dead-letter ids must not be null")));
			argv[7 + i] = TextDatumGetCString(elems[i]);
		}
		if (n == 0)
			PG_RETURN_INT64(0);
		r = cs_redis_command_strs(n + 7, argv);
		cs_redis_check_reply(r, "FCALL cachesync_replay");
		PG_RETURN_INT64(r->integer);
	}

	/* all of them: as many as there are now, so new dead letters wait */
	r = cs_redis_command_strs(2, (const char *[]) {"XLEN", dlq});
	cs_redis_check_reply(r, "XLEN");
	for (int64 left = r->integer; left > 0;)
	{
		char		count[32];

		CHECK_FOR_INTERRUPTS();
		snprintf(count, sizeof(count), INT64_FORMAT, Min(left, 1000));
		r = cs_redis_command_strs(7, (const char *[]) {"FCALL", "cachesync_replay", "2",
								  dlq, stream, count, cachesync_key_prefix});
		cs_redis_check_reply(r, "FCALL cachesync_replay");
		if (r->integer == 0)
			break;
		total += r->integer;
		left -= r->integer;
	}
	PG_RETURN_INT64(total);
}
