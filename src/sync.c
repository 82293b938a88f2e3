/*-------------------------------------------------------------------------
 *
 * sync.c
 *	  Bringing cache entries in line with a table's committed rows: the
 *	  populator path shared by the worker's queue replay, healing after a
 *	  failed or crashed push, and TRUNCATE.
 *
 * The caller draws the version (cs_version_for_read) before this reads the
 * rows with a fresh snapshot, so a newer commit always wins over what is
 * written here, whatever the caller's isolation level.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "cachesync.h"
#include "capture.h"
#include "keys.h"
#include "keyspace.h"
#include "rowformat.h"
#include "sync.h"
#include "version.h"

/* keys whose write is guarded (cs_sync_keys_guarded), or NULL */
static HTAB *sync_guards = NULL;

/*
 * Rows per multi-key call (cachesync_put_many / cachesync_del_many), and
 * bytes of values per call: one call is one Lua run that blocks Redis, and
 * the whole pipeline is held in memory until it is sent.
 */
#define CS_BATCH_ROWS 128
#define CS_BATCH_BYTES (256 * 1024)

/*
 * The fenced writes of a populator collected into multi-key calls: every
 * row of a populator's batch shares the table (format, TTL) and the
 * version, so one FCALL carries many rows (about 3x cheaper for Redis than
 * one cachesync_put per row).  Puts and deletes go to separate calls; each
 * key appears at most once per populator batch, so their order does not
 * matter.
 */
typedef struct CsBatch
{
	CsPipeline *p;
	CsTable    *t;
	uint64		version;
	bool		put;			/* puts (values), else keys only */
	bool		settle;			/* write-back settles (batch_init_settle) */
	const char *fn;				/* the function called */
	int			nrows;
	const char **keys;			/* row key, version key (, guard key) per row */
	size_t	   *keylens;
	int			nvals;			/* values (and hash field counts) */
	int			maxvals;
	const char **vals;
	size_t	   *vallens;
	size_t		bytes;
} CsBatch;

/*
 * Starts an empty batch of puts (put) or deletes of t on p.  Deletes carry
 * the tombstone TTL; so does a sweep (fn changed to cachesync_sweep, with
 * the minimum version as version).
 */
static void
batch_init(CsBatch *b, CsPipeline *p, CsTable *t, uint64 version, bool put)
{
	b->p = p;
	b->t = t;
	b->version = version;
	b->put = put;
	b->settle = false;
	b->fn = put ? "cachesync_put_many" : "cachesync_del_many";
	b->nrows = 0;
	b->keys = palloc(sizeof(char *) * 3 * CS_BATCH_ROWS);
	b->keylens = palloc(sizeof(size_t) * 3 * CS_BATCH_ROWS);
	b->nvals = 0;
	b->maxvals = put ? 2 * CS_BATCH_ROWS : 0;
	b->vals = put ? palloc(sizeof(char *) * b->maxvals) : NULL;
	b->vallens = put ? palloc(sizeof(size_t) * b->maxvals) : NULL;
	b->bytes = 0;
}

/*
 * Starts an empty batch of write-back settles (cachesync_settle_many): puts
 * and deletes, each through its row's guard.
 */
static void
batch_init_settle(CsBatch *b, CsPipeline *p, CsTable *t, uint64 version)
{
	batch_init(b, p, t, version, true);
	b->settle = true;
	b->fn = "cachesync_settle_many";
}

/*
 * Appends the collected rows to the pipeline as one FCALL and empties the
 * batch; returns true when it appended one.
 */
static bool
batch_emit(CsBatch *b)
{
	int			per_row = b->settle ? 3 : 2;
	int			nhead = b->settle ? 4 : b->put ? 3 : 2;
	int			argc = 3 + per_row * b->nrows + nhead + b->nvals;
	const char **argv;
	size_t	   *lens;
	char		vbuf[32];
	char		nbuf[32];
	char		ttl[32];
	char		tomb[32];
	int			a = 0;

	if (b->nrows == 0)
		return false;
	argv = palloc(sizeof(char *) * argc);
	lens = palloc(sizeof(size_t) * argc);
	snprintf(vbuf, sizeof(vbuf), UINT64_FORMAT, b->version);
	snprintf(nbuf, sizeof(nbuf), "%d", per_row * b->nrows);
	snprintf(tomb, sizeof(tomb), "%d", cachesync_tombstone_ttl);
	if (b->put)
		snprintf(ttl, sizeof(ttl), INT64_FORMAT, b->t->ttl_ms);
	else
		strlcpy(ttl, tomb, sizeof(ttl));
	argv[a++] = "FCALL";
	argv[a++] = b->fn;
	argv[a++] = nbuf;
	for (int i = 0; i < a; i++)
		lens[i] = strlen(argv[i]);
	memcpy(argv + a, b->keys, sizeof(char *) * per_row * b->nrows);
	memcpy(lens + a, b->keylens, sizeof(size_t) * per_row * b->nrows);
	a += per_row * b->nrows;
	argv[a] = vbuf;
	lens[a] = strlen(vbuf);
	a++;
	argv[a] = ttl;
	lens[a] = strlen(ttl);
	a++;
	if (b->settle)
	{
		argv[a] = tomb;
		lens[a] = strlen(tomb);
		a++;
	}
	if (b->put)
	{
		argv[a] = b->t->format == CS_FORMAT_JSON ? "json" : "hash";
		lens[a] = 4;
		a++;
		memcpy(argv + a, b->vals, sizeof(char *) * b->nvals);
		memcpy(lens + a, b->vallens, sizeof(size_t) * b->nvals);
		a += b->nvals;
	}
	Assert(a == argc);
	cs_pipeline_append(b->p, argc, argv, lens);
	pfree(argv);
	pfree(lens);
	b->nrows = 0;
	b->nvals = 0;
	b->bytes = 0;
	return true;
}

