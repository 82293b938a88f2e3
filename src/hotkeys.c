/*-------------------------------------------------------------------------
 *
 * hotkeys.c
 *	  Which keys are read most: an approximate top-k per table, kept in
 *	  shared memory and in a file across restarts.
 *
 * Each tracked table (up to cachesync.hot_keys_tables, per cluster) has
 * cachesync.hot_keys counters run by the space-saving algorithm: a key
 * already counted is incremented; a new key takes a free counter, or, when
 * all are taken, replaces the key with the smallest count c and starts at
 * c + 1 (remembering c as its possible overcount).  Every key read more
 * than (reads / counters) times is guaranteed to hold a counter, and the
 * keys with the largest counts are the hottest: what warm-up needs.  Memory
 * is fixed at startup; a key longer than CS_HOT_KEY_LEN - 1 bytes (after
 * the table's prefix) is not tracked.
 *
 * Keys are stored without cachesync.key_prefix and the table's prefix, so
 * changing either keeps the counts meaningful.
 *
 * Locking: one LWLock guards everything; a read takes it once per call
 * (get_many: once per batch) for a scan of at most hot_keys entries.
 *
 * Persistence: the background worker writes the counters to
 * pg_stat/cachesync_hot_keys.stat at most every CS_HOT_PERSIST_MS when
 * they changed, and the postmaster writes them at a clean shutdown; the
 * postmaster loads the file when it creates shared memory (start and crash
 * restart).  A crash loses at most the reads since the worker's last write.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "cachesync.h"
#include "hotkeys.h"
#include "shmem.h"

#define CS_HOT_KEY_LEN 128
#define CS_HOT_FILE "pg_stat/cachesync_hot_keys.stat"
#define CS_HOT_FILE_TMP CS_HOT_FILE ".tmp"
#define CS_HOT_MAGIC 0x43534b31	/* "CSK1" */
#define CS_HOT_PERSIST_MS 10000

int			cachesync_hot_keys = 1000;
int			cachesync_hot_keys_tables = 16;

/* one counter */
typedef struct CsHotEntry
{
	uint32		hash;
	uint16		len;
	int64		count;			/* reads counted (an upper bound) */
	int64		error;			/* how much of count may belong to evicted keys */
	char		key[CS_HOT_KEY_LEN];
} CsHotEntry;

/* one tracked table; its counters follow the table directory */
typedef struct CsHotTable
{
	Oid			dbid;
	Oid			relid;
	int			n;				/* counters in use */
} CsHotTable;

typedef struct CsHotShared
{
	LWLock	   *lock;
	pg_atomic_uint64 changes;	/* bumped on every counted read */
	int			slots;			/* counters per table, fixed at startup */
	int			maxtables;
	int			ntables;
	CsHotTable	tables[FLEXIBLE_ARRAY_MEMBER];
} CsHotShared;

static CsHotShared *hot = NULL;

PG_FUNCTION_INFO_V1(cachesync_hot_keys_list);

/* Returns the size of the directory part. */
static Size
dir_size(void)
{
	return MAXALIGN(add_size(offsetof(CsHotShared, tables),
							 mul_size(cachesync_hot_keys_tables, sizeof(CsHotTable))));
}

/* Returns the shared memory the counters need. */
Size
cs_hot_shmem_size(void)
{
	return add_size(dir_size(),
					mul_size(mul_size(cachesync_hot_keys_tables, cachesync_hot_keys),
							 sizeof(CsHotEntry)));
}

/* Asks for the lock; called from the shmem request hook. */
void
cs_hot_shmem_request(void)
{
	RequestNamedLWLockTranche("cachesync hot keys", 1);
}

/* Returns the counters of table i. */
static CsHotEntry *
entries_of(int i)
{
	return (CsHotEntry *) ((char *) hot + dir_size()) + (Size) i * hot->slots;
}

