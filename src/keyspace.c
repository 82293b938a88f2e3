/*-------------------------------------------------------------------------
 *
 * keyspace.c
 *	  Walking the keys under a prefix with SCAN, never KEYS, so Redis is
 *	  never blocked for long.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/memutils.h"

#include "keys.h"
#include "keyspace.h"
#include "redis.h"

/* keys asked for per SCAN call */
#define CS_SCAN_COUNT "1000"

/*
 * Removes every key that starts with prefix (rows and streams alike), one
 * SCAN page and one UNLINK at a time.  Returns how many keys were removed.
 */
int64
cs_keyspace_unlink_prefix(const char *prefix)
{
	char	   *pattern = cs_key_glob_pattern(prefix);
	char	   *cursor = pstrdup("0");
	int64		removed = 0;
	MemoryContext page_cxt = AllocSetContextCreate(CurrentMemoryContext,
												   "cachesync scan page",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(page_cxt);

	do
	{
		CsReply    *page;
		CsReply    *keys;
		CsPipeline *unlink;

		CHECK_FOR_INTERRUPTS();
		page = cs_redis_command_strs(6, (const char *[]) {"SCAN", cursor, "MATCH",
									 pattern, "COUNT", CS_SCAN_COUNT});
		cs_redis_check_reply(page, "SCAN");
		if (page->type != CS_REPLY_ARRAY || page->nelem != 2)
			elog(ERROR, "unexpected reply to SCAN");
		keys = page->elem[1];
		if (keys->nelem > 0)
		{
			const char **argv = palloc(sizeof(char *) * (keys->nelem + 1));
			size_t	   *lens = palloc(sizeof(size_t) * (keys->nelem + 1));
			CsReply    *r;

			argv[0] = "UNLINK";
			lens[0] = 6;
			for (size_t i = 0; i < keys->nelem; i++)
			{
				argv[i + 1] = keys->elem[i]->str;
				lens[i + 1] = keys->elem[i]->len;
			}
			unlink = cs_pipeline_create();
			cs_pipeline_append(unlink, keys->nelem + 1, argv, lens);
			r = cs_redis_run(unlink)[0];
			cs_redis_check_reply(r, "UNLINK");
			removed += r->integer;
		}
		MemoryContextSwitchTo(old);
		cursor = MemoryContextStrdup(old, page->elem[0]->str);
		MemoryContextReset(page_cxt);
		MemoryContextSwitchTo(page_cxt);
	} while (strcmp(cursor, "0") != 0);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(page_cxt);
	return removed;
}