/* Adds one value argument to b. */
static void
batch_add_val(CsBatch *b, const char *val, size_t len)
{
	if (b->nvals == b->maxvals)
	{
		b->maxvals *= 2;
		b->vals = repalloc(b->vals, sizeof(char *) * b->maxvals);
		b->vallens = repalloc(b->vallens, sizeof(size_t) * b->maxvals);
	}
	b->vals[b->nvals] = val;
	b->vallens[b->nvals++] = len;
	b->bytes += len;
}

/*
 * Adds the fenced write of key (value NULL: a delete, which b must be
 * for) to b; returns true when that completed a call (batch_emit).  The
 * strings must live until the batch is emitted.
 */
static bool
batch_add(CsBatch *b, const char *key, CsValue *value)
{
	const char *ks[3] = {key, cs_version_key(key), NULL};
	int			per_row = 2;

	Assert(b->settle || b->put == (value != NULL));
	if (b->settle)
	{
		CsSyncGuard *g = hash_search(sync_guards, &key, HASH_FIND, NULL);

		ks[per_row++] = cs_wb_guard_key(key);
		batch_add_val(b, g->id, strlen(g->id));
		batch_add_val(b, value ? "p" : "d", 1);
	}
	for (int i = 0; i < per_row; i++)
	{
		b->keys[per_row * b->nrows + i] = ks[i];
		b->keylens[per_row * b->nrows + i] = strlen(ks[i]);
		b->bytes += strlen(ks[i]);
	}
	b->nrows++;
	if (value && b->t->format == CS_FORMAT_JSON)
		batch_add_val(b, value->args[0], value->lens[0]);
	else if (value)
	{
		char	   *n = psprintf("%d", value->nargs);

		batch_add_val(b, n, strlen(n));
		for (int i = 0; i < value->nargs; i++)
			batch_add_val(b, value->args[i], value->lens[i]);
	}
	if (b->nrows == CS_BATCH_ROWS || b->bytes >= CS_BATCH_BYTES)
		return batch_emit(b);
	return false;
}

/*
 * Appends the fenced write of key: through its guard if it has one (on
 * its own, cachesync_settle), else into batch (puts) or dels (deletes).
 * Returns true when a multi-key call was completed.
 */
static bool
append_write(CsBatch *batch, char *key, CsValue *value)
{
	CsSyncGuard *g = sync_guards ? hash_search(sync_guards, &key, HASH_FIND, NULL) : NULL;
	CsTable    *t = batch->t;

	if (g)
	{
		cs_append_guarded_write(batch->p, key, cs_wb_guard_key(key), g->id, value,
								t->format, t->ttl_ms, batch->version);
		return false;
	}
	return batch_add(batch, key, value);
}

/* called after each page cs_sync_table wrote (reload's progress report) */
cs_sync_progress_hook_type cs_sync_progress_hook = NULL;

/* Returns true when key names one of t's streams rather than a row. */
bool
cs_is_stream_key(CsTable *t, const char *key)
{
	const char *rest = key + strlen(cachesync_key_prefix) + strlen(t->key_prefix);

	return strcmp(rest, "__writeback") == 0 ||
		strcmp(rest, "__writeback:dlq") == 0 ||
		strcmp(rest, "__changes") == 0;
}

/*
 * Returns true for errors that say nothing about the rows being read: a
 * cancel or shutdown (class 57), lack of resources (53), a system error
 * (58) or a transaction rollback such as a deadlock (40).  Guarded reads
 * pass these on instead of treating the keys as unreadable.
 */
bool
cs_error_is_transient(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_OPERATOR_INTERVENTION ||
		category == ERRCODE_INSUFFICIENT_RESOURCES ||
		category == ERRCODE_SYSTEM_ERROR ||
		category == ERRCODE_TRANSACTION_ROLLBACK;
}

/*
 * For the PG_CATCH of a subtransaction begun (BeginInternalSubTransaction)
 * while old was the memory context and owner the resource owner: rolls it
 * back (which restores the user, the security context and the GUCs),
 * restores both, throws an error transient() accepts again, and returns
 * any other, copied into cxt.
 */
