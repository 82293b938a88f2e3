/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The cachesync background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_WORKER_H
#define CACHESYNC_WORKER_H

extern void cs_register_bgworker(const char *function_name, const char *name);
extern void cs_worker_register(void);

#endif							/* CACHESYNC_WORKER_H */
