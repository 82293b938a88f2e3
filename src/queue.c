/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  Adding keys to the durable queue (the worker consumes it, worker.c).
 *
 * Entries are appended with plain heap inserts and removed with plain heap
 * deletes (no SPI, no executor): the queue has no index, and the worker
 * walks it in physical order by ctid.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/syscache.h"

#include "cachesync.h"
#include "queue.h"
#include "shmem.h"


/* Adds one key (NULL: the whole table) to a batch. */
void
cs_queue_batch_add(CsQueueBatch *b, Oid relid, const char *key)
{
	if (b->n == b->cap)
	{
		b->cap = Max(16, b->cap * 2);
		b->relids = b->relids ? repalloc(b->relids, sizeof(Oid) * b->cap)
			: palloc(sizeof(Oid) * b->cap);
		b->keys = b->keys ? repalloc(b->keys, sizeof(char *) * b->cap)
			: palloc(sizeof(char *) * b->cap);
	}
	b->relids[b->n] = relid;
	b->keys[b->n] = key ? pstrdup(key) : NULL;
	b->n++;
}

/* Opens cachesync.<name>. */
static Relation
open_own_table(const char *name)
{
	return table_open(get_relname_relid(name, get_namespace_oid("cachesync", false)),
					  RowExclusiveLock);
}

/* lowest queue block this transaction inserted into (cs_queue_committed) */
static BlockNumber xact_low_block = InvalidBlockNumber;

/*
 * At commit (or prepare) of a transaction that queued keys: tells the worker
 * the lowest block they went to.  Inserts usually go to the end of the
 * queue, past where the worker stopped reading; after a vacuum they can
 * land in space freed before it, and the worker starts its next pass there
 * instead of rereading the dead start of the queue every round (worker.c).
 * No ERROR: called from the commit callback.
 */
void
cs_queue_committed(void)
{
	uint32		cur;

	if (cs_shared == NULL || xact_low_block == InvalidBlockNumber)
		return;
	cur = pg_atomic_read_u32(&cs_shared->queue_low_block);
	while (xact_low_block < cur &&
		   !pg_atomic_compare_exchange_u32(&cs_shared->queue_low_block, &cur, xact_low_block))
		;
	xact_low_block = InvalidBlockNumber;
}

/* At abort: the queued keys are gone with the transaction. */
void
cs_queue_aborted(void)
{
	xact_low_block = InvalidBlockNumber;
}

/*
 * In the worker: returns the lowest queue block written by a commit since
 * the last call (InvalidBlockNumber: none), and forgets it.
 */
BlockNumber
cs_queue_take_low_block(void)
{
	return pg_atomic_exchange_u32(&cs_shared->queue_low_block, InvalidBlockNumber);
}

/*
 * Appends the batch to cachesync.queue, then empties it.  A plain heap
 * insert per key: the queue has no index, trigger or rule, so no executor
 * is needed, and no privilege is checked (writers need none on it).
 */
void
cs_queue_insert(CsQueueBatch *b)
{
	Relation	rel;
	TimestampTz now = GetCurrentTimestamp();

	if (b->n == 0)
		return;
	rel = open_own_table("queue");
	for (int i = 0; i < b->n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		HeapTuple	tup;

		values[0] = ObjectIdGetDatum(b->relids[i]);
		nulls[1] = (b->keys[i] == NULL);
		values[1] = nulls[1] ? (Datum) 0 : CStringGetTextDatum(b->keys[i]);
		values[2] = TimestampTzGetDatum(now);
		tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
		simple_heap_insert(rel, tup);
		xact_low_block = Min(xact_low_block, ItemPointerGetBlockNumber(&tup->t_self));
		heap_freetuple(tup);
	}
	table_close(rel, NoLock);
	b->n = 0;
}

/*
 * Deletes the rows at the given ctids from cachesync.<table> (the queue or
 * the change outbox: the worker, once it has shipped them).  Tuple by
 * tuple rather than with DELETE ... WHERE ctid = ANY($1): for a long array
 * the planner prefers a sequential scan of the whole table, which made
 * every batch cost as much as the backlog.  Only the worker deletes these
 * rows and nobody updates them, so simple_heap_delete cannot meet a
 * concurrent change.
 */
void
cs_delete_tids(const char *table, ItemPointerData *tids, int n)
{
	Relation	rel;

	if (n == 0)
		return;
	rel = open_own_table(table);
	for (int i = 0; i < n; i++)
		simple_heap_delete(rel, &tids[i]);
	table_close(rel, NoLock);
}
