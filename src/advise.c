/*-------------------------------------------------------------------------
 *
 * advise.c
 *	  cachesync._redis_footprint(rel): how many keys a table has in Redis and
 *	  how much memory they take, estimated from a bounded sample, for
 *	  cachesync.advise() (whose rules are SQL, in the install script).
 *
 * The sample walks at most CS_ADVISE_SCANS SCAN pages of the whole keyspace
 * (no MATCH, so the share of the table's keys among all keys is known), then
 * asks MEMORY USAGE of up to `sample` of the table's keys and of their
 * version keys in one pipeline.  When the walk covers the whole keyspace the
 * key count is exact; otherwise it is DBSIZE times the share seen.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "cachesync.h"
#include "keys.h"
#include "redis.h"
#include "registry.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(cachesync_redis_footprint);

/* SCAN pages walked at most (of CS_ADVISE_SCAN_COUNT keys each) */
#define CS_ADVISE_SCANS 50
#define CS_ADVISE_SCAN_COUNT "1000"

/* Returns true when key is a row key of t (under its prefix, not a stream). */
static bool
is_row_key(CsTable *t, const char *prefix, size_t plen, const char *key)
{
	if (strncmp(key, prefix, plen) != 0)
		return false;
	return strcmp(key + plen, "__writeback") != 0 &&
		strcmp(key + plen, "__writeback:dlq") != 0 &&
		strcmp(key + plen, "__changes") != 0;
}

/* Returns the summed MEMORY USAGE of the keys and their version keys. */
static int64
memory_of(List *keys)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **r;
	ListCell   *lc;
	int64		bytes = 0;

	if (keys == NIL)
		return 0;
	foreach(lc, keys)
	{
		cs_pipeline_append_strs(p, 3, (const char *[]) {"MEMORY", "USAGE", lfirst(lc)});
		cs_pipeline_append_strs(p, 3, (const char *[]) {"MEMORY", "USAGE", cs_version_key(lfirst(lc))});
	}
	r = cs_redis_run(p);
	for (int i = 0; i < p->ncommands; i++)
		if (r[i]->type == CS_REPLY_INTEGER)
			bytes += r[i]->integer;
	return bytes;
}

/*
 * cachesync._redis_footprint(rel regclass, sample integer,
 *		OUT keys bigint, OUT bytes bigint, OUT sampled integer, OUT exact boolean)
 */
Datum
cachesync_redis_footprint(PG_FUNCTION_ARGS)
{
	CsTable    *t;
	int			sample = PG_GETARG_INT32(1);
	char	   *prefix;
	size_t		plen;
	char	   *cursor = "0";
	int64		seen = 0;
	int64		matched = 0;
	List	   *picked = NIL;
	int			scans = 0;
	int64		keys;
	int64		bytes;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {0};

	cs_shmem_require();
	if (sample < 1 || sample > 10000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sample must be between 1 and 10000")));
	t = cs_registry_get(PG_GETARG_OID(0));
	prefix = psprintf("%s%s", cachesync_key_prefix, t->key_prefix);
	plen = strlen(prefix);
	do
	{
		CsReply    *page;

		CHECK_FOR_INTERRUPTS();
		page = cs_redis_command_strs(4, (const char *[]) {"SCAN", cursor, "COUNT", CS_ADVISE_SCAN_COUNT});
		cs_redis_check_reply(page, "SCAN");
		if (page->type != CS_REPLY_ARRAY || page->nelem != 2)
			elog(ERROR, "unexpected reply to SCAN");
		for (size_t i = 0; i < page->elem[1]->nelem; i++)
		{
			const char *key = page->elem[1]->elem[i]->str;

			seen++;
			if (!is_row_key(t, prefix, plen, key))
				continue;
			matched++;
			if (list_length(picked) < sample)
				picked = lappend(picked, pstrdup(key));
		}
		cursor = page->elem[0]->str;
	} while (strcmp(cursor, "0") != 0 && ++scans < CS_ADVISE_SCANS);

	values[3] = BoolGetDatum(strcmp(cursor, "0") == 0);
	if (DatumGetBool(values[3]) || seen == 0)
		keys = matched;
	else
	{
		CsReply    *size = cs_redis_command_strs(1, (const char *[]) {"DBSIZE"});

		cs_redis_check_reply(size, "DBSIZE");
		keys = (int64) ((double) size->integer * matched / seen);
	}
	bytes = picked == NIL ? 0 : (int64) ((double) memory_of(picked) / list_length(picked) * keys);

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum(keys);
	values[1] = Int64GetDatum(bytes);
	values[2] = Int32GetDatum(list_length(picked));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