/* Returns the index of (dbid, relid), adding it when add; -1 if none. */
static int
table_index(Oid dbid, Oid relid, bool add)
{
	for (int i = 0; i < hot->ntables; i++)
	{
		if (hot->tables[i].relid == relid && hot->tables[i].dbid == dbid)
			return i;
	}
	if (!add || hot->ntables >= hot->maxtables)
		return -1;
	hot->tables[hot->ntables].dbid = dbid;
	hot->tables[hot->ntables].relid = relid;
	hot->tables[hot->ntables].n = 0;
	return hot->ntables++;
}

/* Counts count reads (count - error of them surely) of key; lock held. */
static void
count_key(int ti, const char *key, int len, uint32 h, int64 count, int64 error)
{
	CsHotTable *t = &hot->tables[ti];
	CsHotEntry *e = entries_of(ti);
	int			min = -1;

	for (int i = 0; i < t->n; i++)
	{
		if (e[i].hash == h && e[i].len == len && memcmp(e[i].key, key, len) == 0)
		{
			e[i].count += count;
			return;
		}
		if (min < 0 || e[i].count < e[min].count)
			min = i;
	}
	if (t->n < hot->slots)
		min = t->n++;
	else
	{
		/* space-saving: the newcomer inherits the smallest count */
		error = e[min].count;
		count += e[min].count;
	}
	e[min].hash = h;
	e[min].len = len;
	e[min].count = count;
	e[min].error = error;
	memcpy(e[min].key, key, len);
	e[min].key[len] = '\0';
}

/*
 * Frees the slots of this database's tables that were dropped (a dropped
 * table loses its registration without unregister()), at most once per
 * CS_HOT_PERSIST_MS per process.  Checks the catalog without the lock.
 */
static void
prune_dropped(void)
{
	static TimestampTz pruned_at = 0;
	Oid		   *relids;
	int			n = 0;

	if (!TimestampDifferenceExceeds(pruned_at, GetCurrentTimestamp(), CS_HOT_PERSIST_MS))
		return;
	pruned_at = GetCurrentTimestamp();
	relids = palloc(sizeof(Oid) * hot->maxtables);
	LWLockAcquire(hot->lock, LW_SHARED);
	for (int i = 0; i < hot->ntables; i++)
	{
		if (hot->tables[i].dbid == MyDatabaseId)
			relids[n++] = hot->tables[i].relid;
	}
	LWLockRelease(hot->lock);
	for (int i = 0; i < n; i++)
	{
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relids[i])))
			cs_hot_forget(relids[i]);
	}
	pfree(relids);
}

/* Counts one read of each of n keys (given after the table's prefix). */
void
cs_hot_observe(Oid relid, char **suffixes, int n)
{
	int			ti;

	if (hot == NULL || hot->slots == 0 || n == 0)
		return;
	LWLockAcquire(hot->lock, LW_EXCLUSIVE);
	ti = table_index(MyDatabaseId, relid, true);
	if (ti < 0)
	{
		/* every slot is taken: maybe by tables dropped since */
		LWLockRelease(hot->lock);
		prune_dropped();
		LWLockAcquire(hot->lock, LW_EXCLUSIVE);
		ti = table_index(MyDatabaseId, relid, true);
	}
	for (int i = 0; ti >= 0 && i < n; i++)
	{
		int			len = strlen(suffixes[i]);

		if (len < CS_HOT_KEY_LEN)
			count_key(ti, suffixes[i], len,
					  hash_bytes((const unsigned char *) suffixes[i], len), 1, 0);
	}
	LWLockRelease(hot->lock);
	pg_atomic_fetch_add_u64(&hot->changes, 1);
}