ErrorData *
cs_subxact_failed(MemoryContext cxt, MemoryContext old, ResourceOwner owner,
				  bool (*transient) (int sqlerrcode))
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(old);
	CurrentResourceOwner = owner;
	if (transient(edata->sqlerrcode))
		ReThrowError(edata);
	return edata;
}

/* Returns the query that fetches t's rows whose key values are given as text arrays. */
static char *
fetch_query(CsTable *t)
{
	StringInfoData q;
	char	   *rel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(t->relid)),
												 get_rel_name(t->relid));

	initStringInfo(&q);
	/* (r.*), not r: a column named r would be read instead of the row */
	appendStringInfo(&q, "SELECT (r.*)::%s FROM %s r JOIN ROWS FROM (", rel, rel);
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "%spg_catalog.unnest($%d::pg_catalog.text[])", i ? ", " : "", i + 1);
	appendStringInfoString(&q, ") AS u(");
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "%sk%d", i ? ", " : "", i + 1);
	appendStringInfoString(&q, ") ON ");
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "%sr.%s = u.k%d::%s", i ? " AND " : "",
						 quote_identifier(get_attname(t->relid, t->key_attnums[i], false)),
						 i + 1, format_type_with_typemod(t->key_types[i], t->key_typmods[i]));
	return q.data;
}

/* A prepared populator query, kept for the life of the process. */
typedef struct CsPlanEntry
{
	uint32		hash;			/* of the query text: the hash key */
	char	   *query;			/* the text, in TopMemoryContext */
	int			nargs;
	Oid			types[INDEX_MAX_KEYS];
	SPIPlanPtr	plan;			/* SPI_keepplan'd */
} CsPlanEntry;

#define CS_PLAN_CACHE_MAX 64

static HTAB *plan_cache = NULL;

/*
 * Returns a kept plan of query: the worker and populators run the same few
 * queries (a table's fetch by keys, its pages) for every batch, and parsing
 * and planning them each time cost a third of a busy worker's CPU.  The
 * plan cache revalidates the plan when a table it reads changes; a query
 * text that changes (the registration did) gets a new entry.  Past
 * CS_PLAN_CACHE_MAX queries, new ones are prepared for each use.
 */
static SPIPlanPtr
cached_plan(const char *query, int nargs, Oid *types, bool *temporary)
{
	uint32		hash = string_hash(query, strlen(query) + 1);
	CsPlanEntry *e;
	SPIPlanPtr	plan;

	*temporary = false;
	if (plan_cache == NULL)
	{
		HASHCTL		ctl = {0};

		ctl.keysize = sizeof(uint32);
		ctl.entrysize = sizeof(CsPlanEntry);
		plan_cache = hash_create("cachesync populator plans", 16, &ctl,
								 HASH_ELEM | HASH_BLOBS);
	}
	if (nargs > INDEX_MAX_KEYS)
		elog(ERROR, "cachesync: too many query arguments");
	e = hash_search(plan_cache, &hash, HASH_FIND, NULL);
	if (e != NULL && strcmp(e->query, query) == 0 && e->nargs == nargs &&
		memcmp(e->types, types, sizeof(Oid) * nargs) == 0)
		return e->plan;

	/*
	 * Not cached.  A full cache, or a slot another query holds (a hash
	 * collision), is left alone: an entry's plan may be running further up
	 * the stack (a type's output function can read through the cache), so
	 * none is ever freed; this plan is the caller's to free.
	 */
	plan = SPI_prepare(query, nargs, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (e != NULL || hash_get_num_entries(plan_cache) >= CS_PLAN_CACHE_MAX)
	{
		*temporary = true;
		return plan;
	}
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	e = hash_search(plan_cache, &hash, HASH_ENTER, NULL);
	e->plan = plan;
	e->query = MemoryContextStrdup(TopMemoryContext, query);
	e->nargs = nargs;
	memcpy(e->types, types, sizeof(Oid) * nargs);
	return e->plan;
}

/*
 * Runs query with the given text[] or text arguments under a fresh snapshot
 * taken now, after the caller drew its version (or, when !fresh, under the
 * caller's own snapshot, for a read that stores nothing).  Leaves the rows
 * in SPI_tuptable.
 */
static void
run_snapshot(CsTable *t, const char *query, int nargs, Oid *types, Datum *args,
			 bool fresh)
{
	bool		temporary;
	SPIPlanPtr	plan = cached_plan(query, nargs, types, &temporary);
	Snapshot	snap;
	int			rc;

	snap = RegisterSnapshot(fresh ? GetLatestSnapshot() : GetActiveSnapshot());
	rc = SPI_execute_snapshot(plan, args, NULL, snap, InvalidSnapshot, true, false, 0);
	UnregisterSnapshot(snap);
	if (temporary)
		SPI_freeplan(plan);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read rows of \"%s\"", get_rel_name(t->relid));
}

