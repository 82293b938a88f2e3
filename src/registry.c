/*-------------------------------------------------------------------------
 *
 * registry.c
 *	  A backend-local cache of cachesync.registrations.
 *
 * The cache is read with a plain heap scan, not SPI, so that capture
 * triggers fired by a role that may only write a table still find the
 * registration without that role being able to read cachesync's tables.
 *
 * It is rebuilt lazily after a relcache invalidation of the registrations
 * table (register and unregister send one), of a registered table (its
 * columns may have changed) or of everything.  A CsTable pointer stays
 * valid until the next cs_registry_lookup() or cs_registry_match_key(),
 * which may rebuild the cache; an invalidation alone frees nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "cachesync.h"
#include "registry.h"

static HTAB *cs_tables = NULL;
static HTAB *cs_partitions = NULL;	/* partition relid -> registered root */
static MemoryContext cs_registry_cxt = NULL;
static bool cs_registry_valid = false;
static uint64 cs_registry_inval_count = 0;
static bool cs_callback_registered = false;
static Oid	cs_registrations_oid = InvalidOid;

/* the registered root of a partition (InvalidOid: none) */
typedef struct CsPartition
{
	Oid			relid;
	Oid			root;
} CsPartition;

static const char *const mode_names[] = {
	[CS_MODE_WRITE_THROUGH] = "write_through",
	[CS_MODE_WRITE_AROUND] = "write_around",
	[CS_MODE_ASYNC] = "async",
	[CS_MODE_WRITE_BACK] = "write_back"
};

/* Sets *mode from its SQL name; returns false for an unknown name. */
bool
cs_mode_parse(const char *name, CsMode *mode)
{
	for (int i = 0; i < lengthof(mode_names); i++)
	{
		if (strcmp(name, mode_names[i]) == 0)
		{
			*mode = (CsMode) i;
			return true;
		}
	}
	return false;
}

/* Sets *format from its SQL name; returns false for an unknown name. */
bool
cs_format_parse(const char *name, CsFormat *format)
{
	if (strcmp(name, "json") == 0)
		*format = CS_FORMAT_JSON;
	else if (strcmp(name, "hash") == 0)
		*format = CS_FORMAT_HASH;
	else
		return false;
	return true;
}

/* Marks the cache stale; the next lookup rebuilds it. */
void
cs_registry_invalidate(void)
{
	cs_registry_valid = false;
	cs_registrations_oid = InvalidOid;
	cs_registry_inval_count++;
}

/*
 * Relcache callback: drops the cache when anything it depends on changed:
 * the registrations, a registered table, a partition of one, or everything.
 * It counts even while a load is under way, so that load starts over.
 */
static void
registry_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == cs_registrations_oid ||
		(cs_tables != NULL && hash_search(cs_tables, &relid, HASH_FIND, NULL)) ||
		(cs_partitions != NULL && hash_search(cs_partitions, &relid, HASH_FIND, NULL)))
		cs_registry_invalidate();
}

/* Returns the OID of cachesync.registrations, or InvalidOid without the extension. */
Oid
cs_registry_relid(void)
{
	Oid			nsp;

	if (OidIsValid(cs_registrations_oid))
		return cs_registrations_oid;
	nsp = get_namespace_oid("cachesync", true);
	if (!OidIsValid(nsp))
		return InvalidOid;
	cs_registrations_oid = get_relname_relid("registrations", nsp);
	return cs_registrations_oid;
}