/* Drops relid's counters (it was unregistered), freeing its slot. */
void
cs_hot_forget(Oid relid)
{
	int			ti;
	int			last;

	if (hot == NULL)
		return;
	LWLockAcquire(hot->lock, LW_EXCLUSIVE);
	ti = table_index(MyDatabaseId, relid, false);
	last = hot->ntables - 1;
	if (ti >= 0 && ti != last)
	{
		/* the last table moves into the freed slot */
		hot->tables[ti] = hot->tables[last];
		memcpy(entries_of(ti), entries_of(last), sizeof(CsHotEntry) * hot->tables[last].n);
	}
	if (ti >= 0)
		hot->ntables--;
	LWLockRelease(hot->lock);
	pg_atomic_fetch_add_u64(&hot->changes, 1);
}

/* qsort comparator: larger count first */
static int
by_count_desc(const void *a, const void *b)
{
	int64		ca = ((const CsHotEntry *) a)->count;
	int64		cb = ((const CsHotEntry *) b)->count;

	return (ca < cb) - (ca > cb);
}

/* Returns a palloc'd copy of table ti's counters, hottest first; lock held. */
static CsHotEntry *
sorted_copy(int ti, int *n)
{
	CsHotEntry *copy;

	*n = hot->tables[ti].n;
	copy = palloc(sizeof(CsHotEntry) * Max(*n, 1));
	memcpy(copy, entries_of(ti), sizeof(CsHotEntry) * *n);
	qsort(copy, *n, sizeof(CsHotEntry), by_count_desc);
	return copy;
}

/* Returns the up to n hottest keys of relid (after its prefix), hottest first. */
List *
cs_hot_top(Oid relid, int n)
{
	List	   *keys = NIL;
	CsHotEntry *copy = NULL;
	int			m = 0;
	int			ti;

	if (hot == NULL)
		return NIL;
	LWLockAcquire(hot->lock, LW_SHARED);
	ti = table_index(MyDatabaseId, relid, false);
	if (ti >= 0)
		copy = sorted_copy(ti, &m);
	LWLockRelease(hot->lock);
	for (int i = 0; i < Min(m, n); i++)
		keys = lappend(keys, pstrdup(copy[i].key));
	return keys;
}

/* Writes every table's counters to the file; returns false on failure. */
static bool
write_file(void)
{
	FILE	   *f = AllocateFile(CS_HOT_FILE_TMP, PG_BINARY_W);
	uint32		header[2] = {CS_HOT_MAGIC, 0};
	bool		ok;

	/* the postmaster writes at exit, alone and without a PGPROC to lock with */
	bool		lock = IsUnderPostmaster;

	if (f == NULL)
		return false;
	if (lock)
		LWLockAcquire(hot->lock, LW_SHARED);
	header[1] = hot->ntables;
	ok = fwrite(header, sizeof(header), 1, f) == 1;
	for (int ti = 0; ok && ti < hot->ntables; ti++)
	{
		int			n;
		CsHotEntry *copy = sorted_copy(ti, &n);

		ok = fwrite(&hot->tables[ti], sizeof(CsHotTable), 1, f) == 1;
		for (int i = 0; ok && i < n; i++)
			ok = fwrite(&copy[i].len, sizeof(uint16), 1, f) == 1 &&
				fwrite(&copy[i].count, sizeof(int64), 1, f) == 1 &&
				fwrite(&copy[i].error, sizeof(int64), 1, f) == 1 &&
				fwrite(copy[i].key, 1, copy[i].len, f) == copy[i].len;
		pfree(copy);
	}
	if (lock)
		LWLockRelease(hot->lock);
	if (FreeFile(f) != 0)
		ok = false;
	if (ok)
		ok = durable_rename(CS_HOT_FILE_TMP, CS_HOT_FILE, LOG) == 0;
	else
		unlink(CS_HOT_FILE_TMP);
	return ok;
}

