/*-------------------------------------------------------------------------
 *
 * read.c
 *	  Read-through: cachesync.get() and cachesync.get_many().
 *
 * A read checks the caller's privileges first (SELECT on the table, or on
 * every cached column; USAGE on its schema; no row-level security in
 * force), then asks Redis for every key in one pipelined round trip.  A hit
 * is the stored value as jsonb: the JSON object of a json table, or an
 * object of the hash fields (text values) of a hash table.  The misses are
 * read from the table in one query, as its owner, and stored with the
 * table's format and TTL through the populator path (sync.c): the version
 * is drawn before the fresh snapshot the rows are read with, so a writer
 * that commits a newer row, or deletes it, after that snapshot always wins
 * in Redis (see version.c).  A miss returns the jsonb a hit of the stored
 * value would return, built from the very same value.
 *
 * Rows are not stored (but are still returned) when:
 *   - Redis is unreachable: the cache must not lower availability, so the
 *     row comes from the table under the caller's snapshot;
 *   - the table is write_back: Redis is where its writes start, and a row
 *     read from the table may be older than an entry not yet applied;
 *   - the transaction has written data: it reads its own rows under its
 *     own snapshot and bypasses Redis entirely, since a cached value would
 *     not show its uncommitted changes.
 *
 * Every read counts as a hit or a miss in cachesync.stats and as a read of
 * its key for the hot-key counters (hotkeys.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "cachesync.h"
#include "hotkeys.h"
#include "keys.h"
#include "redis.h"
#include "registry.h"
#include "shmem.h"
#include "stats.h"
#include "sync.h"
#include "version.h"

int			cachesync_debug_read_pause_lock = 0;

PG_FUNCTION_INFO_V1(cachesync_get);
PG_FUNCTION_INFO_V1(cachesync_get_many);

/* A batch of keys of one table being read. */
typedef struct CsRead
{
	CsTable    *t;
	int			n;
	char	 ***values;			/* normalized key values of each key */
	char	  **keys;			/* Redis keys */
	Datum	   *results;		/* jsonb, or 0 while not found */
	HTAB	   *positions;		/* Redis key -> position, for the misses */
	MemoryContext cxt;			/* where results live */
} CsRead;

typedef struct CsPosition
{
	char	   *key;
	int			pos;
} CsPosition;

/*
 * Throws unless the current user may read every cached column of t: the
 * rows are read as the table's owner, so the cache must not become a way
 * around the caller's own privileges (nor around row-level security, which
 * a read-through cannot apply).
 */
static void
require_read(CsTable *t)
{
	Oid			user = GetUserId();
	AclResult	aclresult;
	Relation	rel;
	TupleDesc	desc;
	StringInfoData missing;

	aclresult = pg_namespace_aclcheck(get_rel_namespace(t->relid), user, ACL_USAGE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_SCHEMA, get_namespace_name(get_rel_namespace(t->relid)));
	if (check_enable_rls(t->relid, InvalidOid, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cachesync.get() cannot read table \"%s\": row-level security applies to you",
						get_rel_name(t->relid)),
				 errhint("Query the table directly; a cache shared by every role cannot apply row policies.")));
	if (pg_class_aclcheck(t->relid, user, ACL_SELECT) == ACLCHECK_OK)
		return;

	initStringInfo(&missing);
	rel = relation_open(t->relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || !cs_column_is_cached(t, att->attnum))
			continue;
		if (pg_attribute_aclcheck(t->relid, att->attnum, user, ACL_SELECT) != ACLCHECK_OK)
			appendStringInfo(&missing, "%s%s", missing.len ? ", " : "",
							 quote_identifier(NameStr(att->attname)));
	}
	relation_close(rel, AccessShareLock);
	if (missing.len > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(t->relid)),
				 errdetail("cachesync.get() returns the cached columns, and you may not read column(s) %s.",
						   missing.data),
				 errhint("GRANT SELECT on the table, or on every cached column.")));
}

/* Returns the jsonb of a JSON object text. */
static Datum
jsonb_of_text(const char *json, size_t len)
{
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(json, len)));
}

/* Returns the jsonb object of n field/value pairs (NUL-terminated strings). */
static Datum
jsonb_of_pairs(char **strs, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (int i = 0; i + 1 < n; i += 2)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, strs[i]);
		appendStringInfoChar(&buf, ':');
		escape_json(&buf, strs[i + 1]);
	}
	appendStringInfoChar(&buf, '}');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/* Returns the jsonb of a hit, or 0 when reply says the key is missing. */
