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
#define CS_FUNCTIONS_VERSION "3wb1"

extern const char cs_functions_code[];

#endif							/* CACHESYNC_FUNCTIONS_H */
