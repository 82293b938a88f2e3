/*-------------------------------------------------------------------------
 *
 * sync.h
 *	  Bringing cache entries in line with committed rows (populator path).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_SYNC_H
#define CACHESYNC_SYNC_H

#include "access/htup_details.h"
#include "nodes/pg_list.h"
#include "utils/hsearch.h"
#include "utils/resowner.h"

#include "redis.h"
#include "registry.h"
#include "rowformat.h"

typedef struct CsSyncResult
{
	int64		pushed;			/* rows written */
	int64		removed;		/* keys whose row is gone */
	uint64		first_version;	/* cs_sync_table: the first version it drew */
} CsSyncResult;

/* receives each row a read found: its Redis key and cached value */
typedef void (*CsRowFn) (const char *key, CsValue *value, void *arg);

extern CsPipeline *cs_sync_read(CsTable *t, char ***values, int n, uint64 version,
								CsRowFn each, void *arg);
extern bool cs_sync_store(CsPipeline *p);
/* a guarded key: written only while its write-back guard holds id */
typedef struct CsSyncGuard
{
	char	   *key;			/* hash key */
	char	   *id;
} CsSyncGuard;

extern bool cs_sync_keys_guarded(CsTable *t, List *keys, HTAB *guards,
								 uint64 version, CsSyncResult *result);
/* Points tuple at hdr, a whole-row value of relation relid. */
static inline void
cs_row_tuple(HeapTupleData *tuple, HeapTupleHeader hdr, Oid relid)
{
	tuple->t_len = HeapTupleHeaderGetDatumLength(hdr);
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_tableOid = relid;
	tuple->t_data = hdr;
}

extern ErrorData *cs_subxact_failed(MemoryContext cxt, MemoryContext old,
									ResourceOwner owner,
									bool (*transient) (int sqlerrcode));
extern void cs_sync_append_settle(CsTable *t, CsPipeline *p, Datum *rows, int nrows,
								  List *gone, HTAB *guards, uint64 version, HTAB *done,
								  List **unguarded);

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
extern bool cs_sync_orphans(CsTable *t, uint64 min_version, CsSyncResult *result);
extern bool cs_sync_prefix(CsTable *t, uint64 version, CsSyncResult *result);
extern bool cs_sync_table(CsTable *t, CsSyncResult *result);
extern void cs_require_select(Oid relid);
extern void cs_require_no_writes(const char *fn);
extern bool cs_error_is_transient(int sqlerrcode);
extern bool cs_is_stream_key(CsTable *t, const char *key);

#endif							/* CACHESYNC_SYNC_H */