/* Returns the elements of a text[] datum as palloc'd C strings. */
static char **
text_array_to_cstrings(Datum d, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;

	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false,
					  TYPALIGN_INT, &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		out[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
	return out;
}

/* Returns an interval as milliseconds, counting a month as 30 days. */
int64
cs_interval_ms(const Interval *iv)
{
	return iv->time / 1000 +
		((int64) iv->month * DAYS_PER_MONTH + iv->day) * (USECS_PER_DAY / 1000);
}

/*
 * Resolves a column name of t's table to its attribute number, recording
 * in t->broken why it cannot.
 */
static AttrNumber
resolve_column(CsTable *t, const char *name)
{
	AttrNumber	attnum = get_attnum(t->relid, name);

	if (attnum <= 0 && t->broken == NULL)
		t->broken = psprintf("column \"%s\" of table \"%s\" no longer exists",
							 name, get_rel_name(t->relid));
	return attnum;
}

/* Fills the key and column arrays of t from the stored column names. */
static void
resolve_columns(CsTable *t, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	Datum		d;
	char	  **names;
	int			n;

	d = heap_getattr(tup, Anum_reg_key_columns, desc, &isnull);
	names = text_array_to_cstrings(d, &n);
	t->nkeys = n;
	t->key_attnums = palloc(sizeof(AttrNumber) * n);
	t->key_types = palloc(sizeof(Oid) * n);
	t->key_typmods = palloc(sizeof(int32) * n);
	for (int i = 0; i < n; i++)
	{
		Oid			coll;

		t->key_attnums[i] = resolve_column(t, names[i]);
		t->key_types[i] = InvalidOid;
		t->key_typmods[i] = -1;
		if (t->key_attnums[i] > 0)
			get_atttypetypmodcoll(t->relid, t->key_attnums[i],
								  &t->key_types[i], &t->key_typmods[i], &coll);
	}

	d = heap_getattr(tup, Anum_reg_columns, desc, &isnull);
	t->all_columns = isnull;
	t->ncolumns = 0;
	t->column_attnums = NULL;
	if (!isnull)
	{
		names = text_array_to_cstrings(d, &n);
		t->ncolumns = n;
		t->column_attnums = palloc(sizeof(AttrNumber) * n);
		for (int i = 0; i < n; i++)
			t->column_attnums[i] = resolve_column(t, names[i]);
	}
}

/* Adds the registration held in tup to the cache. */
static void
load_entry(HeapTuple tup, TupleDesc desc)
{
	bool		isnull;
	bool		found;
	Oid			relid;
	CsTable    *t;
	Datum		d;

	relid = DatumGetObjectId(heap_getattr(tup, Anum_reg_rel, desc, &isnull));
	if (get_rel_name(relid) == NULL)
		return;					/* dropped; its row goes at the end of the DROP */
	t = hash_search(cs_tables, &relid, HASH_ENTER, &found);
	t->broken = NULL;
	t->fmt = NULL;
	if (!cs_mode_parse(TextDatumGetCString(heap_getattr(tup, Anum_reg_mode, desc, &isnull)),
					   &t->mode))
		t->broken = "unknown mode";
	if (!cs_format_parse(TextDatumGetCString(heap_getattr(tup, Anum_reg_format, desc, &isnull)),
						 &t->format))
		t->broken = "unknown format";
	d = heap_getattr(tup, Anum_reg_ttl, desc, &isnull);
	t->ttl_ms = isnull ? 0 : Max(cs_interval_ms(DatumGetIntervalP(d)), 1);
	t->key_prefix = TextDatumGetCString(heap_getattr(tup, Anum_reg_key_prefix, desc, &isnull));
	t->notify = DatumGetBool(heap_getattr(tup, Anum_reg_notify, desc, &isnull));
	t->changes = DatumGetBool(heap_getattr(tup, Anum_reg_changes, desc, &isnull));
	resolve_columns(t, tup, desc);
}

/* Rebuilds the cache from cachesync.registrations. */
static void
registry_load(void)
{
	HASHCTL		ctl;
	Oid			regoid;
	Relation	rel;
	Snapshot	snap;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext old;
	uint64		inval_count;

	if (!cs_callback_registered)
	{
		CacheRegisterRelcacheCallback(registry_relcache_callback, (Datum) 0);
		cs_callback_registered = true;
	}
	if (cs_registry_cxt == NULL)
		cs_registry_cxt = AllocSetContextCreate(CacheMemoryContext,
												"cachesync registry",
												ALLOCSET_SMALL_SIZES);
again:
	inval_count = cs_registry_inval_count;
	MemoryContextReset(cs_registry_cxt);
	cs_tables = NULL;
	cs_partitions = NULL;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(CsTable);
	ctl.hcxt = cs_registry_cxt;
	cs_tables = hash_create("cachesync tables", 16, &ctl,
							HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.entrysize = sizeof(CsPartition);
	cs_partitions = hash_create("cachesync partitions", 16, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	regoid = cs_registry_relid();
	if (OidIsValid(regoid))
	{
		old = MemoryContextSwitchTo(cs_registry_cxt);
		rel = table_open(regoid, AccessShareLock);
		snap = RegisterSnapshot(GetLatestSnapshot());
		scan = table_beginscan(rel, snap, 0, NULL);
		while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
			load_entry(tup, RelationGetDescr(rel));
		table_endscan(scan);
		UnregisterSnapshot(snap);
		table_close(rel, AccessShareLock);
		MemoryContextSwitchTo(old);
	}
	/* an invalidation arrived while loading: what was read may be stale */
	if (inval_count != cs_registry_inval_count)
		goto again;
	cs_registry_valid = true;
}

/* Returns the registration of relid, or NULL when it is not registered. */
CsTable *
cs_registry_lookup(Oid relid)
{
	if (!cs_registry_valid)
		registry_load();
	return hash_search(cs_tables, &relid, HASH_FIND, NULL);
}

/* Returns the registration of relid; throws when there is none usable. */
CsTable *
cs_registry_get(Oid relid)
{
	CsTable    *t = cs_registry_lookup(relid);

	if (t == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is not registered with cachesync",
						get_rel_name(relid) ? get_rel_name(relid) : "?"),
				 errhint("Register it with cachesync.register().")));
	if (t->broken != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("registration of table \"%s\" is out of date",
						get_rel_name(relid)),
				 errdetail("%s.", t->broken),
				 errhint("Register the table again with cachesync.register() to update its key and columns.")));
	return t;
}

