/*-------------------------------------------------------------------------
 *
 * rowformat.h
 *	  A row's Redis key and cached value, as the table's registration asks:
 *	  json (what row_to_json writes for the cached columns) or hash (one
 *	  field per non-NULL cached column, in text output form).
 *
 * Tuples are in the registered table's row type (partition rows are
 * converted first by the caller).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_ROWFORMAT_H
#define CACHESYNC_ROWFORMAT_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "lib/stringinfo.h"

#include "registry.h"

/* a value as FCALL arguments: one JSON text, or field/value pairs */
typedef struct CsValue
{
	int			nargs;
	char	  **args;
	size_t	   *lens;
} CsValue;

extern char *cs_row_key(CsTable *t, HeapTuple tuple, TupleDesc desc);
extern CsValue *cs_row_value(CsTable *t, HeapTuple tuple, TupleDesc desc);
extern text *cs_row_json(CsTable *t, HeapTuple tuple, TupleDesc desc);
extern bool cs_row_cached_equal(CsTable *t, HeapTuple a, HeapTuple b,
								TupleDesc desc);
extern char **cs_key_parse(CsTable *t, const char *key, size_t len);

#endif							/* CACHESYNC_ROWFORMAT_H */
