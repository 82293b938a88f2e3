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
 * Calls fn with each SCAN page of the keys that start with prefix (a List
 * of palloc'd strings, freed after the call).  Returns false as soon as
 * Redis or fn fails.
 */
bool
cs_keyspace_scan(const char *prefix, bool (*fn) (List *keys, void *arg), void *arg)
{
	char	   *pattern = cs_key_glob_pattern(prefix);
	char	   *cursor = pstrdup("0");
	bool		ok = true;
	MemoryContext page_cxt = AllocSetContextCreate(CurrentMemoryContext,
												   "cachesync scan page",
												   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(page_cxt);

	do
	{
		CsPipeline *p = cs_pipeline_create();
		CsReply   **r;
		CsReply    *page;
		List	   *keys = NIL;

		CHECK_FOR_INTERRUPTS();
		cs_pipeline_append_strs(p, 6, (const char *[]) {"SCAN", cursor, "MATCH",
								pattern, "COUNT", CS_SCAN_COUNT});
		if (!cs_redis_try_run(p, &r))
		{
			ok = false;
			break;
		}
		page = r[0];
		cs_redis_check_reply(page, "SCAN");
		if (page->type != CS_REPLY_ARRAY || page->nelem != 2)
			elog(ERROR, "unexpected reply to SCAN");
		for (size_t i = 0; i < page->elem[1]->nelem; i++)
			keys = lappend(keys, page->elem[1]->elem[i]->str);
		if (keys != NIL && !fn(keys, arg))
		{
			ok = false;
			break;
		}
		cursor = MemoryContextStrdup(old, page->elem[0]->str);
		MemoryContextReset(page_cxt);
	} while (strcmp(cursor, "0") != 0);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(page_cxt);
	return ok;
}

/* cs_keyspace_scan callback: UNLINKs one page, counting into *arg. */
static bool
unlink_page(List *keys, void *arg)
{
	int			n = list_length(keys);
	const char **argv = palloc(sizeof(char *) * (n + 1));
	ListCell   *lc;
	CsReply    *r;
	int			i = 0;

	argv[i++] = "UNLINK";
	foreach(lc, keys)
		argv[i++] = lfirst(lc);
	r = cs_redis_command_strs(n + 1, argv);
	cs_redis_check_reply(r, "UNLINK");
	*(int64 *) arg += r->integer;
	return true;
}

/*
 * Removes every key that starts with prefix (rows and streams alike), one
 * SCAN page and one UNLINK at a time.  Returns how many keys were removed;
 * throws when Redis fails.
 */
int64
cs_keyspace_unlink_prefix(const char *prefix)
{
	int64		removed = 0;

	if (!cs_keyspace_scan(prefix, unlink_page, &removed))
		cs_redis_raise_failure();
	return removed;
}
