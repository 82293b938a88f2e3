/*-------------------------------------------------------------------------
 *
 * register.c
 *	  cachesync.register() and cachesync.unregister().
 *
 * Both run as the caller, who must own the table; EXECUTE is revoked from
 * PUBLIC.  Rows of cachesync.registrations are written as the owner of that
 * table, so a role granted these functions needs no privilege on
 * cachesync's own tables.  Registrations are serialised by a SHARE ROW
 * EXCLUSIVE lock on cachesync.registrations, which makes the key prefix
 * overlap check race-free.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/transam.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "commands/dbcommands.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "cachesync.h"
#include "capture.h"
#include "hotkeys.h"
#include "keys.h"
#include "keyspace.h"
#include "registry.h"

PG_FUNCTION_INFO_V1(cachesync_register);
PG_FUNCTION_INFO_V1(cachesync_unregister);

/* A registration as register() validated it, ready to be stored. */
typedef struct CsRegistration
{
	Oid			relid;
	const char *mode;
	Datum		key_columns;	/* text[] */
	Datum		columns;		/* text[], or 0 for all */
	const char *format;
	Interval   *ttl;			/* NULL: no expiry */
	const char *key_prefix;
	bool		notify;
	bool		changes;
} CsRegistration;

/* Throws unless argument i was given. */
static void
require_arg(FunctionCallInfo fcinfo, int i, const char *name)
{
	if (PG_ARGISNULL(i))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
}

/* Throws unless rel is a table cachesync can serve and the caller owns it. */
static void
check_table(Relation rel)
{
	const char *name = RelationGetRelationName(rel);
	char		kind = rel->rd_rel->relkind;

	if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", name),
				 errdetail("cachesync registers regular and partitioned tables only.")));
	if (rel->rd_rel->relispartition)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot register partition \"%s\"", name),
				 errhint("Register its partitioned table: the capture triggers reach every partition.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot register temporary table \"%s\"", name),
				 errdetail("Other sessions and the background worker cannot see its rows.")));
	if (IsCatalogRelation(rel) || RelationGetRelid(rel) < FirstNormalObjectId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot register system table \"%s\"", name)));
	if (RelationGetNamespace(rel) == get_namespace_oid("cachesync", false))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot register cachesync's own table \"%s\"", name)));
	if (!cs_rel_ownercheck(RelationGetRelid(rel), GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, name);
}

/* Returns the elements of a text[] argument; throws on NULL elements. */
static List *
name_list(ArrayType *arr, const char *what)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *names = NIL;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL", what)));
		names = lappend(names, TextDatumGetCString(elems[i]));
	}
	return names;
}

/* Returns the attribute number of a user column; throws if there is none. */
static AttrNumber
column_attnum(Relation rel, const char *name)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(rel), name);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table \"%s\" does not exist",
						name, RelationGetRelationName(rel)),
				 errhint("Name columns exactly as the table spells them; system columns cannot be used.")));
	return attnum;
}

/* Returns the attribute numbers of names; throws on unknown or repeated ones. */
static List *
column_attnums(Relation rel, List *names, const char *what)
{
	List	   *attnums = NIL;
	ListCell   *lc;

	foreach(lc, names)
	{
		AttrNumber	attnum = column_attnum(rel, lfirst(lc));

		if (list_member_int(attnums, attnum))
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_COLUMN),
					 errmsg("column \"%s\" appears twice in %s",
							(char *) lfirst(lc), what)));
		attnums = lappend_int(attnums, attnum);
	}
	return attnums;
}

/*
 * Throws for key column types whose text form depends on session settings
 * (TimeZone, DateStyle, IntervalStyle, extra_float_digits, bytea_output,
 * lc_monetary): two sessions would compute different keys for one row.
 */
static void
check_key_type(Relation rel, Form_pg_attribute att)
{
	switch (getBaseType(att->atttypid))
	{
		case DATEOID:
		case TIMEOID:
		case TIMETZOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
		case INTERVALOID:
		case FLOAT4OID:
		case FLOAT8OID:
		case BYTEAOID:
		case CASHOID:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("key column \"%s\" of table \"%s\" has type %s, whose text form depends on session settings",
							NameStr(att->attname), RelationGetRelationName(rel),
							format_type_be(att->atttypid)),
					 errhint("Use a key of integer, numeric, text, uuid or boolean type, for example a generated column that formats the value.")));
			break;
		default:
			break;
	}
}

