/*-------------------------------------------------------------------------
 *
 * redis.c
 *	  The one place that talks to Redis (see redis.h for the contract).
 *
 * Commands are RESP-encoded into a palloc'd buffer by the caller's pipeline
 * and written to the non-blocking socket with send(); hiredis is used for
 * connecting and for parsing replies, which are copied into palloc'd
 * CsReply trees at once so no hiredis object outlives a call.
 *
 * Waits go through one WaitEventSet holding the latch, postmaster death and
 * the socket.  A latch wake-up runs CHECK_FOR_INTERRUPTS, so a cancel or
 * SIGTERM throws out of the wait; the PG_CATCH then drops the connection,
 * whose protocol state is unknown, and re-throws.  Inside commit and abort
 * callbacks interrupts are held, and only the timeouts bound the wait.
 *
 * Failures (cannot connect, timeout, connection lost, AUTH refused) are
 * reported by cs_redis_try_run() returning false with the message kept in
 * a static buffer until the next call; cs_redis_run() turns them into an
 * ERROR.  Error replies to individual commands are not failures: they come
 * back as CS_REPLY_ERROR replies for the caller to judge.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "cachesync.h"
#include "functions.h"
#include "redis.h"

typedef enum CsFailure
{
	CS_FAIL_NONE,
	CS_FAIL_CONNECT,
	CS_FAIL_AUTH,
	CS_FAIL_TIMEOUT,
	CS_FAIL_IO
} CsFailure;

/* the settings a connection was opened with */
typedef struct CsConnParams
{
	char	   *host;
	int			port;
	char	   *username;
	char	   *password;
	int			db;
} CsConnParams;

static redisContext *cs_ctx = NULL;
static WaitEventSet *cs_wes = NULL;
static int	cs_sock_pos = -1;
static uint32 cs_sock_events = 0;
static CsConnParams cs_params;

static CsFailure cs_failure = CS_FAIL_NONE;
static char cs_errbuf[256];
static char cs_server[MAXPGPATH + 16];

/* extra wait for the first reply of a blocking command (XREADGROUP BLOCK) */
static int	cs_block_ms = 0;
/*
 * The id of the pipeline partly sent by cs_pipeline_flush() whose replies
 * are still unread (0: none).  Any other use of the connection first drops
 * it, replies and all.
 */
static uint64 cs_inflight = 0;

/* connections opened by this process (cs_redis_connection_count) */
static uint64 cs_connections = 0;
static uint64 cs_last_pipeline_id = 0;

/* a hiredis reply being copied, freed by cs_redis_disconnect if palloc throws */
static void *cs_pending_reply = NULL;

/*
 * Replies to commands sent by cs_redis_send_unread() that nobody read yet.
 * They arrive first on the socket, so the next call reads and drops them
 * before it sends anything.
 */
static int	cs_unread = 0;

/* unread replies a connection may owe before a send waits for them */
#define CS_MAX_UNREAD 10000

/* Returns true when host names a Unix socket path. */
static bool
host_is_socket(const char *host)
{
	return host != NULL && host[0] == '/';
}

/* Returns "host:port" or the socket path of the configured server. */
const char *
cs_redis_server(void)
{
	if (host_is_socket(cachesync_redis_host))
		snprintf(cs_server, sizeof(cs_server), "%s", cachesync_redis_host);
	else
		snprintf(cs_server, sizeof(cs_server), "%s:%d",
				 cachesync_redis_host ? cachesync_redis_host : "",
				 cachesync_redis_port);
	return cs_server;
}

/* Returns the message of the last failure. */
const char *
cs_redis_last_error(void)
{
	return cs_errbuf;
}

/* Records a failure; always returns false for the caller to pass on. */
static bool
set_failure(CsFailure kind, const char *fmt,...) pg_attribute_printf(2, 3);

static bool
set_failure(CsFailure kind, const char *fmt,...)
{
	va_list		ap;

	cs_failure = kind;
	va_start(ap, fmt);
	vsnprintf(cs_errbuf, sizeof(cs_errbuf), fmt, ap);
	va_end(ap);
	return false;
}

