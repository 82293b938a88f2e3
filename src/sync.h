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

/* The user and search_path to restore after reading as a table's owner. */
typedef struct CsAsOwner
{
	Oid			userid;
	int			sec;
	int			nest;
} CsAsOwner;

extern void cs_become_owner(Oid relid, CsAsOwner *save);
extern void cs_stop_being_owner(CsAsOwner *save);
extern bool cs_sync_keys(CsTable *t, List *keys, uint64 version, CsSyncResult *result);
typedef void (*cs_sync_progress_hook_type) (CsTable *t, CsSyncResult *sofar);
extern PGDLLIMPORT cs_sync_progress_hook_type cs_sync_progress_hook;

extern List *cs_orphans_among(CsTable *t, List *keys);
extern bool cs_sync_orphans(CsTable *t, CsSyncResult *result);
extern bool cs_sync_prefix(CsTable *t, uint64 version, CsSyncResult *result);
extern bool cs_sync_table(CsTable *t, CsSyncResult *result);
extern void cs_require_select(Oid relid);

#endif							/* CACHESYNC_SYNC_H */