/* Loads the file into fresh shared memory; a bad file is ignored. */
static void
read_file(void)
{
	FILE	   *f = AllocateFile(CS_HOT_FILE, PG_BINARY_R);
	uint32		header[2];
	bool		ok;

	if (f == NULL)
		return;
	ok = fread(header, sizeof(header), 1, f) == 1 && header[0] == CS_HOT_MAGIC;
	for (uint32 t = 0; ok && t < header[1]; t++)
	{
		CsHotTable tab;
		int			ti;

		ok = fread(&tab, sizeof(tab), 1, f) == 1 && tab.n >= 0;
		ti = ok ? table_index(tab.dbid, tab.relid, true) : -1;
		for (int i = 0; ok && i < tab.n; i++)
		{
			uint16		len;
			int64		count;
			int64		error;
			char		key[CS_HOT_KEY_LEN];

			ok = fread(&len, sizeof(len), 1, f) == 1 && len < CS_HOT_KEY_LEN &&
				fread(&count, sizeof(count), 1, f) == 1 &&
				fread(&error, sizeof(error), 1, f) == 1 &&
				fread(key, 1, len, f) == len;
			/* hottest first: what does not fit is the coldest */
			if (ok && ti >= 0 && hot->tables[ti].n < hot->slots)
				count_key(ti, key, len, hash_bytes((unsigned char *) key, len), count, error);
		}
	}
	if (!ok)
		ereport(LOG,
				(errmsg("cachesync: ignoring the rest of damaged file \"%s\"", CS_HOT_FILE)));
	FreeFile(f);
}

/* Postmaster exit: keeps the counters for the next start (not after a crash). */
static void
hot_shmem_exit(int code, Datum arg)
{
	if (code == 0 && hot != NULL && hot->slots > 0)
		(void) write_file();
}

/* Creates or attaches to the counters; called under AddinShmemInitLock. */
void
cs_hot_shmem_init(void)
{
	bool		found;

	hot = ShmemInitStruct("cachesync hot keys", cs_hot_shmem_size(), &found);
	if (!found)
	{
		hot->lock = &(GetNamedLWLockTranche("cachesync hot keys"))->lock;
		pg_atomic_init_u64(&hot->changes, 0);
		hot->slots = cachesync_hot_keys;
		hot->maxtables = cachesync_hot_keys_tables;
		hot->ntables = 0;
		if (hot->slots > 0)
			read_file();
	}
	if (!IsUnderPostmaster)
		on_shmem_exit(hot_shmem_exit, (Datum) 0);
}

/*
 * Writes the counters when they changed and the last write is at least
 * CS_HOT_PERSIST_MS old.  Called by the worker between rounds; never throws.
 */
void
cs_hot_persist_if_due(void)
{
	static uint64 written = 0;
	static TimestampTz written_at = 0;
	uint64		changes;

	if (hot == NULL || hot->slots == 0)
		return;
	changes = pg_atomic_read_u64(&hot->changes);
	if (changes == written ||
		!TimestampDifferenceExceeds(written_at, GetCurrentTimestamp(), CS_HOT_PERSIST_MS))
		return;
	if (write_file())
		written = changes;
	written_at = GetCurrentTimestamp();
}

/*
 * cachesync._hot_keys() RETURNS TABLE(relid oid, key text, hits bigint,
 *		error bigint): the counters of this database, hottest first per table.
 */
Datum
cachesync_hot_keys_list(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	cs_shmem_require();
	InitMaterializedSRF(fcinfo, 0);
	if (hot == NULL)
		return (Datum) 0;
	LWLockAcquire(hot->lock, LW_SHARED);
	for (int ti = 0; ti < hot->ntables; ti++)
	{
		int			n;
		CsHotEntry *copy;

		if (hot->tables[ti].dbid != MyDatabaseId)
			continue;
		copy = sorted_copy(ti, &n);
		for (int i = 0; i < n; i++)
		{
			Datum		values[4];
			bool		nulls[4] = {0};

			values[0] = ObjectIdGetDatum(hot->tables[ti].relid);
			values[1] = CStringGetTextDatum(copy[i].key);
			values[2] = Int64GetDatum(copy[i].count);
			values[3] = Int64GetDatum(copy[i].error);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	LWLockRelease(hot->lock);
	return (Datum) 0;
}