/* run_snapshot() with a fresh snapshot: the populator's read. */
static void
run_fresh(CsTable *t, const char *query, int nargs, Oid *types, Datum *args)
{
	run_snapshot(t, query, nargs, types, args, true);
}

/* rows formatted between two sends of a pipeline (cs_pipeline_flush) */
#define CS_FLUSH_ROWS CS_BATCH_ROWS

/*
 * Appends a fenced put of every row in SPI_tuptable (whole-row values of
 * t in column 1) to p (if not NULL), remembering their keys in found (if
 * not NULL) and handing key and value to each (if not NULL).  Returns the
 * key of the last row.
 */
static char *
append_rows_each(CsTable *t, CsPipeline *p, uint64 version, HTAB *found,
				 CsRowFn each, void *arg)
{
	Relation	rel = relation_open(t->relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	char	   *key = NULL;
	CsBatch		batch;
	int			unsent = 0;

	if (p)
		batch_init(&batch, p, t, version, true);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		HeapTupleHeader hdr = DatumGetHeapTupleHeader(d);
		HeapTupleData tuple;
		CsValue    *value;

		cs_row_tuple(&tuple, hdr, t->relid);
		key = cs_row_key(t, &tuple, desc);
		value = cs_row_value(t, &tuple, desc);
		if (found)
			hash_search(found, &key, HASH_ENTER, NULL);
		if (each)
			each(key, value, arg);
		/* a row whose key names one of the table's streams is never cached */
		if (p && !cs_is_stream_key(t, key))
		{
			append_write(&batch, key, value);
			unsent++;
		}
		/*
		 * Populators (no callback) let Redis work on the first rows while
		 * the next ones are formatted; read-through stores only after its
		 * caller's checks.
		 */
		if (p && !each && unsent >= CS_FLUSH_ROWS)
		{
			batch_emit(&batch);
			cs_pipeline_flush(p);
			unsent = 0;
		}
	}
	if (p)
		batch_emit(&batch);
	relation_close(rel, AccessShareLock);
	return key;
}

/* append_rows_each() without a callback. */
static char *
append_rows(CsTable *t, CsPipeline *p, uint64 version, HTAB *found)
{
	return append_rows_each(t, p, version, found, NULL, NULL);
}

/* Sends p; returns false when Redis failed or refused a command. */
static bool
send_writes(CsPipeline *p)
{
	CsReply   **replies;
	const char *error;

	if (!cs_redis_try_run(p, &replies))
		return false;
	if (!cs_replies_ok(replies, p->ncommands, &error))
	{
		cs_redis_disconnect();
		return false;
	}
	return true;
}


/*
 * Becomes relid's owner in a restricted operation with a pinned search_path:
 * the worker runs as a superuser, and no user-defined function it calls
 * while reading (a type's output function, say) may act with that power.
 */
void
cs_become_owner(Oid relid, CsAsOwner *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec);
	SetUserIdAndSecContext(cs_rel_owner(relid),
						   save->sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save->nest = cs_pin_search_path();
}

/* Undoes cs_become_owner(). */
void
cs_stop_being_owner(CsAsOwner *save)
{
	cs_unpin_search_path(save->nest);
	SetUserIdAndSecContext(save->userid, save->sec);
}

/* How a guarded read went. */
typedef struct CsFetch
{
	CsPipeline *p;				/* the fenced puts of the rows found */
	HTAB	   *found;			/* their keys */
	uint64		rows;
} CsFetch;

/*
 * Reads the rows of the given key values and appends their fenced puts to
 * a fresh pipeline, as the table's owner (cs_become_owner).  Runs in a
 * subtransaction: returns false, with nothing changed,
 * when the read fails, e.g. for a key value its column type refuses.
 */
static bool
fetch_guarded(CsTable *t, Datum *arrays, int m, uint64 version, CsFetch *f)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Oid		   *types = palloc(sizeof(Oid) * t->nkeys);
	volatile bool ok = true;

	for (int i = 0; i < t->nkeys; i++)
		types[i] = TEXTARRAYOID;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		CsAsOwner	save;

		cs_become_owner(t->relid, &save);
		run_fresh(t, fetch_query(t), t->nkeys, types, arrays);
		f->p = cs_pipeline_create();
		f->found = cs_keyset_create("cachesync found keys", m, sizeof(char *), cxt);
		append_rows(t, f->p, version, f->found);
		f->rows = SPI_processed;
		SPI_freetuptable(SPI_tuptable);
		cs_stop_being_owner(&save);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* part of it may have been sent (flushed): start the next one afresh */
		f->p = NULL;
		/* a cancel, shutdown or lack of resources is not the rows' fault */
		edata = cs_subxact_failed(cxt, cxt, owner, cs_error_is_transient);
		ereport(DEBUG1,
				(errmsg_internal("cachesync: reading rows of \"%s\" failed: %s",
								 get_rel_name(t->relid), edata->message)));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Writes the committed state of each key of t to Redis with version: the
 * row's value where the row exists, a deletion tombstone where it does not.
 * A key that is not a row key of t (wrong shape, or values its key columns'
 * types refuse: written by someone else under the prefix) has no row, so it
 * is removed too; streams are left alone.  Returns false when Redis failed
 * (nothing is known of what arrived).
 */
