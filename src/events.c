/*-------------------------------------------------------------------------
 *
 * events.c
 *	  Change events for other consumers: the invalidation broadcast over
 *	  Pub/Sub (register's notify) and the change stream over Redis Streams
 *	  (register's changes).
 *
 * Invalidation broadcast (at-most-once).  Each committed change of a notify
 * table publishes the row's key on the table's channel and on the channel
 * of all tables (names in keys.c).  A TRUNCATE publishes the table's key
 * prefix, meaning "every key of the table".  Who publishes:
 *   - write_through: capture.c after commit, in one pipeline sent without
 *     waiting for the replies (cs_redis_send_unread): the commit pays no
 *     round trip;
 *   - write_around: capture.c after commit, in the pipeline of the fenced
 *     deletes it already waits for;
 *   - everything the queue carries (async tables, TRUNCATE, big or prepared
 *     transactions, pushes that met a Redis failure): the worker, after it
 *     has written the keys (cs_notify_keys).
 * Nothing is published before the commit, so rolled-back work (savepoints
 * included) never is.  A failure loses the messages, counted in
 * cachesync.stats.publish_lost: a near cache then relies on its TTL.
 *
 * Change stream (at-least-once, ordered per key).  The row trigger inserts
 * (rel, pos, op, key, row) into the outbox table cachesync.changes_outbox
 * inside the writer's transaction: the entry commits or vanishes with the
 * change, a rolled-back savepoint takes its entries along, and a committed
 * entry survives a Postgres crash.  The worker appends entries to the
 * table's stream in pos order with XADD ... MAXLEN ~ cachesync.changes_maxlen
 * and deletes them in the same transaction that read them; a crash or a
 * Redis failure between the XADD and that commit ships them again, with the
 * same pos, so consumers drop an entry whose pos is not above the last they
 * saw for its key.
 *
 * Why pos orders the changes of one key: pos is drawn from the version
 * clock (version.c, strictly increasing across processes) in the row
 * trigger, after the row is written and while the writer holds the lock
 * that serialises writers of that key: the row lock for UPDATE and DELETE,
 * and for an INSERT of a key that another transaction deletes or inserts,
 * the wait on the unique index until that one commits or aborts.  So the
 * later of two committed changes of a key draws its pos after the earlier
 * one committed.  And the worker ships the committed entries it can see,
 * lowest pos first: when it sees the later one, the earlier one committed
 * before it and is already shipped or in the same batch before it.  This
 * needs the key columns to be unique (a primary key or unique index, as
 * register's default is); across keys the stream is only roughly in order.
 *
 * Ops: insert, update, delete, truncate.  An UPDATE that changes the key is
 * a delete of the old key and an insert of the new.  truncate has an empty
 * key and no row: the table (or one of its partitions) lost its rows.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "cachesync.h"
#include "capture.h"
#include "events.h"
#include "keys.h"
#include "queue.h"
#include "redis.h"
#include "registry.h"
#include "rowformat.h"
#include "shmem.h"
#include "stats.h"
#include "version.h"
#include "worker.h"

/* columns of cachesync.changes_outbox */
#define Natts_outbox 5

/*
 * Waking the worker: a backend wakes it after a commit that wrote outbox
 * entries, but at most once per CS_CHANGES_WAKE_MS; and the worker, for
 * CS_CHANGES_FLOWING_MS after it last shipped entries, polls the outbox
 * every CS_CHANGES_WAKE_MS instead of idling for a second.  So under load
 * the worker ships batches instead of running a whole round per commit
 * (on a small machine its rounds take the writers' CPU), and an entry still
 * waits at most about CS_CHANGES_WAKE_MS: a commit that did not wake the
 * worker came less than that after one that did, whose entry the worker
 * shipped at some time T, and it polls again at T + CS_CHANGES_WAKE_MS.
 */
#define CS_CHANGES_WAKE_MS 10
#define CS_CHANGES_FLOWING_MS 50

/* when this backend last woke the worker for the outbox */
static TimestampTz last_wake = 0;

/* in the worker: when it last shipped outbox entries */
static TimestampTz last_shipped = 0;

/* a change batch stops growing past this many bytes of commands */
#define CS_MAX_CHANGES_BYTES (16 * 1024 * 1024)

/* Appends the PUBLISH of key on a table's channel and on the all-tables one. */
void
cs_notify_append(CsPipeline *p, const char *channel, const char *key)
{
	cs_pipeline_append_strs(p, 3, (const char *[]) {"PUBLISH", channel, key});
	cs_pipeline_append_strs(p, 3, (const char *[]) {"PUBLISH", cs_invalidate_all_channel(), key});
}

/*
 * Publishes the keys the worker has just synced for relid (truncated: the
 * table's key prefix too) when its table has notify set.  Inside a
 * transaction.  A failure only counts the lost messages.
 */
