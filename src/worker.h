/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The cachesync background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_WORKER_H
#define CACHESYNC_WORKER_H

extern void cs_worker_register(void);

#endif							/* CACHESYNC_WORKER_H */
