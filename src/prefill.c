/*-------------------------------------------------------------------------
 *
 * prefill.c
 *	  cachesync.prefill(rel, keys): warm given keys from the table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "cachesync.h"
#include "keys.h"
#include "redis.h"
#include "registry.h"
#include "rowformat.h"
#include "shmem.h"
#include "sync.h"
#include "version.h"

PG_FUNCTION_INFO_V1(cachesync_prefill_keys);

/*
 * Returns the Redis key named by one element of prefill's array: a key
 * value for a single-column key, a full Redis key otherwise.
 */
static char *
element_key(CsTable *t, char *element)
{
	char	  **values = NULL;
	Datum	   *texts;

	if (t->nkeys == 1)
	{
		ArrayType  *one = construct_array((Datum[]) {CStringGetTextDatum(element)}, 1,
										  TEXTOID, -1, false, TYPALIGN_INT);

		return cs_key_from_texts(t, cs_key_values_from_array(t, one));
	}

	if (strncmp(element, cachesync_key_prefix, strlen(cachesync_key_prefix)) == 0 &&
		strncmp(element + strlen(cachesync_key_prefix), t->key_prefix, strlen(t->key_prefix)) == 0)
		values = cs_key_parse(t, element, strlen(element));
	if (values == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not a Redis key of table \"%s\"", element, get_rel_name(t->relid)),
				 errhint("For a table with a composite key, pass the keys cachesync.key() returns.")));
	/* each part must be a value of its key column: throws otherwise */
	texts = palloc(sizeof(Datum) * t->nkeys);
	for (int i = 0; i < t->nkeys; i++)
		texts[i] = CStringGetTextDatum(values[i]);
	return cs_key_from_texts(t, cs_key_values_from_array(t,
														construct_array(texts, t->nkeys, TEXTOID, -1, false, TYPALIGN_INT)));
}

/* Syncs one chunk of keys; throws when Redis fails. */
static void
prefill_chunk(CsTable *t, List *keys, CsSyncResult *r)
{
	if (!cs_sync_keys(t, keys, cs_version_for_read(), r))
		cs_redis_raise_failure();
}

/* cachesync.prefill(rel regclass, keys text[]) RETURNS bigint */
Datum
cachesync_prefill_keys(PG_FUNCTION_ARGS)
{
	CsTable    *t;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *chunk = NIL;
	CsSyncResult r = {0};

	Oid			relid = PG_GETARG_OID(0);

	cs_shmem_require();
	cs_require_no_writes("cachesync.prefill()");
	t = cs_registry_get(relid);
	cs_require_select(relid);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	SPI_connect();
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("keys must not contain NULL")));
		chunk = lappend(chunk, element_key(t, TextDatumGetCString(elems[i])));
		if (list_length(chunk) >= cachesync_batch_size)
		{
			prefill_chunk(t, chunk, &r);
			chunk = NIL;
			/* the work may have rebuilt the registry: look the table up again */
			t = cs_registry_get(relid);
		}
	}
	if (chunk != NIL)
		prefill_chunk(t, chunk, &r);
	SPI_finish();
	PG_RETURN_INT64(r.pushed);
}