bool
cs_sync_keys(CsTable *t, List *keys, uint64 version, CsSyncResult *result)
{
	int			n = list_length(keys);
	Datum	   *arrays = palloc(sizeof(Datum) * t->nkeys);
	Datum	  **parts = palloc(sizeof(Datum *) * t->nkeys);
	List	   *rowkeys = NIL;
	List	   *strays = NIL;
	CsFetch		f = {0};
	CsBatch		dels;
	ListCell   *lc;
	int			m = 0;

	for (int i = 0; i < t->nkeys; i++)
		parts[i] = palloc(sizeof(Datum) * Max(n, 1));
	foreach(lc, keys)
	{
		char	  **values;

		if (cs_is_stream_key(t, lfirst(lc)))
			continue;
		values = cs_key_parse(t, lfirst(lc), strlen(lfirst(lc)));
		if (values == NULL)
		{
			strays = lappend(strays, lfirst(lc));
			continue;
		}
		for (int i = 0; i < t->nkeys; i++)
			parts[i][m] = CStringGetTextDatum(values[i]);
		rowkeys = lappend(rowkeys, lfirst(lc));
		m++;
	}
	for (int i = 0; i < t->nkeys; i++)
		arrays[i] = PointerGetDatum(construct_array(parts[i], m, TEXTOID, -1, false, TYPALIGN_INT));

	if (m > 0 && !fetch_guarded(t, arrays, m, version, &f))
	{
		/* some key value is refused: retry one by one to find which */
		bool		ok = true;

		if (m == 1)
			strays = list_concat(strays, rowkeys);
		else
			foreach(lc, rowkeys)
				ok = ok && cs_sync_keys(t, list_make1(lfirst(lc)), version, result);
		rowkeys = NIL;
		if (!ok)
			return false;
	}
	if (f.p == NULL)
		f.p = cs_pipeline_create();
	result->pushed += f.rows;
	foreach(lc, rowkeys)
	{
		char	   *key = lfirst(lc);

		if (hash_search(f.found, &key, HASH_FIND, NULL) == NULL)
			strays = lappend(strays, key);
	}
	batch_init(&dels, f.p, t, version, false);
	foreach(lc, strays)
	{
		append_write(&dels, lfirst(lc), NULL);
		result->removed++;
	}
	batch_emit(&dels);
	return f.p->ncommands == 0 || send_writes(f.p);
}

/*
 * cs_sync_keys() for keys whose write is guarded: guards (made with
 * cs_keyset_create, CsSyncGuard entries) holds, per key, the write-back
 * entry id its guard must still hold for the write to happen.
 */
