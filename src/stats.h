/*-------------------------------------------------------------------------
 *
 * stats.h
 *	  Per-table counters in shared memory, shown by cachesync.stats.
 *	  Counters live until the server restarts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_STATS_H
#define CACHESYNC_STATS_H

typedef enum CsStat
{
	CS_STAT_PUSHED,
	CS_STAT_INVALIDATED,
	CS_STAT_ERRORS,
	CS_STAT_HITS,
	CS_STAT_MISSES,
	CS_STAT_WB_APPLIED,
	CS_STAT_WB_DEAD,
	CS_STAT_QUEUED,
	CS_STAT_WB_PENDING,			/* gauge: write-back entries not yet applied */
	CS_STAT_WB_OLDEST_MS,		/* gauge: Unix ms of the oldest of them, 0: none */
	CS_STAT_PUBLISHED,			/* invalidation messages published */
	CS_STAT_PUBLISH_LOST,		/* invalidation messages lost to a Redis failure */
	CS_STAT_CHANGES,			/* change stream entries appended */
	CS_NUM_STATS
} CsStat;

extern Size cs_stats_shmem_size(void);
extern void cs_stats_shmem_init(void);
extern void cs_stats_add(Oid relid, CsStat stat, int64 n);
extern void cs_stats_set(Oid relid, CsStat stat, int64 value);
extern void cs_stats_error(Oid relid, const char *message);
extern void cs_stats_reloaded(Oid relid);
extern void cs_stats_validation(Oid relid, int64 job);

#endif							/* CACHESYNC_STATS_H */
