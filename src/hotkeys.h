/*-------------------------------------------------------------------------
 *
 * hotkeys.h
 *	  Read frequency per key: an approximate top-k per table (space-saving)
 *	  in shared memory, fed by cachesync.get() and get_many(), kept across
 *	  restarts in a file (see hotkeys.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_HOTKEYS_H
#define CACHESYNC_HOTKEYS_H

#include "nodes/pg_list.h"

/* settings (guc.c) */
extern int	cachesync_hot_keys;
extern int	cachesync_hot_keys_tables;
extern bool cachesync_warmup;
extern int	cachesync_warmup_keys;
extern int	cachesync_debug_read_pause_lock;

extern Size cs_hot_shmem_size(void);
extern void cs_hot_shmem_request(void);
extern void cs_hot_shmem_init(void);
extern void cs_hot_observe(Oid relid, char **suffixes, int n);
extern void cs_hot_forget(Oid relid);
extern List *cs_hot_top(Oid relid, int n);
extern void cs_hot_persist_if_due(void);

/* warmup.c */
extern bool cs_warmup(void);

#endif							/* CACHESYNC_HOTKEYS_H */
