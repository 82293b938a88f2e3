/*-------------------------------------------------------------------------
 *
 * redis.h
 *	  The Redis connection module: the only part of cachesync that talks to
 *	  hiredis.  Everything else builds pipelines of argument vectors and
 *	  reads back palloc'd replies.
 *
 * Each process has one connection, opened lazily from the cachesync.redis_*
 * settings, reused while those settings stay the same, and dropped after any
 * failure so the next call reconnects.  Every wait is on the socket together
 * with the process latch, so query cancel, SIGTERM and postmaster death
 * interrupt it, and no wait lasts longer than the configured timeouts.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_REDIS_H
#define CACHESYNC_REDIS_H

#include "lib/stringinfo.h"

typedef enum CsReplyType
{
	CS_REPLY_STRING = 1,
	CS_REPLY_ARRAY,
	CS_REPLY_INTEGER,
	CS_REPLY_NIL,
	CS_REPLY_STATUS,
	CS_REPLY_ERROR
} CsReplyType;

/* A reply copied into palloc'd memory of the caller's memory context. */
typedef struct CsReply
{
	CsReplyType type;
	long long	integer;		/* CS_REPLY_INTEGER */
	char	   *str;			/* STRING, STATUS, ERROR: NUL-terminated */
	size_t		len;
	size_t		nelem;			/* CS_REPLY_ARRAY */
	struct CsReply **elem;
} CsReply;

/*
 * Commands queued to be sent in one write: RESP-encoded argument vectors.
 * buf holds the commands not sent yet; ncommands counts every command
 * appended, sent or not, whose reply the run reads.
 */
typedef struct CsPipeline
{
	StringInfoData buf;
	int			ncommands;
	int64		sent;			/* bytes sent by cs_pipeline_flush (no longer in buf) */
	bool		failed;			/* a flush failed: the run fails too */
	uint64		id;				/* tells pipelines apart (redis.c) */
} CsPipeline;

extern CsPipeline *cs_pipeline_create(void);
extern void cs_pipeline_reset(CsPipeline *p);
extern void cs_pipeline_append_pipeline(CsPipeline *p, const CsPipeline *src);
extern void cs_pipeline_append(CsPipeline *p, int argc,
							   const char *const *argv, const size_t *argvlen);
extern void cs_pipeline_append_strs(CsPipeline *p, int argc,
									const char *const *argv);

extern void cs_pipeline_flush(CsPipeline *p);
extern uint64 cs_redis_connection_count(void);
extern bool cs_redis_try_run(CsPipeline *p, CsReply ***replies);
extern bool cs_redis_try_run_blocking(CsPipeline *p, CsReply ***replies,
									  int block_ms);
extern bool cs_redis_send_unread(CsPipeline *p);
extern CsReply **cs_redis_run(CsPipeline *p);
extern CsReply *cs_redis_command(int argc, const char *const *argv,
								 const size_t *argvlen);
extern CsReply *cs_redis_command_strs(int argc, const char *const *argv);
extern void cs_redis_raise_failure(void) pg_attribute_noreturn();
extern void cs_redis_check_reply(const CsReply *reply, const char *what);

extern const char *cs_redis_last_error(void);
extern const char *cs_redis_server(void);
extern void cs_redis_disconnect(void);

#endif							/* CACHESYNC_REDIS_H */
