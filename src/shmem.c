/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  Shared memory: the version clock, published versions, the worker's
 *	  latch and the statistics hash.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "cachesync.h"
#include "hotkeys.h"
#include "shmem.h"
#include "stats.h"

CsShared   *cs_shared = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Returns the number of per-process slots: every possible pgprocno. */
static int
slot_count(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS;
}

/* Returns the size of CsShared. */
static Size
shared_size(void)
{
	return add_size(offsetof(CsShared, slots),
					mul_size(slot_count(), sizeof(CsSlot)));
}

/* Asks for the shared memory and the lock cachesync needs. */
static void
cs_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(add_size(add_size(shared_size(), cs_stats_shmem_size()),
									cs_hot_shmem_size()));
	RequestNamedLWLockTranche("cachesync", 1);
	cs_hot_shmem_request();
}

/* Creates or attaches to the shared state. */
static void
cs_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	cs_shared = ShmemInitStruct("cachesync", shared_size(), &found);
	if (!found)
	{
		cs_shared->lock = &(GetNamedLWLockTranche("cachesync"))->lock;
		pg_atomic_init_u64(&cs_shared->clock, 0);
		/* a fresh generation after every start and crash restart */
		cs_shared->generation = (uint64) GetCurrentTimestamp();
		cs_shared->worker_pid = 0;
		cs_shared->worker_latch = NULL;
		pg_atomic_init_u64(&cs_shared->redis_down_until, 0);
		pg_atomic_init_u32(&cs_shared->changes_pending, 0);
		pg_atomic_init_u32(&cs_shared->queue_low_block, InvalidBlockNumber);
		cs_shared->nslots = slot_count();
		for (int i = 0; i < cs_shared->nslots; i++)
		{
			pg_atomic_init_u64(&cs_shared->slots[i].published, 0);
			pg_atomic_init_u32(&cs_shared->slots[i].heal, 0);
		}
	}
	cs_stats_shmem_init();
	cs_hot_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/* Installs the shared memory hooks; called from _PG_init while preloading. */
void
cs_shmem_init_hooks(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = cs_shmem_request;
#else
	cs_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = cs_shmem_startup;
}

/* Throws unless shared memory is there (the library was preloaded). */
void
cs_shmem_require(void)
{
	cachesync_require_preload();
	if (cs_shared == NULL)
		elog(ERROR, "cachesync shared memory is not initialized");
}

/* Wakes the background worker, if it runs. */
void
cs_wake_worker(void)
{
	Latch	   *latch;

	if (cs_shared == NULL)
		return;
	LWLockAcquire(cs_shared->lock, LW_SHARED);
	latch = cs_shared->worker_latch;
	if (latch)
		SetLatch(latch);
	LWLockRelease(cs_shared->lock);
}

/*
 * Asks the worker to re-sync the keys in this process's intent set: a push
 * or invalidation could not be finished or undone.  Safe in commit and
 * abort callbacks (no ERROR, no allocation).
 */
void
cs_request_heal(void)
{
	if (cs_shared == NULL || MyProc == NULL)
		return;
	pg_atomic_fetch_add_u32(&cs_shared->slots[MyProc->pgprocno].heal, 1);
	cs_wake_worker();
}

/* how long writers skip Redis after a failure, in milliseconds */
#define CS_BREAKER_MS 1000

/*
 * Notes that Redis failed: for a moment, writers in queue mode send their
 * changes straight to the queue instead of each waiting for a timeout.
 */
void
cs_note_redis_down(void)
{
	if (cs_shared != NULL)
		pg_atomic_write_u64(&cs_shared->redis_down_until,
							(uint64) TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																 CS_BREAKER_MS));
}

/* Notes that Redis answered: writers try it again. */
void
cs_note_redis_up(void)
{
	if (cs_shared != NULL && pg_atomic_read_u64(&cs_shared->redis_down_until) != 0)
		pg_atomic_write_u64(&cs_shared->redis_down_until, 0);
}

/* Returns true while a recent failure says Redis is unreachable. */
bool
cs_redis_known_down(void)
{
	return cs_shared != NULL &&
		(TimestampTz) pg_atomic_read_u64(&cs_shared->redis_down_until) > GetCurrentTimestamp();
}
