/*-------------------------------------------------------------------------
 *
 * version.h
 *	  Version fencing: every cache write carries a commit-ordered version,
 *	  and Redis keeps a value only if its version is newer than the one
 *	  stored (see version.c for why the order holds).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_VERSION_H
#define CACHESYNC_VERSION_H

extern uint64 cs_version_next(void);
extern uint64 cs_version_begin_push(void);
extern void cs_version_end_push(void);
extern uint64 cs_version_for_read(void);

#endif							/* CACHESYNC_VERSION_H */
