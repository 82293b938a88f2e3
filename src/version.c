/*-------------------------------------------------------------------------
 *
 * version.c
 *	  The version clock that orders every write to the cache.
 *
 * Versions come from one hybrid clock in shared memory: max(last + 1, now in
 * microseconds), so they grow within a run and, through the wall clock,
 * across restarts.  Redis keeps a row's version beside it (a version key
 * under __cachesync:v:) and a Redis function stores a value, or a deletion
 * tombstone, only when its version is newer.
 *
 * There are two kinds of cache writers:
 *
 * - Pushers send what their own transaction wrote: write_through at
 *   pre-commit, write_around's invalidation after commit.  Two transactions
 *   that change the same row are serialised by its row lock, so the later
 *   one draws its version after the earlier one committed: later commit,
 *   higher version.
 *
 * - Populators read committed rows and store them: the worker replaying the
 *   queue, healing, read-through, reload, prefill.  A populator draws its
 *   version BEFORE taking the snapshot it reads with, so any transaction that
 *   commits after that snapshot draws a higher version and wins.
 *
 * One gap remains: a write_through pusher draws its version at pre-commit,
 * before its commit becomes visible.  A populator drawing later but taking
 * its snapshot before that commit would read the old row with a higher
 * version.  So a pusher first publishes a lower bound of its version in its
 * shared slot, then draws; a populator draws, then waits until no slot holds
 * a bound below its version, and only then takes its snapshot.  Either the
 * pusher published before the populator drew (and has committed or undone
 * its push by the time the populator reads), or it published after (and so
 * drew a higher version).  The slot is cleared once the commit is visible
 * or the abort undone.  Cost: one atomic write per pushing transaction; a
 * scan of MaxBackends slots per populating batch, which waits only while a
 * commit that began earlier is still in flight (usually well under a
 * millisecond), and gives up after cachesync.command_timeout.
 *
 * (An earlier design lowered the populator's version below every published
 * bound instead of waiting.  With a commit held in flight for long, e.g. by
 * synchronous replication, every populator then wrote with the same lowered
 * version and Redis refused the newer rows as not newer.)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/timestamp.h"

#include "cachesync.h"
#include "shmem.h"
#include "version.h"

/* Returns a version higher than every one handed out before. */
uint64
cs_version_next(void)
{
	uint64		now = (uint64) Max(GetCurrentTimestamp(), 1);
	uint64		old = pg_atomic_read_u64(&cs_shared->clock);

	for (;;)
	{
		uint64		next = Max(old + 1, now);

		if (pg_atomic_compare_exchange_u64(&cs_shared->clock, &old, next))
			return next;
	}
}

/* Returns this process's slot. */
static pg_atomic_uint64 *
my_slot(void)
{
	return &cs_shared->slots[MyProc->pgprocno].published;
}

/*
 * Returns the version a pusher writes with, after publishing a lower bound
 * of it.  cs_version_end_push() must follow once the commit is visible or
 * the abort undone.
 */
uint64
cs_version_begin_push(void)
{
	uint64		bound = Max(pg_atomic_read_u64(&cs_shared->clock), 1);
	uint64		held = pg_atomic_read_u64(my_slot());

	/*
	 * A second draw before the first push ended (the write-back worker's
	 * settle, then a push of another table at its commit) keeps the lower
	 * bound: the first version still needs it.  Only this process writes
	 * its slot.
	 */
	if (held != 0 && held < bound)
		bound = held;
	pg_atomic_write_u64(my_slot(), bound);
	pg_memory_barrier();
	return cs_version_next();
}

/* Withdraws this process's published bound. */
void
cs_version_end_push(void)
{
	if (cs_shared != NULL && MyProc != NULL)
		pg_atomic_write_u64(my_slot(), 0);
}

/*
 * Returns the version a populator writes with.  Call it before taking the
 * snapshot whose rows will be written: it returns once every push that
 * began before it is committed or undone.  Throws when one stays in flight
 * longer than cachesync.command_timeout.
 */
uint64
cs_version_for_read(void)
{
	uint64		v = cs_version_next();
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   cachesync_command_timeout);

	pg_memory_barrier();
	for (int i = 0; i < cs_shared->nslots; i++)
	{
		for (;;)
		{
			uint64		bound = pg_atomic_read_u64(&cs_shared->slots[i].published);

			if (bound == 0 || bound >= v || (MyProc && i == MyProc->pgprocno))
				break;
			if (GetCurrentTimestamp() > deadline)
				ereport(ERROR,
						(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
						 errmsg("a commit that writes to Redis stayed in flight for more than %d ms",
								cachesync_command_timeout),
						 errdetail("Filling the cache now could store a row older than that commit's."),
						 errhint("Try again; check for commits waiting on Redis or on synchronous replication.")));
			CHECK_FOR_INTERRUPTS();
			pg_usleep(100L);
		}
	}
	return v;
}
