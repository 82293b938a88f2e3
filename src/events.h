/*-------------------------------------------------------------------------
 *
 * events.h
 *	  Change events for other consumers: invalidation messages (Pub/Sub)
 *	  and the change stream (Redis Streams, fed from an outbox table).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_EVENTS_H
#define CACHESYNC_EVENTS_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "nodes/pg_list.h"

#include "redis.h"
#include "registry.h"

extern void cs_notify_append(CsPipeline *p, const char *channel, const char *key);
extern void cs_notify_keys(Oid relid, List *keys, bool truncated);
extern void cs_changes_record(CsTable *t, const char *op, const char *key,
							  HeapTuple tuple, TupleDesc desc);
extern void cs_changes_committed(void);
extern bool cs_changes_take_pending(void);
/* what cs_changes_ship() did */
typedef enum CsChangesShipped
{
	CS_CHANGES_FAILED = -1,		/* Redis failed: roll back, nothing is lost */
	CS_CHANGES_NONE = 0,		/* the outbox was empty, or Redis refused */
	CS_CHANGES_ALL,				/* shipped every entry the read could see */
	CS_CHANGES_MORE				/* shipped a full batch: more may wait */
} CsChangesShipped;

extern CsChangesShipped cs_changes_ship(void);
extern bool cs_changes_flowing(void);
extern int	cs_changes_poll_ms(void);

#endif							/* CACHESYNC_EVENTS_H */