void
cs_notify_keys(Oid relid, List *keys, bool truncated)
{
	CsTable    *t = cs_registry_lookup(relid);
	CsPipeline *p;
	CsReply   **replies;
	char	   *channel;
	ListCell   *lc;

	if (t == NULL || t->broken || !t->notify || (keys == NIL && !truncated))
		return;
	p = cs_pipeline_create();
	channel = cs_invalidate_channel(relid);
	if (truncated)
		cs_notify_append(p, channel, psprintf("%s%s", cachesync_key_prefix, t->key_prefix));
	foreach(lc, keys)
		cs_notify_append(p, channel, lfirst(lc));
	if (cs_redis_try_run(p, &replies))
		cs_stats_add(relid, CS_STAT_PUBLISHED, p->ncommands);
	else
		cs_stats_add(relid, CS_STAT_PUBLISH_LOST, p->ncommands);
}

/* the OID of cachesync.changes_outbox, looked up once per backend */
static Oid	outbox_oid = InvalidOid;
static bool outbox_callback_registered = false;

/* Relcache callback: forgets the OID when the outbox may have gone. */
static void
outbox_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == outbox_oid)
		outbox_oid = InvalidOid;
}

/*
 * Returns the OID of cachesync.changes_outbox.  Cached: the row trigger
 * needs it for every change, and two catalog lookups per row show in the
 * write path.  A DROP EXTENSION invalidates the relation, which resets it.
 */
static Oid
outbox_relid(void)
{
	if (!outbox_callback_registered)
	{
		CacheRegisterRelcacheCallback(outbox_relcache_callback, (Datum) 0);
		outbox_callback_registered = true;
	}
	if (!OidIsValid(outbox_oid))
		outbox_oid = get_relname_relid("changes_outbox",
									   get_namespace_oid("cachesync", false));
	return outbox_oid;
}

/*
 * Records one change of t in the outbox, inside the writer's transaction
 * (and subtransaction).  op: insert, update, delete or truncate; key NULL
 * for truncate; tuple NULL for delete and truncate.  A plain heap insert:
 * the outbox has no index, trigger or rule, and writers need no privilege
 * on it.
 */
void
cs_changes_record(CsTable *t, const char *op, const char *key,
				  HeapTuple tuple, TupleDesc desc)
{
	Relation	rel = table_open(outbox_relid(), RowExclusiveLock);
	Datum		values[Natts_outbox];
	bool		nulls[Natts_outbox] = {false, false, false, false, false};
	HeapTuple	tup;

	values[0] = ObjectIdGetDatum(t->relid);
	/* drawn now, under the key's lock: see the file header */
	values[1] = Int64GetDatum((int64) cs_version_next());
	values[2] = CStringGetTextDatum(op);
	nulls[3] = (key == NULL);
	values[3] = key ? CStringGetTextDatum(key) : (Datum) 0;
	nulls[4] = (tuple == NULL);
	values[4] = tuple ? PointerGetDatum(cs_row_json(t, tuple, desc)) : (Datum) 0;
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	simple_heap_insert(rel, tup);
	heap_freetuple(tup);
	table_close(rel, NoLock);
}

/*
 * After a commit that wrote outbox entries: wakes the worker unless this
 * backend did so less than CS_CHANGES_WAKE_MS ago (see above).
 */
void
cs_changes_committed(void)
{
	TimestampTz now;

	if (cs_shared == NULL)
		return;
	/* tells the worker the outbox is worth reading (cs_changes_take_pending) */
	pg_atomic_write_u32(&cs_shared->changes_pending, 1);
	now = GetCurrentTimestamp();
	if (now - last_wake < CS_CHANGES_WAKE_MS * INT64CONST(1000))
		return;
	last_wake = now;
	cs_wake_worker();
}

/*
 * In the worker: returns true when a commit wrote outbox entries since the
 * last call (and clears the note).
 */
bool
cs_changes_take_pending(void)
{
	return pg_atomic_exchange_u32(&cs_shared->changes_pending, 0) != 0;
}

/*
 * In the worker: returns true while it should poll the outbox every
 * CS_CHANGES_WAKE_MS (it shipped entries less than CS_CHANGES_FLOWING_MS
 * ago).
 */
bool
cs_changes_flowing(void)
{
	return GetCurrentTimestamp() - last_shipped < CS_CHANGES_FLOWING_MS * INT64CONST(1000);
}

/* Returns the worker's poll interval while changes flow, in milliseconds. */
int
cs_changes_poll_ms(void)
{
	return CS_CHANGES_WAKE_MS;
}

/* Returns column col of SPI row i as text, or NULL. */
static char *
spi_text(uint64 i, int col, size_t *len)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col, &isnull);
	text	   *txt;

	if (isnull)
		return NULL;
	txt = DatumGetTextPP(d);
	*len = VARSIZE_ANY_EXHDR(txt);
	return VARDATA_ANY(txt);
}

/* Appends the XADD of outbox row i to its table's stream. */
static void
append_xadd(CsPipeline *p, CsTable *t, uint64 i, const char *maxlen)
{
	const char *argv[15];
	size_t		lens[15];
	int			argc = 0;
	size_t		len = 0;
	char	   *s;
	bool		isnull;
	char		pos[32];

	snprintf(pos, sizeof(pos), INT64_FORMAT,
			 DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull)));