static Datum
decode_hit(CsTable *t, CsReply *reply)
{
	if (t->format == CS_FORMAT_JSON)
		return reply->type == CS_REPLY_STRING ? jsonb_of_text(reply->str, reply->len) : 0;
	if (reply->type != CS_REPLY_ARRAY || reply->nelem == 0)
		return 0;
	{
		char	  **strs = palloc(sizeof(char *) * reply->nelem);

		for (size_t i = 0; i < reply->nelem; i++)
			strs[i] = reply->elem[i]->str ? reply->elem[i]->str : "";
		return jsonb_of_pairs(strs, reply->nelem);
	}
}

/* CsRowFn of a miss: keeps the row read from the table as its result. */
static void
take_row(const char *key, CsValue *value, void *arg)
{
	CsRead	   *r = arg;
	CsPosition *pos = hash_search(r->positions, &key, HASH_FIND, NULL);
	MemoryContext old;

	if (pos == NULL)
		return;
	old = MemoryContextSwitchTo(r->cxt);
	if (r->t->format == CS_FORMAT_JSON)
		r->results[pos->pos] = jsonb_of_text(value->args[0], value->lens[0]);
	else
		r->results[pos->pos] = jsonb_of_pairs(value->args, value->nargs);
	MemoryContextSwitchTo(old);
}

/*
 * Asks Redis for every key of r in one round trip and keeps the hits.
 * Returns false when Redis failed.
 */
static bool
read_hits(CsRead *r, int *hits)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **replies;
	MemoryContext old;

	for (int i = 0; i < r->n; i++)
		cs_pipeline_append_strs(p, 2, (const char *[]) {
			r->t->format == CS_FORMAT_JSON ? "GET" : "HGETALL", r->keys[i]});
	if (!cs_redis_try_run(p, &replies))
		return false;
	old = MemoryContextSwitchTo(r->cxt);
	for (int i = 0; i < r->n; i++)
	{
		r->results[i] = decode_hit(r->t, replies[i]);
		if (r->results[i])
			(*hits)++;
	}
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * A test hook (cachesync.debug_read_pause_lock): waits for an advisory
 * lock between reading a missed row and storing it, so that isolation
 * tests can commit a writer exactly there.
 */
static void
debug_pause(void)
{
	if (cachesync_debug_read_pause_lock == 0)
		return;
	DirectFunctionCall1(pg_advisory_lock_int8, Int64GetDatum(cachesync_debug_read_pause_lock));
	DirectFunctionCall1(pg_advisory_unlock_int8, Int64GetDatum(cachesync_debug_read_pause_lock));
}

/*
 * Loads the misses of r from the table, storing them in Redis when store.
 * SPI is connected.
 */
static void
read_misses(CsRead *r, bool store)
{
	char	 ***values = palloc(sizeof(char **) * r->n);
	int			m = 0;
	CsPipeline *p;

	r->positions = cs_keyset_create("cachesync read keys", r->n, sizeof(CsPosition),
									CurrentMemoryContext);
	for (int i = 0; i < r->n; i++)
	{
		CsPosition *pos;

		if (r->results[i])
			continue;
		pos = hash_search(r->positions, &r->keys[i], HASH_ENTER, NULL);
		pos->pos = i;
		values[m++] = r->values[i];
	}
	if (m == 0)
		return;
	p = cs_sync_read(r->t, values, m, store ? cs_version_for_read() : 0, take_row, r);
	if (!store)
		return;
	debug_pause();
	if (!cs_sync_store(p))
	{
		/* the rows are right; only the cache missed a fill */
		cs_stats_error(r->t->relid, "get(): storing rows in Redis failed");
		cs_note_redis_down();
	}
}

/* Reads the keys of r: hits from Redis, the rest from the table. */
static void
read_keys(CsRead *r)
{
	bool		bypass = GetTopTransactionIdIfAny() != InvalidTransactionId;
	/*
	 * Nothing is stored for a write_back table (the table may be behind its
	 * stream) nor on a standby: a lagging standby reads rows older than what
	 * the primary already fenced, under versions drawn from its own clock.
	 */
	bool		store = !bypass && r->t->mode != CS_MODE_WRITE_BACK &&
		!RecoveryInProgress();
	char	  **suffixes = palloc(sizeof(char *) * Max(r->n, 1));
	size_t		plen = strlen(cachesync_key_prefix) + strlen(r->t->key_prefix);
	int			hits = 0;

	for (int i = 0; i < r->n; i++)
		suffixes[i] = r->keys[i] + plen;
	cs_hot_observe(r->t->relid, suffixes, r->n);

	if (!bypass)
	{
		/* while a recent failure says Redis is down, go straight to the table */
		bool		down = cs_redis_known_down();

		if (down || !read_hits(r, &hits))
		{
			if (!down)
				cs_stats_error(r->t->relid, "get(): Redis unreachable, read the table");
			cs_note_redis_down();
			store = false;
		}
	}
	if (hits < r->n)
	{
		SPI_connect();
		read_misses(r, store);
		SPI_finish();
	}
	if (!bypass)
	{
		cs_stats_add(r->t->relid, CS_STAT_HITS, hits);
		cs_stats_add(r->t->relid, CS_STAT_MISSES, r->n - hits);
	}
}

