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
#include "utils/builtins.h"

#include "cachesync.h"
#include "redis.h"

PG_FUNCTION_INFO_V1(cachesync_redis_status);

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