/* Closes the connection, if any; the next call reconnects. */
void
cs_redis_disconnect(void)
{
	if (cs_wes != NULL)
		FreeWaitEventSet(cs_wes);
	cs_wes = NULL;
	cs_sock_pos = -1;
	if (cs_ctx != NULL)
		redisFree(cs_ctx);
	cs_ctx = NULL;
	cs_unread = 0;
	cs_inflight = 0;
	/* a reply an ERROR interrupted while it was being copied */
	if (cs_pending_reply != NULL)
		freeReplyObject(cs_pending_reply);
	cs_pending_reply = NULL;
}

/* Returns true when s1 and s2 hold the same text (NULL counts as ""). */
static bool
same_text(const char *s1, const char *s2)
{
	return strcmp(s1 ? s1 : "", s2 ? s2 : "") == 0;
}

/* Returns true when the settings still match those of the open connection. */
static bool
params_unchanged(void)
{
	return same_text(cs_params.host, cachesync_redis_host) &&
		cs_params.port == cachesync_redis_port &&
		same_text(cs_params.username, cachesync_redis_username) &&
		same_text(cs_params.password, cachesync_redis_password) &&
		cs_params.db == cachesync_redis_db;
}

/* Remembers the settings a new connection is opened with. */
static void
remember_params(void)
{
	if (cs_params.host)
		pfree(cs_params.host);
	if (cs_params.username)
		pfree(cs_params.username);
	if (cs_params.password)
		pfree(cs_params.password);
	cs_params.host = MemoryContextStrdup(TopMemoryContext,
										 cachesync_redis_host ? cachesync_redis_host : "");
	cs_params.username = MemoryContextStrdup(TopMemoryContext,
											 cachesync_redis_username ? cachesync_redis_username : "");
	cs_params.password = MemoryContextStrdup(TopMemoryContext,
											 cachesync_redis_password ? cachesync_redis_password : "");
	cs_params.port = cachesync_redis_port;
	cs_params.db = cachesync_redis_db;
}

/*
 * Returns true when an idle connection was closed by the server (Redis
 * restarted, client killed, idle timeout): reusing it would fail the next
 * command, so callers reconnect first.
 */
static bool
connection_is_stale(void)
{
	char		c;
	ssize_t		r = recv(cs_ctx->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	if (r < 0)
		return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
	return true;				/* EOF, or bytes nobody asked for */
}

/* Returns a deadline ms milliseconds from now. */
static TimestampTz
deadline_in(int ms)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);
}

/*
 * Waits until the socket is ready for events or the deadline passes.
 * Returns false on timeout.  Throws if an interrupt is pending.
 */
