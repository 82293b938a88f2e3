/*-------------------------------------------------------------------------
 *
 * writeback.h
 *	  Write-back: the worker that applies write-back streams to tables.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_WRITEBACK_H
#define CACHESYNC_WRITEBACK_H

extern void cs_writeback_register(void);

#endif							/* CACHESYNC_WRITEBACK_H */
