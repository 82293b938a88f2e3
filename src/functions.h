/*-------------------------------------------------------------------------
 *
 * functions.h
 *	  The Redis Function library "cachesync" that every cache write goes
 *	  through.  The Redis module loads it on connect when it is missing or
 *	  of another version.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_FUNCTIONS_H
#define CACHESYNC_FUNCTIONS_H

/* bump whenever the library's code changes */
#define CS_FUNCTIONS_VERSION "5"

/*
 * The longest data (bytes of JSON) cachesync_upsert/delete accept: the
 * write-back worker holds a whole batch of entries in memory.
 */
#define CS_WB_MAX_DATA 1048576

extern const char cs_functions_code[];

#endif							/* CACHESYNC_FUNCTIONS_H */
