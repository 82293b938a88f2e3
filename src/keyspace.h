/*-------------------------------------------------------------------------
 *
 * keyspace.h
 *	  Walking the keys under a prefix with SCAN, never KEYS.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_KEYSPACE_H
#define CACHESYNC_KEYSPACE_H

extern int64 cs_keyspace_unlink_prefix(const char *prefix);

#endif							/* CACHESYNC_KEYSPACE_H */
