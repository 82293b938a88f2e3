/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Building Redis keys for rows, and cachesync.key().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "cachesync.h"
#include "keys.h"

PG_FUNCTION_INFO_V1(cachesync_key);

/* Starts a row key in buf: the global prefix, then the table's. */
void
cs_key_start(StringInfo buf, const CsTable *t)
{
	appendStringInfoString(buf, cachesync_key_prefix ? cachesync_key_prefix : "");
	appendStringInfoString(buf, t->key_prefix);
}

/* Appends one key value with ':' and '\' escaped by a backslash. */
void
cs_key_append_part(StringInfo buf, const char *value, int len)
{
	for (int i = 0; i < len; i++)
	{
		if (value[i] == ':' || value[i] == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, value[i]);
	}
}

/*
 * Returns the key of the row whose key columns hold values, given as the
 * columns' text output (t->nkeys of them).
 */
char *
cs_key_from_texts(const CsTable *t, char **values)
{
	StringInfoData buf;

	initStringInfo(&buf);
	cs_key_start(&buf, t);
	for (int i = 0; i < t->nkeys; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ':');
		cs_key_append_part(&buf, values[i], strlen(values[i]));
	}
	return buf.data;
}

/* Returns a SCAN MATCH pattern for every key that starts with prefix. */
char *
cs_key_glob_pattern(const char *prefix)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (const char *c = prefix; *c; c++)
	{
		if (strchr("*?[]\\", *c))
			appendStringInfoChar(&buf, '\\');
		appendStringInfoChar(&buf, *c);
	}
	appendStringInfoChar(&buf, '*');
	return buf.data;
}

/*
 * Returns text as the key column's type writes it, so that '042' and '42'
 * name the same integer key.  Throws for text the type does not accept.
 */
static char *
normalize_key_value(const CsTable *t, int i, char *text)
{
	Oid			infunc;
	Oid			ioparam;
	Oid			outfunc;
	bool		varlena;
	Datum		d;

	getTypeInputInfo(t->key_types[i], &infunc, &ioparam);
	d = OidInputFunctionCall(infunc, text, ioparam, t->key_typmods[i]);
	getTypeOutputInfo(t->key_types[i], &outfunc, &varlena);
	return OidOutputFunctionCall(outfunc, d);
}

/*
 * Returns the key values in arr as normalized C strings; throws unless
 * there is one non-NULL value per key column.
 */
char	  **
cs_key_values_from_array(const CsTable *t, ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	char	  **values;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n != t->nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("table \"%s\" has %d key column%s but %d key value%s given",
						get_rel_name(t->relid), t->nkeys, t->nkeys == 1 ? "" : "s",
						n, n == 1 ? " was" : "s were"),
				 errhint("Pass one value per key column, in the order cachesync.tables lists them.")));
	values = palloc(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("key value %d is NULL", i + 1),
					 errhint("Key columns are NOT NULL, so no row has a NULL key value.")));
		values[i] = normalize_key_value(t, i, TextDatumGetCString(elems[i]));
	}
	return values;
}

/* cachesync.key(rel regclass, VARIADIC key_values text[]) RETURNS text */
Datum
cachesync_key(PG_FUNCTION_ARGS)
{
	CsTable    *t = cs_registry_get(PG_GETARG_OID(0));
	char	  **values = cs_key_values_from_array(t, PG_GETARG_ARRAYTYPE_P(1));

	PG_RETURN_TEXT_P(cstring_to_text(cs_key_from_texts(t, values)));
}

/* hash and match functions for hash tables keyed by a char * */
static uint32
keyset_hash(const void *key, Size keysize)
{
	const char *s = *(const char *const *) key;

	return hash_bytes((const unsigned char *) s, strlen(s));
}

static int
keyset_match(const void *key1, const void *key2, Size keysize)
{
	return strcmp(*(const char *const *) key1, *(const char *const *) key2);
}

/*
 * Returns a hash table keyed by NUL-terminated strings of any length.  Its
 * entries (entrysize bytes) start with the char * key, which callers set
 * to a string that lives as long as the table.
 */
HTAB *
cs_keyset_create(const char *name, long nelem, Size entrysize, MemoryContext cxt)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(char *);
	ctl.entrysize = Max(entrysize, sizeof(char *));
	ctl.hash = keyset_hash;
	ctl.match = keyset_match;
	ctl.hcxt = cxt;
	return hash_create(name, Max(nelem, 16), &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

/* Returns the version key that fences the row key key (see version.c). */
char *
cs_version_key(const char *key)
{
	size_t		glen = strlen(cachesync_key_prefix);

	return psprintf("%.*s%sv:%s", (int) glen, key, CS_INTERNAL_PREFIX, key + glen);
}

/* Returns the intent set of process slot in generation (see capture.c). */
char *
cs_intent_key(uint64 generation, int slot)
{
	return psprintf("%s%sintent:" UINT64_FORMAT ":%d", cachesync_key_prefix,
					CS_INTERNAL_PREFIX, generation, slot);
}

/*
 * Returns the hash where the worker publishes each write_back table's
 * metadata for the write-back functions (see functions.c).
 */
char *
cs_wb_meta_key(void)
{
	return psprintf("%s%swriteback", cachesync_key_prefix, CS_INTERNAL_PREFIX);
}

/* Returns t's write-back stream (dlq: its dead-letter stream). */
char *
cs_wb_stream(const CsTable *t, bool dlq)
{
	return psprintf("%s%s__writeback%s", cachesync_key_prefix, t->key_prefix,
					dlq ? ":dlq" : "");
}

/*
 * Returns the write-back guard of row key key: the id of the last entry an
 * application appended for it, set by cachesync_upsert/delete.
 */
char *
cs_wb_guard_key(const char *key)
{
	size_t		glen = strlen(cachesync_key_prefix);

	return psprintf("%.*s%swbid:%s", (int) glen, key, CS_INTERNAL_PREFIX, key + glen);
}

/*
 * Returns the invalidation channel of relid:
 * <cachesync.key_prefix>__cachesync:invalidate:<schema>.<table>, names as
 * stored (unquoted).  Reads the catalogs: call it inside a transaction.
 */
char *
cs_invalidate_channel(Oid relid)
{
	char	   *nsp = get_namespace_name(get_rel_namespace(relid));
	char	   *rel = get_rel_name(relid);

	return psprintf("%s%sinvalidate:%s.%s", cachesync_key_prefix, CS_INTERNAL_PREFIX,
					nsp ? nsp : "", rel ? rel : "");
}

/* Returns the invalidation channel of every table. */
char *
cs_invalidate_all_channel(void)
{
	return psprintf("%s%sinvalidate", cachesync_key_prefix, CS_INTERNAL_PREFIX);
}

/* Returns the change stream of a table: <prefix><table prefix>__changes. */
char *
cs_changes_stream(const CsTable *t)
{
	return psprintf("%s%s__changes", cachesync_key_prefix, t->key_prefix);
}
