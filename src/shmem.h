/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  State shared by every backend and the worker.
 *
 * Locking: the version clock and the per-backend published versions are
 * atomics; the rest of CsShared is under CsShared->lock.  Statistics live in
 * their own hash (stats.c) under the same lock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_SHMEM_H
#define CACHESYNC_SHMEM_H

#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

/* what each process (by pgprocno) shares */
typedef struct CsSlot
{
	pg_atomic_uint64 published; /* lower bound of a version being pushed, 0 when idle */
	pg_atomic_uint32 heal;		/* bumped when its intent set needs the worker */
} CsSlot;

typedef struct CsShared
{
	LWLock	   *lock;
	pg_atomic_uint64 clock;		/* last version handed out (version.c) */
	uint64		generation;		/* changes at every (crash) restart */
	pid_t		worker_pid;
	Latch	   *worker_latch;	/* set to wake the worker */
	pg_atomic_uint64 redis_down_until;	/* TimestampTz: skip pushes until then */
	pg_atomic_uint32 changes_pending;	/* commits wrote change outbox rows */
	pg_atomic_uint32 queue_low_block;	/* lowest queue block written by a commit
										 * since the worker last looked */
	int			nslots;
	CsSlot		slots[FLEXIBLE_ARRAY_MEMBER];	/* by pgprocno */
} CsShared;

extern CsShared *cs_shared;

extern void cs_shmem_init_hooks(void);
extern void cs_shmem_require(void);
extern void cs_wake_worker(void);
extern void cs_request_heal(void);
extern void cs_note_redis_down(void);
extern void cs_note_redis_up(void);
extern bool cs_redis_known_down(void);

#endif							/* CACHESYNC_SHMEM_H */