/* Returns the attribute numbers of the primary key; throws if there is none. */
static List *
primary_key_attnums(Relation rel)
{
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	HeapTuple	tup;
	Form_pg_index index;
	List	   *attnums = NIL;

	if (!OidIsValid(pkoid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table \"%s\" has no primary key", RelationGetRelationName(rel)),
				 errhint("Add a primary key, or pass key_columns => ARRAY[...] naming NOT NULL columns covered by a unique index.")));
	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pkoid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for index %u", pkoid);
	index = (Form_pg_index) GETSTRUCT(tup);
	for (int i = 0; i < index->indnkeyatts; i++)
	{
		attnums = lappend_int(attnums, index->indkey.values[i]);
		check_key_type(rel, TupleDescAttr(RelationGetDescr(rel), index->indkey.values[i] - 1));
	}
	ReleaseSysCache(tup);
	return attnums;
}

/* Returns true when some unique index of rel uses only columns in keys. */
static bool
keys_are_unique(Relation rel, Bitmapset *keys)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		unique = false;

	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index index;
		bool		covered = true;

		if (!HeapTupleIsValid(tup))
			continue;
		index = (Form_pg_index) GETSTRUCT(tup);
		if (!index->indisunique || !index->indisvalid ||
			!heap_attisnull(tup, Anum_pg_index_indexprs, NULL) ||
			!heap_attisnull(tup, Anum_pg_index_indpred, NULL))
			covered = false;
		for (int i = 0; covered && i < index->indnkeyatts; i++)
			covered = bms_is_member(index->indkey.values[i], keys);
		ReleaseSysCache(tup);
		if (covered)
		{
			unique = true;
			break;
		}
	}
	list_free(indexes);
	return unique;
}

/*
 * Throws unless a valid, immediate unique index without expressions or
 * predicate has exactly the key columns: write-back applies upserts with
 * ON CONFLICT (key columns), which needs such an index as its arbiter
 * (a covering index on more or fewer columns fails every upsert, 42P10).
 */
static void
check_write_back_keys(Relation rel, List *attnums)
{
	List	   *indexes = RelationGetIndexList(rel);
	Bitmapset  *keys = NULL;
	ListCell   *lc;
	bool		found = false;
	StringInfoData names;

	foreach(lc, attnums)
		keys = bms_add_member(keys, lfirst_int(lc));
	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index index;
		Bitmapset  *cols = NULL;

		if (!HeapTupleIsValid(tup))
			continue;
		index = (Form_pg_index) GETSTRUCT(tup);
		if (index->indisunique && index->indisvalid && index->indimmediate &&
			heap_attisnull(tup, Anum_pg_index_indexprs, NULL) &&
			heap_attisnull(tup, Anum_pg_index_indpred, NULL))
		{
			for (int i = 0; i < index->indnkeyatts; i++)
				cols = bms_add_member(cols, index->indkey.values[i]);
			found = bms_equal(cols, keys);
		}
		ReleaseSysCache(tup);
		if (found)
			break;
	}
	list_free(indexes);
	if (found)
		return;
	initStringInfo(&names);
	foreach(lc, attnums)
		appendStringInfo(&names, "%s%s", foreach_current_index(lc) ? ", " : "",
						 quote_identifier(NameStr(TupleDescAttr(RelationGetDescr(rel),
																lfirst_int(lc) - 1)->attname)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("mode write_back needs a unique index on exactly the key columns of table \"%s\"",
					RelationGetRelationName(rel)),
			 errdetail("Write-back applies upserts with ON CONFLICT (%s).", names.data),
			 errhint("Create one with CREATE UNIQUE INDEX ON %s (%s) (not deferrable, without expressions or predicate).",
					 quote_identifier(RelationGetRelationName(rel)), names.data)));
}

/* Returns a text[] datum of the names of attnums. */
static Datum
names_array(Relation rel, List *attnums)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(attnums), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, attnums)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), lfirst_int(lc) - 1);

		elems[n++] = CStringGetTextDatum(NameStr(att->attname));
	}
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Returns the key columns' attribute numbers: the primary key by default,
 * otherwise the named NOT NULL columns, which a unique index must cover.
 */
static List *
key_attnums(Relation rel, FunctionCallInfo fcinfo)
{
	List	   *attnums;
	Bitmapset  *keys = NULL;
	ListCell   *lc;

	if (PG_ARGISNULL(2))
		return primary_key_attnums(rel);

	attnums = column_attnums(rel, name_list(PG_GETARG_ARRAYTYPE_P(2), "key_columns"),
							 "key_columns");
	if (attnums == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key_columns must name at least one column")));
	foreach(lc, attnums)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), lfirst_int(lc) - 1);

		check_key_type(rel, att);
		if (!att->attnotnull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key column \"%s\" of table \"%s\" is nullable",
							NameStr(att->attname), RelationGetRelationName(rel)),
					 errhint("Declare it NOT NULL: a row with a NULL key value has no Redis key.")));
		keys = bms_add_member(keys, lfirst_int(lc));
	}
	if (!keys_are_unique(rel, keys))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key_columns do not identify a row of table \"%s\"",
						RelationGetRelationName(rel)),
				 errhint("Choose columns covered by the primary key or a unique index without expressions or predicate, or create such an index.")));
	return attnums;
}

