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
extern bool cs_worker_xact(bool (*fn) (void *arg), void *arg, const char *activity);

#endif							/* CACHESYNC_WORKER_H */
