/*-------------------------------------------------------------------------
 *
 * keyspace.h
 *	  Walking the keys under a prefix with SCAN, never KEYS.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_KEYSPACE_H
#define CACHESYNC_KEYSPACE_H

#include "nodes/pg_list.h"

extern bool cs_keyspace_scan(const char *prefix,
							 bool (*fn) (List *keys, void *arg), void *arg);
extern int64 cs_keyspace_unlink_prefix(const char *prefix);

#endif							/* CACHESYNC_KEYSPACE_H */
