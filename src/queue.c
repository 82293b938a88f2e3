/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  Adding keys to the durable queue (the worker consumes it, worker.c).
 *
 * Writers may lack any privilege on cachesync's tables, so rows are
 * inserted as the owner of cachesync.queue.  The statement names every
 * object with its schema and uses no operator, and the column defaults are
 * stored resolved, so the writer's search_path cannot steer it (and pinning
 * the path would cost every writing transaction a GUC change).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "cachesync.h"
#include "queue.h"

static SPIPlanPtr insert_plan = NULL;

/* Adds one key (NULL: the whole table) to a batch. */
void
cs_queue_batch_add(CsQueueBatch *b, Oid relid, const char *key)
{
	if (b->n == b->cap)
	{
		b->cap = Max(16, b->cap * 2);
		b->relids = b->relids ? repalloc(b->relids, sizeof(Oid) * b->cap)
			: palloc(sizeof(Oid) * b->cap);
		b->keys = b->keys ? repalloc(b->keys, sizeof(char *) * b->cap)
			: palloc(sizeof(char *) * b->cap);
	}
	b->relids[b->n] = relid;
	b->keys[b->n] = key ? pstrdup(key) : NULL;
	b->n++;
}

/* Returns the owner of cachesync.<relname>. */
Oid
cs_extension_table_owner(const char *relname)
{
	return cs_rel_owner(get_relname_relid(relname, get_namespace_oid("cachesync", false)));
}

/* Inserts the batch into cachesync.queue in one statement, then empties it. */
void
cs_queue_insert(CsQueueBatch *b)
{
	Oid			save_userid;
	int			save_sec;
	Datum		values[2];
	Datum	   *relids;
	Datum	   *keys;
	bool	   *nulls;
	int			dims[1];
	int			lbs[1] = {1};

	if (b->n == 0)
		return;
	relids = palloc(sizeof(Datum) * b->n);
	keys = palloc(sizeof(Datum) * b->n);
	nulls = palloc(sizeof(bool) * b->n);
	for (int i = 0; i < b->n; i++)
	{
		relids[i] = ObjectIdGetDatum(b->relids[i]);
		nulls[i] = (b->keys[i] == NULL);
		keys[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(b->keys[i]);
	}
	dims[0] = b->n;
	values[0] = PointerGetDatum(construct_array(relids, b->n, OIDOID,
												sizeof(Oid), true, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_md_array(keys, nulls, 1, dims, lbs, TEXTOID,
												   -1, false, TYPALIGN_INT));

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(cs_extension_table_owner("queue"),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE);
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (insert_plan == NULL)
	{
		Oid			types[2] = {OIDARRAYOID, TEXTARRAYOID};
		SPIPlanPtr	plan = SPI_prepare("INSERT INTO cachesync.queue (rel, key) "
									   "SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2))",
									   2, types);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		insert_plan = plan;
	}
	if (SPI_execute_plan(insert_plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not add to cachesync.queue");
	PopActiveSnapshot();
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
	b->n = 0;
}
