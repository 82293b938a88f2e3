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
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "cachesync.h"
#include "capture.h"
#include "keys.h"
#include "keyspace.h"
#include "rowformat.h"
#include "sync.h"

/* Returns true when key names one of t's streams rather than a row. */
static bool
is_stream_key(CsTable *t, const char *key)
{
	const char *rest = key + strlen(cachesync_key_prefix) + strlen(t->key_prefix);

	return strcmp(rest, "__writeback") == 0 ||
		strcmp(rest, "__writeback:dlq") == 0 ||
		strcmp(rest, "__changes") == 0;
}

/* Returns the query that fetches t's rows whose key values are given as text arrays. */
static char *
fetch_query(CsTable *t)
{
	StringInfoData q;
	char	   *rel = quote_qualified_identifier(get_namespace_name(get_rel_namespace(t->relid)),
												 get_rel_name(t->relid));

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT r FROM %s r JOIN ROWS FROM (", rel);
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

/*
 * Writes the committed state of each key of t to Redis with version: the
 * row's value where the row exists, a deletion tombstone where it does not.
 * Returns false when Redis failed (nothing is known of what arrived).
 */
bool
cs_sync_keys(CsTable *t, List *keys, uint64 version, CsSyncResult *result)
{
	int			n = list_length(keys);
	Datum	   *arrays = palloc(sizeof(Datum) * t->nkeys);
	Oid		   *types = palloc(sizeof(Oid) * t->nkeys);
	Datum	  **parts = palloc(sizeof(Datum *) * t->nkeys);
	List	   *rowkeys = NIL;
	HTAB	   *found;
	CsPipeline *p = cs_pipeline_create();
	CsReply   **replies;
	Relation	rel;
	ListCell   *lc;
	int			m = 0;
	const char *error;
	SPIPlanPtr	plan;
	Snapshot	snap;
	int			rc;

	for (int i = 0; i < t->nkeys; i++)
	{
		parts[i] = palloc(sizeof(Datum) * Max(n, 1));
		types[i] = TEXTARRAYOID;
	}
	foreach(lc, keys)
	{
		char	  **values;

		if (is_stream_key(t, lfirst(lc)) ||
			(values = cs_key_parse(t, lfirst(lc), strlen(lfirst(lc)))) == NULL)
			continue;
		for (int i = 0; i < t->nkeys; i++)
			parts[i][m] = CStringGetTextDatum(values[i]);
		rowkeys = lappend(rowkeys, lfirst(lc));
		m++;
	}
	if (m == 0)
		return true;
	for (int i = 0; i < t->nkeys; i++)
		arrays[i] = PointerGetDatum(construct_array(parts[i], m, TEXTOID, -1, false, TYPALIGN_INT));

	/* a fresh snapshot, taken after the caller drew the version */
	plan = SPI_prepare(fetch_query(t), t->nkeys, types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	snap = RegisterSnapshot(GetLatestSnapshot());
	rc = SPI_execute_snapshot(plan, arrays, NULL, snap, InvalidSnapshot, true, false, 0);
	UnregisterSnapshot(snap);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read rows of \"%s\"", get_rel_name(t->relid));

	found = cs_keyset_create("cachesync found keys", m, sizeof(char *),
							 CurrentMemoryContext);
	rel = relation_open(t->relid, AccessShareLock);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		HeapTupleHeader hdr = DatumGetHeapTupleHeader(d);
		HeapTupleData tuple;
		char	   *key;

		tuple.t_len = HeapTupleHeaderGetDatumLength(hdr);
		ItemPointerSetInvalid(&tuple.t_self);
		tuple.t_tableOid = t->relid;
		tuple.t_data = hdr;
		key = cs_row_key(t, &tuple, RelationGetDescr(rel));
		cs_append_fenced_write(p, t, key, cs_row_value(t, &tuple, RelationGetDescr(rel)), version);
		hash_search(found, &key, HASH_ENTER, NULL);
		result->pushed++;
	}
	relation_close(rel, AccessShareLock);
	foreach(lc, rowkeys)
	{
		char	   *key = lfirst(lc);

		if (hash_search(found, &key, HASH_FIND, NULL) == NULL)
		{
			cs_append_fenced_write(p, t, lfirst(lc), NULL, version);
			result->removed++;
		}
	}
	if (!cs_redis_try_run(p, &replies))
		return false;
	if (!cs_replies_ok(replies, p->ncommands, &error))
	{
		cs_redis_disconnect();
		return false;
	}
	return true;
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
