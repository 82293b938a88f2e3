/*-------------------------------------------------------------------------
 *
 * cachesync.h
 *	  Declarations shared by every part of cachesync: settings, the
 *	  preload check and small version-compatibility shims.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_H
#define CACHESYNC_H

#include "postgres.h"

/* what write_through/write_around do when Redis is unreachable */
typedef enum CsOnRedisError
{
	CS_ON_ERROR_QUEUE,
	CS_ON_ERROR_ERROR
} CsOnRedisError;

/* settings (guc.c) */
extern char *cachesync_redis_host;
extern int	cachesync_redis_port;
extern char *cachesync_redis_username;
extern char *cachesync_redis_password;
extern int	cachesync_redis_db;
extern int	cachesync_connect_timeout;
extern int	cachesync_command_timeout;
extern char *cachesync_database;
extern char *cachesync_key_prefix;
extern int	cachesync_on_redis_error;
extern int	cachesync_batch_size;
extern bool cachesync_enabled;
extern int	cachesync_max_transaction_changes;
extern int	cachesync_tombstone_ttl;
extern int	cachesync_changes_maxlen;
extern bool cachesync_writeback_collapse;

extern void cachesync_define_gucs(void);

/* cachesync.c */
extern bool cachesync_preloaded;
extern void cachesync_require_preload(void);
extern Oid	cs_rel_owner(Oid relid);
extern void cs_ddl_init(void);
extern int	cs_pin_search_path(void);
extern void cs_unpin_search_path(int nest);

/* PostgreSQL 15 renamed EmitWarningsOnPlaceholders */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/* PostgreSQL 16 renamed the per-class ownership checks */
#if PG_VERSION_NUM >= 160000
#define cs_rel_ownercheck(relid, roleid) \
	object_ownercheck(RelationRelationId, (relid), (roleid))
#else
#define cs_rel_ownercheck(relid, roleid) pg_class_ownercheck((relid), (roleid))
#endif

#endif							/* CACHESYNC_H */