/*
 * Returns the cached columns as a text[] datum in attribute order, key
 * columns always included, or 0 when columns was NULL (every column).
 */
static Datum
cached_columns(Relation rel, FunctionCallInfo fcinfo, List *keys)
{
	List	   *attnums;
	List	   *sorted = NIL;

	if (PG_ARGISNULL(3))
		return (Datum) 0;
	attnums = column_attnums(rel, name_list(PG_GETARG_ARRAYTYPE_P(3), "columns"),
							 "columns");
	attnums = list_concat_unique_int(attnums, keys);
	for (AttrNumber a = 1; a <= RelationGetDescr(rel)->natts; a++)
	{
		if (list_member_int(attnums, a))
			sorted = lappend_int(sorted, a);
	}
	return names_array(rel, sorted);
}

/* Throws unless ttl is a positive interval of at least a millisecond. */
static void
check_ttl(Interval *ttl)
{
	if (cs_interval_ms(ttl) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ttl must be at least 1 millisecond"),
				 errhint("Pass NULL for keys that never expire.")));
}

/* Returns the table's key prefix, "<schema>.<table>:" by default; validates it. */
static const char *
key_prefix(Relation rel, FunctionCallInfo fcinfo)
{
	const char *prefix;

	if (PG_ARGISNULL(6))
		return psprintf("%s.%s:", get_namespace_name(RelationGetNamespace(rel)),
						RelationGetRelationName(rel));
	prefix = text_to_cstring(PG_GETARG_TEXT_PP(6));
	if (prefix[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key_prefix must not be empty"),
				 errhint("A table's keys must be told apart from every other table's; pass NULL for the default \"<schema>.<table>:\".")));
	if (strncmp(prefix, CS_INTERNAL_PREFIX, Min(strlen(prefix), strlen(CS_INTERNAL_PREFIX))) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("key prefix \"%s\" overlaps cachesync's internal key space \"%s\"",
						prefix, CS_INTERNAL_PREFIX),
				 errhint("Choose a prefix that neither starts with \"%s\" nor is the start of it.", CS_INTERNAL_PREFIX)));
	return prefix;
}

/* Runs a query through SPI with the given parameters; throws on failure. */
static int
spi_run(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);

	if (rc < 0)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
	return rc;
}

/* Returns the owner of cachesync.registrations, as whom its rows are written. */
static Oid
registrations_owner(void)
{
	Oid			regoid = cs_registry_relid();

	if (!OidIsValid(regoid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension cachesync is not installed in this database"),
				 errhint("Run CREATE EXTENSION cachesync.")));
	return cs_rel_owner(regoid);
}

/* Throws if prefix overlaps the key prefix of another registered table. */
static void
check_prefix_overlap(Oid relid, const char *prefix)
{
	Oid			types[2] = {OIDOID, TEXTOID};
	Datum		values[2] = {ObjectIdGetDatum(relid), CStringGetTextDatum(prefix)};

	spi_run("SELECT rel::pg_catalog.text, key_prefix FROM cachesync.registrations "
			"WHERE rel::pg_catalog.oid OPERATOR(pg_catalog.<>) $1 "
			"AND (pg_catalog.starts_with(key_prefix, $2) OR pg_catalog.starts_with($2, key_prefix)) "
			"LIMIT 1", 2, types, values, NULL);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("key prefix \"%s\" overlaps the key prefix \"%s\" of table %s",
						prefix,
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
						SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				 errhint("Pass a key_prefix that neither starts with another table's prefix nor is the start of one.")));
}

/*
 * Inserts or updates the registration.  Returns true when the table was
 * registered before; *rewrite tells whether the keys or values change shape.
 */