#define ARG(str, n) (argv[argc] = (str), lens[argc] = (n), argc++)
	ARG("XADD", 4);
	s = cs_changes_stream(t);
	ARG(s, strlen(s));
	ARG("MAXLEN", 6);
	ARG("~", 1);
	ARG(maxlen, strlen(maxlen));
	ARG("*", 1);
	ARG("op", 2);
	s = spi_text(i, 4, &len);
	ARG(s, len);
	ARG("key", 3);
	s = spi_text(i, 5, &len);
	if (s == NULL)
		ARG("", 0);
	else
		ARG(s, len);
	s = spi_text(i, 6, &len);
	if (s != NULL)
	{
		ARG("row", 3);
		ARG(s, len);
	}
	ARG("pos", 3);
	ARG(pos, strlen(pos));
#undef ARG
	cs_pipeline_append(p, argc, argv, lens);
}

/*
 * Reads the next batch of the outbox, lowest pos first.  The plan is kept:
 * the worker reads the outbox up to a hundred times a second while changes
 * flow, and parsing and planning each read showed in its profile.  (A kept
 * plan is re-analysed after DROP and CREATE EXTENSION.)
 */
static uint64
read_outbox(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1] = {Int32GetDatum(cachesync_batch_size)};

	/* a top-N sort: the outbox is small unless Redis was away */
	return cs_worker_select(&plan, "SELECT ctid, rel, pos, op, key, \"row\" FROM cachesync.changes_outbox "
							"ORDER BY pos LIMIT $1", 1, argtypes, args);
}

/*
 * Ships the next batch of the outbox (lowest pos first) to the change
 * streams and deletes it.  Runs inside the worker's transaction with SPI
 * connected.  Returns CS_CHANGES_ALL when the read was short: it saw every
 * committed entry, so the worker need not read again until a commit says
 * it wrote more (cs_changes_take_pending); every read is a scan of the
 * whole outbox, dead entries included until a vacuum, which made the
 * second, empty read after each batch half of the worker's cost.
 */
CsChangesShipped
cs_changes_ship(void)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **replies;
	Datum	   *ids;
	Oid		   *relids;
	int			nids = 0;
	char		maxlen[16];
	uint64		n = read_outbox();

	if (n == 0)
		return CS_CHANGES_NONE;
	snprintf(maxlen, sizeof(maxlen), "%d", cachesync_changes_maxlen);
	ids = palloc(sizeof(Datum) * n);
	relids = palloc(sizeof(Oid) * n);
	for (uint64 i = 0; i < n && p->buf.len < CS_MAX_CHANGES_BYTES; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 2, &isnull));
		CsTable    *t = cs_registry_lookup(relid);

		ids[nids] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		relids[nids++] = relid;
		/* changes switched off or table unregistered since: drop the entry */
		/* a broken registration still ships what was committed */
		if (t != NULL && t->changes)
			append_xadd(p, t, i, maxlen);
		else
			relids[nids - 1] = InvalidOid;
	}
	if (p->ncommands > 0 && !cs_redis_try_run(p, &replies))
		return CS_CHANGES_FAILED;
	{
		ItemPointerData *tids = palloc(sizeof(ItemPointerData) * Max(nids, 1));
		int			ntids = 0;
		int			refused = 0;
		const char *error = NULL;

		/*
		 * Redis answered.  An entry it refused (a stream key of another type,
		 * an ACL, maxmemory) stays in the outbox and is tried again next
		 * round; the others are done.  Refusals usually concern whole
		 * streams, so this keeps each key's entries in order.  Redis is not
		 * "down": the backends keep writing to it.
		 */
		for (int i = 0, r = 0; i < nids; i++)
		{
			if (OidIsValid(relids[i]))
			{
				if (replies[r]->type == CS_REPLY_ERROR)
				{
					refused++;
					error = replies[r]->str;
					r++;
					continue;
				}
				r++;
				cs_stats_add(relids[i], CS_STAT_CHANGES, 1);
			}
			ItemPointerCopy((ItemPointer) DatumGetPointer(ids[i]), &tids[ntids++]);
		}
		cs_delete_tids("changes_outbox", tids, ntids);
		if (refused > 0)
		{
			static TimestampTz logged_at = 0;

			/* a lasting refusal is retried every round: log it once a minute */
			if (!TimestampDifferenceExceeds(logged_at, GetCurrentTimestamp(), 60000))
				return CS_CHANGES_NONE;
			logged_at = GetCurrentTimestamp();
			ereport(LOG,
					(errmsg("cachesync worker: Redis refused %d change stream entries; they stay in cachesync.changes_outbox",
							refused),
					 errdetail_internal("%s", error)));
			return CS_CHANGES_NONE; /* try again after the idle wait, not at once */
		}
	}
	last_shipped = GetCurrentTimestamp();
	/* a full batch, or one cut short by CS_MAX_CHANGES_BYTES, may leave some */
	return (n >= (uint64) cachesync_batch_size || (uint64) nids < n) ? CS_CHANGES_MORE : CS_CHANGES_ALL;
}