bool
cs_sync_keys_guarded(CsTable *t, List *keys, HTAB *guards, uint64 version,
					 CsSyncResult *result)
{
	bool		ok;

	sync_guards = guards;
	PG_TRY();
	{
		ok = cs_sync_keys(t, keys, version, result);
	}
	PG_FINALLY();
	{
		sync_guards = NULL;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Appends to p the guarded writes that settle write-back keys of t with
 * version: each of rows (whole-row values of t, as the writer's own
 * statements stored and returned them) as its value, each key of gone as
 * deleted, only keys guards holds: the keys of other rows (a trigger
 * changed them) are added to *unguarded, to be read back.  Adds the keys
 * written to done.  The caller drew version as a
 * pusher (cs_version_begin_push) after those statements locked the rows.
 */
void
cs_sync_append_settle(CsTable *t, CsPipeline *p, Datum *rows, int nrows,
					  List *gone, HTAB *guards, uint64 version, HTAB *done,
					  List **unguarded)
{
	PG_TRY();
	{
		Relation	rel = relation_open(t->relid, AccessShareLock);
		TupleDesc	desc = RelationGetDescr(rel);
		CsBatch		settles;
		ListCell   *lc;

		sync_guards = guards;
		batch_init_settle(&settles, p, t, version);
		for (int i = 0; i < nrows; i++)
		{
			HeapTupleHeader hdr = DatumGetHeapTupleHeader(rows[i]);
			HeapTupleData tuple;
			char	   *key;

			cs_row_tuple(&tuple, hdr, t->relid);
			key = cs_row_key(t, &tuple, desc);
			if (cs_is_stream_key(t, key))
				continue;
			/* not an entry's key (a trigger changed it): read back */
			if (!hash_search(guards, &key, HASH_FIND, NULL))
			{
				*unguarded = lappend(*unguarded, key);
				continue;
			}
			hash_search(done, &key, HASH_ENTER, NULL);
			batch_add(&settles, key, cs_row_value(t, &tuple, desc));
		}
		foreach(lc, gone)
		{
			char	   *key = lfirst(lc);

			if (cs_is_stream_key(t, key) || !hash_search(guards, &key, HASH_FIND, NULL) ||
				hash_search(done, &key, HASH_FIND, NULL))
				continue;
			hash_search(done, &key, HASH_ENTER, NULL);
			batch_add(&settles, key, NULL);
		}
		batch_emit(&settles);
		relation_close(rel, AccessShareLock);
	}
	PG_FINALLY();
	{
		sync_guards = NULL;
	}
	PG_END_TRY();
}

typedef struct SyncPageArg
{
	CsTable    *t;
	uint64		version;
	CsSyncResult *result;
} SyncPageArg;

/* cs_keyspace_scan callback: syncs one SCAN page of keys. */
static bool
sync_page(List *keys, void *arg)
{
	SyncPageArg *a = arg;

	return cs_sync_keys(a->t, keys, a->version, a->result);
}

/*
 * Syncs every key under t's prefix (after a TRUNCATE): keys whose row is
 * gone are removed.  Returns false when Redis failed.
 */
bool
cs_sync_prefix(CsTable *t, uint64 version, CsSyncResult *result)
{
	SyncPageArg a = {t, version, result};
	char	   *prefix = psprintf("%s%s", cachesync_key_prefix, t->key_prefix);

	return cs_keyspace_scan(prefix, sync_page, &a);
}

/* Returns the query listing which of the given key values have no row. */
static char *
orphan_query(CsTable *t)
{
	StringInfoData q;

	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT u.i FROM ROWS FROM (");
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "%spg_catalog.unnest($%d::pg_catalog.text[])", i ? ", " : "", i + 1);
	appendStringInfoString(&q, ") WITH ORDINALITY AS u(");
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "k%d, ", i + 1);
	appendStringInfo(&q, "i) WHERE NOT EXISTS (SELECT 1 FROM %s r WHERE ",
					 quote_qualified_identifier(get_namespace_name(get_rel_namespace(t->relid)),
												get_rel_name(t->relid)));
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "%sr.%s = u.k%d::%s", i ? " AND " : "",
						 quote_identifier(get_attname(t->relid, t->key_attnums[i], false)),
						 i + 1, format_type_with_typemod(t->key_types[i], t->key_typmods[i]));
	appendStringInfoChar(&q, ')');
	return q.data;
}

/*
 * Marks in orphan[] which of the n parsed keys have no row, reading with a
 * fresh snapshot.  Runs in a subtransaction: returns false when the read
 * fails (a key value its column's type refuses).
 */
static bool
find_orphans(CsTable *t, char ***parsed, int n, bool *orphan)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Oid		   *types = palloc(sizeof(Oid) * t->nkeys);
	Datum	   *arrays = palloc(sizeof(Datum) * t->nkeys);
	char	   *query = orphan_query(t);
	volatile bool ok = true;

	for (int i = 0; i < t->nkeys; i++)
	{
		Datum	   *parts = palloc(sizeof(Datum) * n);

		for (int k = 0; k < n; k++)
			parts[k] = CStringGetTextDatum(parsed[k][i]);
		arrays[i] = PointerGetDatum(construct_array(parts, n, TEXTOID, -1, false, TYPALIGN_INT));
		types[i] = TEXTARRAYOID;
	}
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		SPIPlanPtr	plan = SPI_prepare(query, t->nkeys, types);
		Snapshot	snap = RegisterSnapshot(GetLatestSnapshot());
		int			rc = SPI_execute_snapshot(plan, arrays, NULL, snap, InvalidSnapshot,
											  true, false, 0);

		UnregisterSnapshot(snap);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read rows of \"%s\"", get_rel_name(t->relid));
		memset(orphan, 0, sizeof(bool) * n);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			int64		i = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														SPI_tuptable->tupdesc, 1, &isnull));

			orphan[i - 1] = true;
		}
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		/* a cancel, shutdown or lack of resources is not the keys' fault */
		FreeErrorData(cs_subxact_failed(cxt, cxt, owner, cs_error_is_transient));
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
}

/*
 * Returns the keys among the given ones (under t's prefix) that are no
 * row's key: the row is gone or the key cannot be one of t's.  Streams are
 * skipped.  Reads with a fresh snapshot, as the table's owner.
 */
