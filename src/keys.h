/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  Redis key layout: <cachesync.key_prefix><table prefix><k1>[:<k2>...]
 *	  with ':' and '\' inside a key value escaped by '\'.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_KEYS_H
#define CACHESYNC_KEYS_H

#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/hsearch.h"

#include "registry.h"

/* where cachesync keeps anything that is not a row or a stream */
#define CS_INTERNAL_PREFIX "__cachesync:"

extern void cs_key_start(StringInfo buf, const CsTable *t);
extern void cs_key_append_part(StringInfo buf, const char *value, int len);
extern char *cs_key_from_texts(const CsTable *t, char **values);
extern char *cs_key_glob_pattern(const char *prefix);
extern char *cs_version_key(const char *key);
extern char *cs_intent_key(uint64 generation, int slot);
extern char *cs_wb_meta_key(void);
extern char *cs_wb_stream(const CsTable *t, bool dlq);
extern char *cs_wb_guard_key(const char *key);
extern char *cs_invalidate_channel(Oid relid);
extern char *cs_invalidate_all_channel(void);
extern char *cs_changes_stream(const CsTable *t);
extern HTAB *cs_keyset_create(const char *name, long nelem, Size entrysize,
							   MemoryContext cxt);
extern char **cs_key_values_from_array(const CsTable *t, ArrayType *arr);

#endif							/* CACHESYNC_KEYS_H */