/* Returns a CsRead of up to n keys of t. */
static CsRead *
new_read(CsTable *t, int n)
{
	CsRead	   *r = palloc0(sizeof(CsRead));

	r->t = t;
	r->values = palloc(sizeof(char **) * Max(n, 1));
	r->keys = palloc(sizeof(char *) * Max(n, 1));
	r->results = palloc0(sizeof(Datum) * Max(n, 1));
	r->cxt = CurrentMemoryContext;
	return r;
}

/* Looks up a registered table and checks the caller may read it. */
static CsTable *
readable_table(Oid relid)
{
	CsTable    *t;

	cs_shmem_require();
	t = cs_registry_get(relid);
	require_read(t);
	return t;
}

/* cachesync.get(rel regclass, VARIADIC key_values text[]) RETURNS jsonb */
Datum
cachesync_get(PG_FUNCTION_ARGS)
{
	CsTable    *t;
	CsRead	   *r;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	t = readable_table(PG_GETARG_OID(0));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("key values must not be NULL")));
	r = new_read(t, 1);
	r->values[0] = cs_key_values_from_array(t, PG_GETARG_ARRAYTYPE_P(1));
	r->keys[0] = cs_key_from_texts(t, r->values[0]);
	r->n = 1;
	read_keys(r);
	if (r->results[0] == 0)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(r->results[0]);
}

/* Emits the rows of one chunk of get_many. */
static void
emit(ReturnSetInfo *rsinfo, CsRead *r, char **given)
{
	for (int i = 0; i < r->n; i++)
	{
		Datum		values[2] = {CStringGetTextDatum(given[i]), r->results[i]};
		bool		nulls[2] = {false, r->results[i] == 0};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

/*
 * cachesync.get_many(rel regclass, keys text[])
 *		RETURNS TABLE(key text, value jsonb)
 *
 * One row per distinct key, in the order given, value NULL when the row
 * does not exist.  Keys are read cachesync.batch_size at a time: one Redis
 * round trip and at most one query per batch.
 */
Datum
cachesync_get_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CsTable    *t;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	HTAB	   *seen;
	CsRead	   *r = NULL;
	char	  **given = NULL;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("cachesync.get_many() needs a table and an array of keys")));
	t = readable_table(PG_GETARG_OID(0));
	if (t->nkeys != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cachesync.get_many() needs a table with a single-column key; \"%s\" has %d key columns",
						get_rel_name(t->relid), t->nkeys),
				 errhint("Call cachesync.get() per row for a composite key.")));
	InitMaterializedSRF(fcinfo, 0);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	seen = cs_keyset_create("cachesync get_many keys", n, sizeof(char *), CurrentMemoryContext);
	for (int i = 0; i < n; i++)
	{
		ArrayType  *one;
		char	  **values;
		char	   *key;
		bool		found;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("keys must not contain NULL"),
					 errhint("Key columns are NOT NULL, so no row has a NULL key value.")));
		one = construct_array(&elems[i], 1, TEXTOID, -1, false, TYPALIGN_INT);
		values = cs_key_values_from_array(t, one);
		key = cs_key_from_texts(t, values);
		hash_search(seen, &key, HASH_ENTER, &found);
		if (found)
			continue;
		if (r == NULL)
		{
			r = new_read(t, Min(n, cachesync_batch_size));
			given = palloc(sizeof(char *) * Min(n, cachesync_batch_size));
		}
		given[r->n] = TextDatumGetCString(elems[i]);
		r->values[r->n] = values;
		r->keys[r->n++] = key;
		if (r->n == cachesync_batch_size)
		{
			read_keys(r);
			emit(rsinfo, r, given);
			r = NULL;
		}
	}
	if (r != NULL)
	{
		read_keys(r);
		emit(rsinfo, r, given);
	}
	return (Datum) 0;
}