static bool
wait_socket(uint32 events, TimestampTz deadline, const char *what)
{
	for (;;)
	{
		WaitEvent	ev;
		long		timeout;
		int			rc;

		timeout = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (timeout <= 0)
			return set_failure(CS_FAIL_TIMEOUT, "no answer while %s", what);
		if (events != cs_sock_events)
		{
			ModifyWaitEvent(cs_wes, cs_sock_pos, events, NULL);
			cs_sock_events = events;
		}
		rc = WaitEventSetWait(cs_wes, timeout, &ev, 1, PG_WAIT_EXTENSION);
		if (rc == 0)
			continue;			/* timed out: the next round reports it */
		if (ev.events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		if (ev.events & events)
			return true;
	}
}

/* Builds the wait event set around the connection's socket. */
static void
create_wait_set(void)
{
	cs_wes = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(cs_wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(cs_wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	cs_sock_pos = AddWaitEventToSet(cs_wes, WL_SOCKET_WRITEABLE, cs_ctx->fd,
									NULL, NULL);
	cs_sock_events = WL_SOCKET_WRITEABLE;
}

/* Writes len bytes of buf to the socket.  Returns false on failure. */
static bool
send_all(const char *buf, size_t len)
{
	size_t		off = 0;
	TimestampTz deadline = deadline_in(cachesync_command_timeout);

	while (off < len)
	{
		ssize_t		w = send(cs_ctx->fd, buf + off, len - off, MSG_NOSIGNAL);

		if (w > 0)
		{
			off += w;
			deadline = deadline_in(cachesync_command_timeout);
		}
		else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		{
			if (!wait_socket(WL_SOCKET_WRITEABLE, deadline, "sending commands"))
				return false;
		}
		else
			return set_failure(CS_FAIL_IO, "could not send to Redis: %s",
							   strerror(errno));
	}
	return true;
}

/* Returns a palloc'd copy of a hiredis reply. */
static CsReply *
copy_reply(const redisReply *r)
{
	CsReply    *c = palloc0(sizeof(CsReply));

	c->type = (CsReplyType) r->type;
	switch (r->type)
	{
		case REDIS_REPLY_STRING:
		case REDIS_REPLY_STATUS:
		case REDIS_REPLY_ERROR:
			c->len = r->len;
			c->str = palloc(r->len + 1);
			memcpy(c->str, r->str, r->len);
			c->str[r->len] = '\0';
			break;
		case REDIS_REPLY_INTEGER:
			c->integer = r->integer;
			break;
		case REDIS_REPLY_ARRAY:
			c->nelem = r->elements;
			c->elem = palloc(sizeof(CsReply *) * Max(r->elements, 1));
			for (size_t i = 0; i < r->elements; i++)
				c->elem[i] = copy_reply(r->element[i]);
			break;
		default:
			c->type = CS_REPLY_NIL;
			break;
	}
	return c;
}

/*
 * Reads n replies into out[], or drops them when out is NULL.  Returns
 * false on failure.
 */
static bool
read_replies(int n, CsReply **out)
{
	TimestampTz deadline = deadline_in(cachesync_command_timeout + cs_block_ms);

	for (int i = 0; i < n; i++)
	{
		for (;;)
		{
			void	   *r = NULL;

			if (redisGetReplyFromReader(cs_ctx, &r) != REDIS_OK)
				return set_failure(CS_FAIL_IO, "could not parse a Redis reply: %s",
								   cs_ctx->errstr);
			if (r != NULL)
			{
				cs_pending_reply = r;
				if (out != NULL)
					out[i] = copy_reply((redisReply *) r);
				cs_pending_reply = NULL;
				freeReplyObject(r);
				break;
			}
			if (!wait_socket(WL_SOCKET_READABLE, deadline, "waiting for replies"))
				return false;
			if (redisBufferRead(cs_ctx) != REDIS_OK)
				return set_failure(CS_FAIL_IO, "%s", cs_ctx->errstr);
			deadline = deadline_in(cachesync_command_timeout);
		}
	}
	return true;
}

/* Sends len bytes holding n commands and reads their n replies. */
static bool
roundtrip(const char *buf, size_t len, int n, CsReply **out)
{
	return send_all(buf, len) && read_replies(n, out);
}

/* Opens the TCP or Unix socket connection and waits for it to complete. */
static bool
open_socket(void)
{
	TimestampTz deadline = deadline_in(cachesync_connect_timeout);
	int			soerr = 0;
	socklen_t	soerrlen = sizeof(soerr);

	if (host_is_socket(cachesync_redis_host))
		cs_ctx = redisConnectUnixNonBlock(cachesync_redis_host);
	else
		cs_ctx = redisConnectNonBlock(cachesync_redis_host, cachesync_redis_port);
	if (cs_ctx == NULL)
		return set_failure(CS_FAIL_CONNECT, "out of memory");
	if (cs_ctx->err)
		return set_failure(CS_FAIL_CONNECT, "%s", cs_ctx->errstr);

	create_wait_set();
	if (!wait_socket(WL_SOCKET_WRITEABLE, deadline, "connecting"))
		return set_failure(CS_FAIL_CONNECT,
						   "connection not established within %d ms",
						   cachesync_connect_timeout);
	if (getsockopt(cs_ctx->fd, SOL_SOCKET, SO_ERROR, &soerr, &soerrlen) < 0)
		soerr = errno;
	if (soerr != 0)
		return set_failure(CS_FAIL_CONNECT, "%s", strerror(soerr));
	if (!host_is_socket(cachesync_redis_host))
		redisEnableKeepAlive(cs_ctx);
	return true;
}

/*
 * Sends AUTH and SELECT as the settings ask, and asks for the version of
 * the cachesync function library.  The password travels in the command
 * only; messages carry Redis's reply text, which never echoes it.
 * Returns false on failure; *lib_ok tells whether the library is current.
 */
static bool
handshake(bool *lib_ok)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **replies;
	CsReply    *lib;
	bool		ok;

	if (cachesync_redis_password && cachesync_redis_password[0])
	{
		if (cachesync_redis_username && cachesync_redis_username[0])
			cs_pipeline_append_strs(p, 3, (const char *[]) {"AUTH",
						cachesync_redis_username, cachesync_redis_password});
		else
			cs_pipeline_append_strs(p, 2, (const char *[]) {"AUTH",
						cachesync_redis_password});
	}
	if (cachesync_redis_db != 0)
	{
		char		db[16];

		snprintf(db, sizeof(db), "%d", cachesync_redis_db);
		cs_pipeline_append_strs(p, 2, (const char *[]) {"SELECT", db});
	}
	cs_pipeline_append_strs(p, 3, (const char *[]) {"FCALL", "cachesync_version", "0"});

	replies = palloc0(sizeof(CsReply *) * p->ncommands);
	ok = roundtrip(p->buf.data, p->buf.len, p->ncommands, replies);
	/* the buffer held the password: wipe it before it is freed */
	memset(p->buf.data, 0, p->buf.len);
	if (!ok)
		return false;
	for (int i = 0; i < p->ncommands - 1; i++)
	{
		if (replies[i]->type == CS_REPLY_ERROR)
			return set_failure(CS_FAIL_AUTH, "%s", replies[i]->str);
	}
	lib = replies[p->ncommands - 1];
	*lib_ok = (lib->type == CS_REPLY_STRING &&
			   strcmp(lib->str, CS_FUNCTIONS_VERSION) == 0);
	return true;
}

/* Loads (or replaces) the cachesync function library. */
static bool
load_functions(void)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply    *reply;

	cs_pipeline_append_strs(p, 4, (const char *[]) {"FUNCTION", "LOAD", "REPLACE",
							cs_functions_code});
	if (!roundtrip(p->buf.data, p->buf.len, 1, &reply))
		return false;
	if (reply->type == CS_REPLY_ERROR)
		return set_failure(CS_FAIL_AUTH, "could not load the cachesync function library: %s",
						   reply->str);
	return true;
}

/*
 * Returns how many connections this process has opened: a caller that
 * checks something once per connection compares it with what it saw.
 */
uint64
cs_redis_connection_count(void)
{
	return cs_connections;
}

/* Opens a connection if none is usable.  Returns false on failure. */
static bool
ensure_connected(void)
{
	bool		lib_ok = false;

	/* the replies still owed come first; a connection that lost them is dropped */
	if (cs_ctx != NULL && cs_unread > 0 && !read_replies(cs_unread, NULL))
		cs_redis_disconnect();
	cs_unread = 0;
	if (cs_ctx != NULL && (!params_unchanged() || connection_is_stale()))
		cs_redis_disconnect();
	if (cs_ctx != NULL)
		return true;

	remember_params();
	if (open_socket() && handshake(&lib_ok) && (lib_ok || load_functions()))
	{
		cs_connections++;
		return true;
	}
	cs_redis_disconnect();
	return false;
}

/*
 * Sends every command of the pipeline in one write and reads every reply.
 * Returns true with *replies set (an array of p->ncommands palloc'd replies,
 * error replies included), or false with the failure recorded for
 * cs_redis_last_error().  Throws only for interrupts and out-of-memory,
 * dropping the connection first.
 */
bool
cs_redis_try_run(CsPipeline *p, CsReply ***replies)
{
	CsReply   **out = palloc0(sizeof(CsReply *) * Max(p->ncommands, 1));
	bool		ok = false;

	if (p->failed)
	{
		pfree(out);
		return false;			/* a flush failed and said why */
	}
	cs_failure = CS_FAIL_NONE;
	cs_errbuf[0] = '\0';
	if (cs_inflight != 0 && cs_inflight != p->id)
		cs_redis_disconnect();	/* another pipeline's replies are unread */
	PG_TRY();
	{
		/* after a flush, only the connection that got the first part will do */
		if (p->sent > 0 && cs_inflight != p->id)
			ok = set_failure(CS_FAIL_IO, "the connection was lost while sending commands");
		else
			ok = (p->sent > 0 || ensure_connected()) &&
				roundtrip(p->buf.data, p->buf.len, p->ncommands, out);
	}
	PG_CATCH();
	{
		cs_redis_disconnect();
		PG_RE_THROW();
	}
	PG_END_TRY();
	cs_inflight = 0;

	if (!ok)
	{
		cs_redis_disconnect();
		pfree(out);
		return false;
	}
	*replies = out;
	return true;
}

/*
 * Like cs_redis_try_run(), for a pipeline whose commands may block in Redis
 * for up to block_ms (XREADGROUP ... BLOCK block_ms): the wait for replies
 * is that much longer than cachesync.command_timeout, and, like every wait
 * here, ends at once on SIGTERM, a cancel or postmaster death.
 */
bool
cs_redis_try_run_blocking(CsPipeline *p, CsReply ***replies, int block_ms)
{
	bool		ok;

	cs_block_ms = block_ms;
	PG_TRY();
	{
		ok = cs_redis_try_run(p, replies);
	}
	PG_FINALLY();
	{
		cs_block_ms = 0;
	}
	PG_END_TRY();
	return ok;
}

/*
 * Sends every command of the pipeline without waiting for the replies:
 * the next call on this connection reads and drops them first (their
 * content is lost, errors included).  For fire-and-forget commands after
 * commit, such as PUBLISH, whose latency would otherwise be the writer's.
 * Only an open connection is used (no connect wait); returns false when
 * there is none or the send fails.  Throws only for interrupts (held in
 * commit callbacks) and out-of-memory, dropping the connection first.
 */
bool
cs_redis_send_unread(CsPipeline *p)
{
	bool		ok = false;

	cs_failure = CS_FAIL_NONE;
	cs_errbuf[0] = '\0';
	if (cs_ctx == NULL)
		return set_failure(CS_FAIL_CONNECT, "not connected");
	PG_TRY();
	{
		/* bound what Redis and the socket hold for us */
		if (cs_unread + p->ncommands > CS_MAX_UNREAD)
			ok = ensure_connected() && cs_ctx != NULL;
		else
			ok = true;
		ok = ok && send_all(p->buf.data, p->buf.len);
	}
	PG_CATCH();
	{
		cs_redis_disconnect();
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (!ok)
	{
		cs_redis_disconnect();
		return false;
	}
	cs_unread += p->ncommands;
	return true;
}

/*
 * Sends what the pipeline holds so far without reading replies, so that
 * Redis works on the first commands while the caller builds the rest; the
 * final cs_redis_try_run() sends the remainder and reads every reply.  Only
 * one pipeline may be in flight: no other command may run on the
 * connection before that run.  A failure is remembered in the pipeline and
 * reported by the run; it never throws except for interrupts.
 */
void
cs_pipeline_flush(CsPipeline *p)
{
	bool		ok;

	if (p->failed || p->buf.len == 0)
		return;
	if (cs_inflight != 0 && cs_inflight != p->id)
		cs_redis_disconnect();	/* another pipeline's replies are unread */
	cs_failure = CS_FAIL_NONE;
	cs_errbuf[0] = '\0';
	PG_TRY();
	{
		if (p->sent > 0 && cs_inflight != p->id)
			ok = set_failure(CS_FAIL_IO, "the connection was lost while sending commands");
		else
			ok = (p->sent > 0 || ensure_connected()) &&
				send_all(p->buf.data, p->buf.len);
	}
	PG_CATCH();
	{
		cs_redis_disconnect();
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (!ok)
	{
		cs_redis_disconnect();
		p->failed = true;
		return;
	}
	cs_inflight = p->id;
	/* what was sent is not needed again: the pipeline holds only the rest */
	p->sent += p->buf.len;
	resetStringInfo(&p->buf);
}

/* Raises the ERROR that describes the last failure. */
void
cs_redis_raise_failure(void)
{
	const char *server = cs_redis_server();

	switch (cs_failure)
	{
		case CS_FAIL_CONNECT:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not connect to Redis at %s", server),
					 errdetail_internal("%s", cs_errbuf),
					 errhint("Check that Redis is running and that cachesync.redis_host and cachesync.redis_port point to it.")));
			break;
		case CS_FAIL_AUTH:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("Redis at %s refused the connection setup", server),
					 errdetail_internal("%s", cs_errbuf),
					 errhint("Check cachesync.redis_username, cachesync.redis_password and cachesync.redis_db.")));
			break;
		case CS_FAIL_TIMEOUT:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("Redis at %s did not answer within %d ms",
							server, cachesync_command_timeout),
					 errdetail_internal("%s", cs_errbuf),
					 errhint("Redis may be stalled or overloaded; cachesync.command_timeout sets this limit.")));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("lost the connection to Redis at %s", server),
					 errdetail_internal("%s", cs_errbuf),
					 errhint("Check that Redis is running; the next call reconnects.")));
			break;
	}
	pg_unreachable();
}