List *
cs_orphans_among(CsTable *t, List *keys)
{
	int			n = list_length(keys);
	char	 ***parsed = palloc(sizeof(char **) * Max(n, 1));
	char	  **rowkeys = palloc(sizeof(char *) * Max(n, 1));
	bool	   *orphan = palloc0(sizeof(bool) * Max(n, 1));
	List	   *result = NIL;
	ListCell   *lc;
	int			m = 0;
	CsAsOwner	save;

	foreach(lc, keys)
	{
		char	  **values;

		if (cs_is_stream_key(t, lfirst(lc)))
			continue;
		values = cs_key_parse(t, lfirst(lc), strlen(lfirst(lc)));
		if (values == NULL)
		{
			result = lappend(result, lfirst(lc));
			continue;
		}
		parsed[m] = values;
		rowkeys[m++] = lfirst(lc);
	}
	cs_become_owner(t->relid, &save);
	if (m > 0 && !find_orphans(t, parsed, m, orphan))
	{
		/* some key value is refused: check one by one; a refused one has no row */
		for (int k = 0; k < m; k++)
			if (!find_orphans(t, &parsed[k], 1, &orphan[k]))
				orphan[k] = true;
	}
	cs_stop_being_owner(&save);
	for (int k = 0; k < m; k++)
		if (orphan[k])
			result = lappend(result, rowkeys[k]);
	return result;
}

/*
 * cs_keyspace_scan callback: removes the keys of one SCAN page whose
 * version is missing or older than the reload's first version
 * (cachesync_sweep), in calls of CS_BATCH_ROWS keys.  Streams are skipped.
 */
static bool
sweep_page(List *keys, void *arg)
{
	SyncPageArg *a = arg;	/* version: the minimum version kept */
	CsPipeline *p = cs_pipeline_create();
	CsBatch		b;
	CsReply   **replies;
	const char *error;
	ListCell   *lc;

	batch_init(&b, p, a->t, a->version, false);
	b.fn = "cachesync_sweep";
	foreach(lc, keys)
		if (!cs_is_stream_key(a->t, lfirst(lc)))
			batch_add(&b, lfirst(lc), NULL);
	batch_emit(&b);
	if (p->ncommands == 0)
		return true;
	if (!cs_redis_try_run(p, &replies))
		return false;
	if (!cs_replies_ok(replies, p->ncommands, &error))
	{
		cs_redis_disconnect();
		return false;
	}
	for (int i = 0; i < p->ncommands; i++)
		if (replies[i]->type == CS_REPLY_INTEGER)
			a->result->removed += replies[i]->integer;
	return true;
}

/*
 * Removes every key under t's prefix that has no row, leaving the other
 * keys untouched: a reload's second pass, after cs_sync_table has written
 * every row with versions of at least min_version (its first one).
 *
 * Redis decides alone, with no read in Postgres: after that first pass,
 * every row that exists has a version of at least min_version at its key
 * (the reload's put, or the write of a commit after the row's page
 * snapshot, which the fence orders after it), so a key whose version is
 * missing or older is a key without a row: a deleted row's leftover, a key
 * no row can have, or a value written without a version by another
 * client.  It is deleted with a tombstone of min_version, which a later
 * writer of the row (a commit after the snapshot: higher version) still
 * passes and an older populator does not.  A key whose row appeared after
 * its page's snapshot and is not in Redis yet (async, queued) is not
 * touched: the worker writes it with a newer version.  Keys with a TTL
 * carry their version key with the same TTL, so both are there or neither.
 * Streams under the prefix are never touched.  Returns false when Redis
 * failed.
 */
bool
cs_sync_orphans(CsTable *t, uint64 min_version, CsSyncResult *result)
{
	SyncPageArg a = {t, min_version, result};
	char	   *prefix = psprintf("%s%s", cachesync_key_prefix, t->key_prefix);

	return cs_keyspace_scan(prefix, sweep_page, &a);
}

/* Returns the ORDER BY list of t's key columns. */
static char *
key_order(CsTable *t)
{
	StringInfoData q;

	initStringInfo(&q);
	for (int i = 0; i < t->nkeys; i++)
		appendStringInfo(&q, "%sr.%s", i ? ", " : "",
						 quote_identifier(get_attname(t->relid, t->key_attnums[i], false)));
	return q.data;
}

/* Returns the query reading the page of t's rows after the given key. */
static char *
page_query(CsTable *t, bool first)
{
	StringInfoData q;
	char	   *rel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(t->relid)),
												 get_rel_name(t->relid));
	char	   *order = key_order(t);

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT (r.*)::%s FROM %s r", rel, rel);
	if (!first)
	{
		appendStringInfo(&q, " WHERE (%s) > (", order);
		for (int i = 0; i < t->nkeys; i++)
			appendStringInfo(&q, "%s$%d::%s", i ? ", " : "", i + 1,
							 format_type_with_typemod(t->key_types[i], t->key_typmods[i]));
		appendStringInfoChar(&q, ')');
	}
	appendStringInfo(&q, " ORDER BY %s LIMIT %d", order, cachesync_batch_size);
	return q.data;
}

/* multi-key calls cs_sync_table sends before it reads their replies */
#define CS_SYNC_UNREAD 1024

/*
 * Writes every row of t to Redis, one page of cachesync.batch_size rows at a
 * time in key order, each page with a version drawn just before its fresh
 * snapshot, so concurrent writes win.  Keys without a row are left alone.
 * Returns false when Redis failed.
 */