static bool
store_registration(const CsRegistration *r, bool *rewrite)
{
	Oid			types[9] = {OIDOID, TEXTOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID,
	INTERVALOID, TEXTOID, BOOLOID, BOOLOID};
	Datum		values[9];
	char		nulls[9];
	bool		existed;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = ObjectIdGetDatum(r->relid);
	values[1] = CStringGetTextDatum(r->mode);
	values[2] = r->key_columns;
	values[3] = r->columns;
	values[4] = CStringGetTextDatum(r->format);
	values[5] = PointerGetDatum(r->ttl);
	values[6] = CStringGetTextDatum(r->key_prefix);
	values[7] = BoolGetDatum(r->notify);
	values[8] = BoolGetDatum(r->changes);
	if (r->columns == (Datum) 0)
		nulls[3] = 'n';
	if (r->ttl == NULL)
		nulls[5] = 'n';

	spi_run("SELECT 1 FROM cachesync.registrations WHERE rel::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
			"AND key_prefix OPERATOR(pg_catalog.=) $7 AND format OPERATOR(pg_catalog.=) $5 "
			"AND columns IS NOT DISTINCT FROM $4 AND key_columns OPERATOR(pg_catalog.=) $3 "
			"AND ttl IS NOT DISTINCT FROM $6",
			9, types, values, nulls);
	*rewrite = (SPI_processed == 0);
	spi_run("DELETE FROM cachesync.registrations WHERE rel::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
			1, types, values, nulls);
	existed = (SPI_processed > 0);
	spi_run("INSERT INTO cachesync.registrations "
			"(rel, mode, key_columns, columns, format, ttl, key_prefix, notify, changes) "
			"VALUES ($1::pg_catalog.regclass, $2, $3, $4, $5, $6, $7, $8, $9)",
			9, types, values, nulls);
	return existed;
}

/*
 * Runs fn(arg) connected to SPI as the owner of cachesync.registrations,
 * with search_path pinned to pg_catalog (the caller's path must not choose
 * the operators a superuser runs), holding the lock that serialises
 * registrations.
 */
static void
with_registrations(void (*fn) (void *), void *arg)
{
	Oid			save_userid;
	int			save_sec;

	int			nest;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(registrations_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	nest = cs_pin_search_path();
	SPI_connect();
	spi_run("LOCK TABLE cachesync.registrations IN SHARE ROW EXCLUSIVE MODE",
			0, NULL, NULL, NULL);
	fn(arg);
	SPI_finish();
	cs_unpin_search_path(nest);
	SetUserIdAndSecContext(save_userid, save_sec);
	CacheInvalidateRelcacheByRelid(cs_registry_relid());
}

typedef struct RegisterStep
{
	const CsRegistration *reg;
	bool		existed;
	bool		rewrite;
} RegisterStep;

/* The stored part of register(), run by with_registrations(). */
static void
register_step(void *arg)
{
	RegisterStep *s = arg;

	check_prefix_overlap(s->reg->relid, s->reg->key_prefix);
	s->existed = store_registration(s->reg, &s->rewrite);
	cs_capture_install(s->reg->relid);
}

/* Tells the caller what registering did and what is left to do. */
static void
report_registration(const char *name, const RegisterStep *s)
{
	char	   *db = get_database_name(MyDatabaseId);

	if (db != NULL && strcmp(db, cachesync_database) != 0)
		ereport(NOTICE,
				(errmsg("the cachesync worker serves database \"%s\", not \"%s\"",
						cachesync_database, db),
				 errdetail("Changes that wait in the queue here (async tables, TRUNCATE, Redis outages, prepared and very large transactions) are not applied, and crashes are not healed."),
				 errhint("Set cachesync.database = '%s' and restart the server.", db)));
	if (!s->existed)
		ereport(NOTICE,
				(errmsg("existing rows of \"%s\" are not in Redis yet", name),
				 errhint("Call SELECT cachesync.reload('%s'); to load them.", name)));
	else if (s->rewrite)
		ereport(NOTICE,
				(errmsg("table \"%s\" was already registered; its settings were updated", name),
				 errdetail("Its key prefix, key, columns, format or ttl changed, so its cached values no longer match."),
				 errhint("Call SELECT cachesync.reload('%s'); to rewrite them.", name)));
	else
		ereport(NOTICE,
				(errmsg("table \"%s\" was already registered; its settings were updated", name)));
}

/*
 * cachesync.register(rel regclass, mode text, key_columns text[],
 *		columns text[], format text, ttl interval, key_prefix text,
 *		notify boolean, changes boolean) RETURNS void
 */
Datum
cachesync_register(PG_FUNCTION_ARGS)
{
	CsRegistration reg;
	RegisterStep step;
	Relation	rel;
	CsMode		mode;
	CsFormat	format;
	List	   *keys;

	cachesync_require_preload();
	require_arg(fcinfo, 0, "rel");
	require_arg(fcinfo, 1, "mode");
	require_arg(fcinfo, 4, "format");
	require_arg(fcinfo, 7, "notify");
	require_arg(fcinfo, 8, "changes");

	rel = relation_open(PG_GETARG_OID(0), ShareRowExclusiveLock);
	check_table(rel);

	memset(&reg, 0, sizeof(reg));
	reg.relid = RelationGetRelid(rel);
	reg.mode = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!cs_mode_parse(reg.mode, &mode))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown cachesync mode \"%s\"", reg.mode),
				 errhint("Valid modes are write_through, write_around, async and write_back.")));
	reg.format = text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (!cs_format_parse(reg.format, &format))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown cachesync format \"%s\"", reg.format),
				 errhint("Valid formats are json and hash.")));
	reg.ttl = PG_ARGISNULL(5) ? NULL : PG_GETARG_INTERVAL_P(5);
	if (reg.ttl)
		check_ttl(reg.ttl);
	keys = key_attnums(rel, fcinfo);
	if (mode == CS_MODE_WRITE_BACK)
		check_write_back_keys(rel, keys);
	reg.key_columns = names_array(rel, keys);
	reg.columns = cached_columns(rel, fcinfo, keys);
	reg.key_prefix = key_prefix(rel, fcinfo);
	reg.notify = PG_GETARG_BOOL(7);
	reg.changes = PG_GETARG_BOOL(8);

	step.reg = &reg;
	with_registrations(register_step, &step);
	report_registration(RelationGetRelationName(rel), &step);

	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}