/*
 * Returns the memory context of the cached registrations, for data that
 * lives as long as a CsTable.  It never reloads the cache: callers hold a
 * CsTable, which a reload would free.
 */
MemoryContext
cs_registry_context(void)
{
	Assert(cs_registry_cxt != NULL);
	return cs_registry_cxt;
}

/*
 * Returns the registered table whose full key prefix starts key, or NULL.
 * Prefixes never overlap, so at most one matches.
 */
CsTable *
cs_registry_match_key(const char *key, size_t len)
{
	HASH_SEQ_STATUS seq;
	CsTable    *t;
	size_t		glen = strlen(cachesync_key_prefix);

	if (!cs_registry_valid)
		registry_load();
	if (len < glen || memcmp(key, cachesync_key_prefix, glen) != 0)
		return NULL;
	hash_seq_init(&seq, cs_tables);
	while ((t = hash_seq_search(&seq)) != NULL)
	{
		size_t		plen = strlen(t->key_prefix);

		if (len - glen >= plen && memcmp(key + glen, t->key_prefix, plen) == 0)
		{
			hash_seq_term(&seq);
			return t;
		}
	}
	return NULL;
}

/*
 * Calls fn for every registered table.  fn may open relations (which may
 * invalidate the cache), so each table is looked up afresh.
 */
void
cs_registry_foreach(void (*fn) (CsTable *t, void *arg), void *arg)
{
	HASH_SEQ_STATUS seq;
	CsTable    *t;
	List	   *relids = NIL;
	ListCell   *lc;

	if (!cs_registry_valid)
		registry_load();
	hash_seq_init(&seq, cs_tables);
	while ((t = hash_seq_search(&seq)) != NULL)
		relids = lappend_oid(relids, t->relid);
	foreach(lc, relids)
	{
		t = cs_registry_lookup(lfirst_oid(lc));
		if (t != NULL)
			fn(t, arg);
	}
	list_free(relids);
}

/*
 * Returns the registration that serves rel: its own, or that of the
 * registered partitioned table it is a partition of; NULL when none.
 */
CsTable *
cs_registry_lookup_rel(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	CsTable    *t = cs_registry_lookup(relid);
	CsPartition *p;
	List	   *ancestors;
	ListCell   *lc;
	Oid			root = InvalidOid;

	if (t != NULL || !rel->rd_rel->relispartition)
		return t;
	p = hash_search(cs_partitions, &relid, HASH_FIND, NULL);
	if (p != NULL)
		return OidIsValid(p->root) ? cs_registry_lookup(p->root) : NULL;

	/* catalog access: may invalidate the cache, so look up afterwards */
	ancestors = get_partition_ancestors(relid);
	foreach(lc, ancestors)
	{
		if (cs_registry_lookup(lfirst_oid(lc)) != NULL)
		{
			root = lfirst_oid(lc);
			break;
		}
	}
	(void) cs_registry_lookup(InvalidOid);	/* make sure the cache is current */
	p = hash_search(cs_partitions, &relid, HASH_ENTER, NULL);
	p->root = root;
	return OidIsValid(root) ? cs_registry_lookup(root) : NULL;
}

/* Returns true when column att of t is cached (key columns always are). */
bool
cs_column_is_cached(CsTable *t, AttrNumber att)
{
	if (t->all_columns)
		return true;
	for (int i = 0; i < t->ncolumns; i++)
	{
		if (t->column_attnums[i] == att)
			return true;
	}
	return false;
}