/* Runs the pipeline like cs_redis_try_run(), throwing on failure. */
CsReply **
cs_redis_run(CsPipeline *p)
{
	CsReply   **replies;

	if (!cs_redis_try_run(p, &replies))
		cs_redis_raise_failure();
	return replies;
}

/* Runs one command and returns its reply, throwing on failure. */
CsReply *
cs_redis_command(int argc, const char *const *argv, const size_t *argvlen)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **replies;

	cs_pipeline_append(p, argc, argv, argvlen);
	replies = cs_redis_run(p);
	return replies[0];
}

/* Runs one command of NUL-terminated arguments, throwing on failure. */
CsReply *
cs_redis_command_strs(int argc, const char *const *argv)
{
	return cs_redis_command(argc, argv, NULL);
}

/* Throws if reply is an error reply; what names the command for the message. */
void
cs_redis_check_reply(const CsReply *reply, const char *what)
{
	if (reply->type == CS_REPLY_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("Redis %s failed", what),
				 errdetail_internal("%s", reply->str)));
}

/* Returns an empty pipeline in the current memory context. */
CsPipeline *
cs_pipeline_create(void)
{
	CsPipeline *p = palloc(sizeof(CsPipeline));

	initStringInfo(&p->buf);
	p->ncommands = 0;
	p->sent = 0;
	p->failed = false;
	p->id = ++cs_last_pipeline_id;
	return p;
}