typedef struct UnregisterStep
{
	Oid			relid;
	char	   *key_prefix;
} UnregisterStep;

/* The stored part of unregister(), run by with_registrations(). */
static void
unregister_step(void *arg)
{
	UnregisterStep *s = arg;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(s->relid)};

	spi_run("DELETE FROM cachesync.registrations WHERE rel::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
			"RETURNING key_prefix", 1, types, values, NULL);
	if (SPI_processed > 0)
	{
		s->key_prefix = MemoryContextStrdup(TopTransactionContext,
											SPI_getvalue(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc, 1));
		cs_capture_remove(s->relid);
	}
}

/* cachesync.unregister(rel regclass, purge boolean) RETURNS void */
Datum
cachesync_unregister(PG_FUNCTION_ARGS)
{
	UnregisterStep step;
	Relation	rel;
	const char *name;

	cachesync_require_preload();
	require_arg(fcinfo, 0, "rel");
	require_arg(fcinfo, 1, "purge");

	rel = relation_open(PG_GETARG_OID(0), ShareRowExclusiveLock);
	name = RelationGetRelationName(rel);
	if (!cs_rel_ownercheck(RelationGetRelid(rel), GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, name);

	step.relid = RelationGetRelid(rel);
	step.key_prefix = NULL;
	with_registrations(unregister_step, &step);
	if (step.key_prefix == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is not registered with cachesync", name)));
	/* its read counters free their slot (lost even if this rolls back) */
	cs_hot_forget(step.relid);

	if (PG_GETARG_BOOL(1))
	{
		char	   *prefix = psprintf("%s%s", cachesync_key_prefix, step.key_prefix);
		int64		removed = cs_keyspace_unlink_prefix(prefix);

		/* and the version keys that fenced them */
		(void) cs_keyspace_unlink_prefix(psprintf("%s%sv:%s", cachesync_key_prefix,
												  CS_INTERNAL_PREFIX, step.key_prefix));

		ereport(NOTICE,
				(errmsg("removed " INT64_FORMAT " Redis key%s of \"%s\"",
						removed, removed == 1 ? "" : "s", name)));
	}
	relation_close(rel, NoLock);
	PG_RETURN_VOID();
}

typedef struct RenameStep
{
	Oid			relid;
	const char *oldname;
	const char *newname;
} RenameStep;

/* The stored part of a column rename, run by with_registrations(). */
static void
rename_step(void *arg)
{
	RenameStep *r = arg;
	Oid			types[3] = {OIDOID, TEXTOID, TEXTOID};
	Datum		values[3] = {ObjectIdGetDatum(r->relid), CStringGetTextDatum(r->oldname),
	CStringGetTextDatum(r->newname)};

	spi_run("UPDATE cachesync.registrations "
			"SET key_columns = pg_catalog.array_replace(key_columns, $2, $3), "
			"    columns = pg_catalog.array_replace(columns, $2, $3) "
			"WHERE rel::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
			3, types, values, NULL);
}

/* Follows ALTER TABLE ... RENAME COLUMN of a registered table (ddl.c). */
void
cs_registry_rename_column(Oid relid, const char *oldname, const char *newname)
{
	RenameStep	r = {relid, oldname, newname};

	with_registrations(rename_step, &r);
}
