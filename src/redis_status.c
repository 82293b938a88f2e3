/*-------------------------------------------------------------------------
 *
 * redis_status.c
 *	  cachesync.redis_status(): what a DBA checks first from psql.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "portability/instr_time.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "catalog/pg_type.h"

#include "cachesync.h"
#include "redis.h"

PG_FUNCTION_INFO_V1(cachesync_redis_status);
PG_FUNCTION_INFO_V1(cachesync_redis_command);

/* Returns the value of field in an INFO reply as a palloc'd string, or NULL. */
static char *
info_field(const CsReply *info, const char *field)
{
	size_t		flen = strlen(field);
	const char *line;

	if (info->type != CS_REPLY_STRING)
		return NULL;
	for (line = info->str; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
	{
		if (strncmp(line, field, flen) == 0 && line[flen] == ':')
		{
			const char *v = line + flen + 1;

			return pnstrdup(v, strcspn(v, "\r\n"));
		}
	}
	return NULL;
}

/* Returns a text datum of a string reply, or sets *isnull. */
static Datum
reply_text(const CsReply *r, bool *isnull)
{
	if (r->type == CS_REPLY_STRING || r->type == CS_REPLY_STATUS)
		return PointerGetDatum(cstring_to_text_with_len(r->str, r->len));
	*isnull = true;
	return (Datum) 0;
}

/*
 * cachesync.redis_status() RETURNS TABLE(server text, redis_version text,
 *		redis_mode text, role text, username text, db integer,
 *		ping_ms double precision)
 */
Datum
cachesync_redis_status(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[7];
	bool		nulls[7] = {0};
	CsPipeline *p = cs_pipeline_create();
	CsReply   **r;
	CsReply    *ping;
	char	   *version;
	char	   *mode;
	instr_time	start;
	instr_time	elapsed;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	cs_pipeline_append_strs(p, 2, (const char *[]) {"INFO", "server"});
	cs_pipeline_append_strs(p, 1, (const char *[]) {"ROLE"});
	cs_pipeline_append_strs(p, 2, (const char *[]) {"ACL", "WHOAMI"});
	r = cs_redis_run(p);

	INSTR_TIME_SET_CURRENT(start);
	ping = cs_redis_command_strs(1, (const char *[]) {"PING"});
	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, start);
	cs_redis_check_reply(ping, "PING");

	values[0] = CStringGetTextDatum(cs_redis_server());
	version = info_field(r[0], "redis_version");
	mode = info_field(r[0], "redis_mode");
	values[1] = version ? CStringGetTextDatum(version) : (Datum) 0;
	nulls[1] = (version == NULL);
	values[2] = mode ? CStringGetTextDatum(mode) : (Datum) 0;
	nulls[2] = (mode == NULL);
	if (r[1]->type == CS_REPLY_ARRAY && r[1]->nelem > 0)
		values[3] = reply_text(r[1]->elem[0], &nulls[3]);
	else
		nulls[3] = true;
	values[4] = reply_text(r[2], &nulls[4]);
	values[5] = Int32GetDatum(cachesync_redis_db);
	values[6] = Float8GetDatum(INSTR_TIME_GET_MILLISEC(elapsed));

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* Appends reply to buf as JSON. */
static void
reply_json(StringInfo buf, const CsReply *r)
{
	switch (r->type)
	{
		case CS_REPLY_INTEGER:
			appendStringInfo(buf, "%lld", r->integer);
			break;
		case CS_REPLY_NIL:
			appendStringInfoString(buf, "null");
			break;
		case CS_REPLY_ARRAY:
			appendStringInfoChar(buf, '[');
			for (size_t i = 0; i < r->nelem; i++)
			{
				if (i > 0)
					appendStringInfoString(buf, ", ");
				reply_json(buf, r->elem[i]);
			}
			appendStringInfoChar(buf, ']');
			break;
		default:
			escape_json(buf, r->str);
			break;
	}
}

/*
 * cachesync.redis_command(VARIADIC args text[]) RETURNS text: runs one
 * command; strings come back as they are, integers in decimal, nil as
 * NULL, arrays as JSON.  Error replies raise an ERROR.
 */
Datum
cachesync_redis_command(PG_FUNCTION_ARGS)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	const char **argv;
	size_t	   *lens;
	CsReply    *r;
	StringInfoData buf;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a Redis command needs at least its name")));
	/* commands that would change the connection cachesync's writes share */
	{
		static const char *const refused[] = {
			"select", "multi", "exec", "discard", "watch", "unwatch", "subscribe",
			"psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
			"monitor", "auth", "hello", "reset", "quit", "client", "sync", "psync",
			"replicaof", "slaveof", "readonly", "readwrite", NULL
		};
		char	   *name = TextDatumGetCString(elems[0]);

		if (nulls[0])
			name = "";
		for (int i = 0; refused[i]; i++)
		{
			if (pg_strcasecmp(name, refused[i]) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cachesync.redis_command() does not run %s", name),
						 errdetail("It would change the connection that cachesync's own writes use."),
						 errhint("Use redis-cli for connection-level commands.")));
		}
	}
	argv = palloc(sizeof(char *) * n);
	lens = palloc(sizeof(size_t) * n);
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument %d of the Redis command is NULL", i + 1)));
		argv[i] = VARDATA_ANY(DatumGetPointer(elems[i]));
		lens[i] = VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i]));
	}
	r = cs_redis_command(n, argv, lens);
	cs_redis_check_reply(r, "command");
	if (r->type == CS_REPLY_NIL)
		PG_RETURN_NULL();
	if (r->type == CS_REPLY_STRING || r->type == CS_REPLY_STATUS)
		PG_RETURN_TEXT_P(cstring_to_text_with_len(r->str, r->len));
	initStringInfo(&buf);
	reply_json(&buf, r);
	PG_RETURN_TEXT_P(cstring_to_text(buf.data));
}