bool
cs_sync_table(CsTable *t, CsSyncResult *result)
{
	Oid		   *types = palloc(sizeof(Oid) * t->nkeys);
	Datum	   *args = palloc(sizeof(Datum) * t->nkeys);
	char	   *first = page_query(t, true);
	char	   *next = page_query(t, false);
	bool		more = true;
	bool		started = false;
	MemoryContext page_cxt = AllocSetContextCreate(CurrentMemoryContext,
												   "cachesync load page",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	CsPipeline *p = cs_pipeline_create();

	for (int i = 0; i < t->nkeys; i++)
		types[i] = TEXTOID;

	while (more)
	{
		char	   *last;
		char	  **values;
		uint64		version;
		CsAsOwner	save;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(page_cxt);
		version = cs_version_for_read();
		if (!started)
			result->first_version = version;
		cs_become_owner(t->relid, &save);
		run_fresh(t, started ? next : first, started ? t->nkeys : 0, types, args);
		more = (SPI_processed == (uint64) cachesync_batch_size);
		last = append_rows(t, p, version, NULL);
		result->pushed += SPI_processed;
		cs_stop_being_owner(&save);

		/*
		 * Send the page but read the replies only every CS_SYNC_UNREAD
		 * calls: Redis applies this page while the next one is read and
		 * formatted (pages hold different keys, and each write carries the
		 * version drawn before its own snapshot, so their order in Redis
		 * does not matter).
		 */
		cs_pipeline_flush(p);
		if (p->ncommands > 0 && (!more || p->failed || p->ncommands >= CS_SYNC_UNREAD))
		{
			if (!send_writes(p))
			{
				MemoryContextSwitchTo(old);
				return false;
			}
			cs_pipeline_reset(p);
		}
		if (more)
		{
			values = cs_key_parse(t, last, strlen(last));
			MemoryContextSwitchTo(old);
			for (int i = 0; i < t->nkeys; i++)
				args[i] = CStringGetTextDatum(values[i]);
		}
		else
			MemoryContextSwitchTo(old);
		SPI_freetuptable(SPI_tuptable);
		MemoryContextReset(page_cxt);
		started = true;
		if (cs_sync_progress_hook)
			cs_sync_progress_hook(t, result);
	}
	MemoryContextDelete(page_cxt);
	return true;
}

/*
 * Read-through's miss path.  Reads the rows of n keys of t (values[i]: the
 * normalized key values of key i) as t's owner and hands each row's key and
 * value to each.  With a version (drawn by cs_version_for_read() before
 * this), the read takes a fresh snapshot and the rows' fenced puts are
 * returned for cs_sync_store(); with version 0, it reads under the caller's
 * snapshot and returns NULL (nothing may be stored).  The caller checked
 * the current user's privileges; errors are thrown.
 */
CsPipeline *
cs_sync_read(CsTable *t, char ***values, int n, uint64 version,
			 CsRowFn each, void *arg)
{
	Oid		   *types = palloc(sizeof(Oid) * t->nkeys);
	Datum	   *arrays = palloc(sizeof(Datum) * t->nkeys);
	Datum	   *parts = palloc(sizeof(Datum) * Max(n, 1));
	CsPipeline *p = version ? cs_pipeline_create() : NULL;
	CsAsOwner	save;

	for (int i = 0; i < t->nkeys; i++)
	{
		for (int k = 0; k < n; k++)
			parts[k] = CStringGetTextDatum(values[k][i]);
		arrays[i] = PointerGetDatum(construct_array(parts, n, TEXTOID, -1, false, TYPALIGN_INT));
		types[i] = TEXTARRAYOID;
	}
	cs_become_owner(t->relid, &save);
	run_snapshot(t, fetch_query(t), t->nkeys, types, arrays, version != 0);
	append_rows_each(t, p, version, NULL, each, arg);
	SPI_freetuptable(SPI_tuptable);
	cs_stop_being_owner(&save);
	return p;
}

/* Sends the puts of cs_sync_read(); returns false when Redis failed. */
bool
cs_sync_store(CsPipeline *p)
{
	return p == NULL || p->ncommands == 0 || send_writes(p);
}

/*
 * Throws when the current transaction has written: fn reads the latest
 * committed rows with fresh snapshots, which would include this
 * transaction's uncommitted changes, and publishes them in Redis.
 */
void
cs_require_no_writes(const char *fn)
{
	if (GetTopTransactionIdIfAny() != InvalidTransactionId)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s cannot run in a transaction that has written data", fn),
				 errdetail("It reads the latest committed rows, which would include this transaction's uncommitted changes."),
				 errhint("Run it in its own transaction.")));
}

/*
 * Throws unless the current user may SELECT relid: prefill() and reload()
 * read rows as the table's owner, which must not let a caller without
 * SELECT put them into Redis.
 */
void
cs_require_select(Oid relid)
{
	AclResult	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);

	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, get_rel_name(relid));
}
