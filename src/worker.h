/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  The cachesync background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_WORKER_H
#define CACHESYNC_WORKER_H

#include "executor/spi.h"

extern void cs_register_bgworker(const char *function_name, const char *name);
extern void cs_worker_register(void);
extern bool cs_worker_xact(bool (*fn) (void *arg), void *arg, const char *activity);
extern uint64 cs_worker_select(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes,
							   Datum *args);

#endif							/* CACHESYNC_WORKER_H */