/* Appends the commands of src to p. */
void
cs_pipeline_append_pipeline(CsPipeline *p, const CsPipeline *src)
{
	Assert(src->sent == 0);
	appendBinaryStringInfo(&p->buf, src->buf.data, src->buf.len);
	p->ncommands += src->ncommands;
}

/* Empties a pipeline for reuse. */
void
cs_pipeline_reset(CsPipeline *p)
{
	resetStringInfo(&p->buf);
	p->ncommands = 0;
	p->sent = 0;
	p->failed = false;
	p->id = ++cs_last_pipeline_id;	/* replies of a flushed past are not ours */
}

/*
 * Appends a RESP header line ("*<n>" or "$<n>" and CRLF): populators append
 * several per row, and a vsnprintf (appendStringInfo) per argument costs
 * more than the digits.
 */
static void
append_resp_len(StringInfo buf, char kind, size_t n)
{
	char		tmp[24];
	int			i = sizeof(tmp);

	tmp[--i] = '\n';
	tmp[--i] = '\r';
	do
	{
		tmp[--i] = '0' + n % 10;
		n /= 10;
	} while (n > 0);
	tmp[--i] = kind;
	appendBinaryStringInfo(buf, tmp + i, sizeof(tmp) - i);
}

/*
 * Appends one command as a RESP array of bulk strings: binary safe, never
 * formatted into a command string.  argvlen NULL means NUL-terminated
 * arguments.
 */
void
cs_pipeline_append(CsPipeline *p, int argc, const char *const *argv,
				   const size_t *argvlen)
{
	append_resp_len(&p->buf, '*', argc);
	for (int i = 0; i < argc; i++)
	{
		size_t		len = argvlen ? argvlen[i] : strlen(argv[i]);

		append_resp_len(&p->buf, '$', len);
		appendBinaryStringInfo(&p->buf, argv[i], len);
		appendBinaryStringInfo(&p->buf, "\r\n", 2);
	}
	p->ncommands++;
}

/* Appends one command of NUL-terminated arguments. */
void
cs_pipeline_append_strs(CsPipeline *p, int argc, const char *const *argv)
{
	cs_pipeline_append(p, argc, argv, NULL);
}
