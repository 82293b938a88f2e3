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
extern int	cs_changes_ship(void);
extern bool cs_changes_flowing(void);
extern int	cs_changes_poll_ms(void);

#endif							/* CACHESYNC_EVENTS_H */
