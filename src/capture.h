/*-------------------------------------------------------------------------
 *
 * capture.h
 *	  Change capture (row triggers and transaction callbacks) and the
 *	  fenced cache writes every writer shares.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_CAPTURE_H
#define CACHESYNC_CAPTURE_H

#include "utils/relcache.h"

#include "redis.h"
#include "registry.h"
#include "rowformat.h"

extern Oid	cs_capture_skip_relid;

extern void cs_capture_install(Oid relid);
extern void cs_capture_remove(Oid relid);

extern void cs_append_fenced_write(CsPipeline *p, const char *key, CsValue *value,
								   CsFormat format, int64 ttl_ms, uint64 version);
extern void cs_append_guarded_write(CsPipeline *p, const char *key,
									const char *guard_key, const char *guard_id,
									CsValue *value, CsFormat format,
									int64 ttl_ms, uint64 version);
extern bool cs_replies_ok(CsReply **replies, int n, const char **error);

#endif							/* CACHESYNC_CAPTURE_H */
