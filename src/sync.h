/*-------------------------------------------------------------------------
 *
 * sync.h
 *	  Bringing cache entries in line with committed rows (populator path).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_SYNC_H
#define CACHESYNC_SYNC_H

#include "nodes/pg_list.h"

#include "registry.h"

typedef struct CsSyncResult
{
	int64		pushed;			/* rows written */
	int64		removed;		/* keys whose row is gone */
} CsSyncResult;

extern bool cs_sync_keys(CsTable *t, List *keys, uint64 version, CsSyncResult *result);
extern bool cs_sync_prefix(CsTable *t, uint64 version, CsSyncResult *result);
extern bool cs_sync_table(CsTable *t, CsSyncResult *result);
extern void cs_require_select(Oid relid);

#endif							/* CACHESYNC_SYNC_H */
