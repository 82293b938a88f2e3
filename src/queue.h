/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  The durable queue (cachesync.queue): keys whose cache entry the worker
 *	  must bring in line with the table.  Rows are added inside the writer's
 *	  transaction, so they commit or vanish with it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_QUEUE_H
#define CACHESYNC_QUEUE_H

#include "storage/itemptr.h"

/* keys gathered for one INSERT into the queue */
typedef struct CsQueueBatch
{
	int			n;
	int			cap;
	Oid		   *relids;
	char	  **keys;			/* NULL: every key of the table (TRUNCATE) */
} CsQueueBatch;

extern void cs_queue_batch_add(CsQueueBatch *b, Oid relid, const char *key);
extern void cs_queue_insert(CsQueueBatch *b);
extern void cs_queue_committed(void);
extern void cs_queue_aborted(void);
extern BlockNumber cs_queue_take_low_block(void);
extern void cs_delete_tids(const char *table, ItemPointerData *tids, int n);

#endif							/* CACHESYNC_QUEUE_H */
