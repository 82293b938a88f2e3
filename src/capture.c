/*-------------------------------------------------------------------------
 *
 * capture.c
 *	  Row triggers that capture changes of registered tables, and the
 *	  transaction callbacks that send them on at the right moment.
 *
 * Each transaction keeps, per Redis key, the latest state of that key: the
 * new value (write_through), or just "changed" (write_around, async).  A
 * key's state is a stack by subtransaction, so ROLLBACK TO SAVEPOINT pops
 * what the rolled-back subtransaction did.
 *
 * At pre-commit:
 *   - async keys and TRUNCATEs go to the durable queue (one INSERT);
 *   - write_through and write_around keys are recorded in this process's
 *     intent set in Redis, and write_through values are pushed, fenced by a
 *     version (version.c), all in one pipeline.  If Redis cannot be reached,
 *     cachesync.on_redis_error decides: queue them, or fail the transaction.
 * After commit (the commit is durable and visible): write_around keys are
 *   deleted, fenced by a version drawn now, so no reader can put the old row
 *   back.  A failure here cannot fail anything any more: the worker heals
 *   the keys from the intent set.
 * At abort: pushed values are undone (only where our version still stands).
 * After a crash between the push and the commit record no callback runs:
 *   the worker heals the intent sets of the previous generation at start.
 * PREPARE TRANSACTION sends every key to the queue instead: the worker syncs
 *   them once COMMIT PREPARED makes them visible.
 *
 * A transaction that changes more than cachesync.max_transaction_changes
 * keys, or whose values pass CS_MAX_PUSH_BYTES, stops keeping them in
 * memory: they go to the queue in batches, and the worker syncs them after
 * commit.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/tupconvert.h"
#include "access/xact.h"
#include "catalog/pg_inherits.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "cachesync.h"
#include "capture.h"
#include "events.h"
#include "keys.h"
#include "queue.h"
#include "redis.h"
#include "registry.h"
#include "rowformat.h"
#include "shmem.h"
#include "stats.h"
#include "sync.h"
#include "version.h"

PG_FUNCTION_INFO_V1(cachesync_capture);
PG_FUNCTION_INFO_V1(cachesync_capture_truncate);

/* intent sets live a day: the worker heals them long before */
#define CS_INTENT_TTL_MS "86400000"
/* a transaction whose values pass this many bytes goes to the queue */
#define CS_MAX_PUSH_BYTES (64 * 1024 * 1024)
/* spilled keys buffered per queue INSERT is twice this */
#define CS_SPILL_CHUNK 512

/* One state of one key, at one subtransaction level. */
typedef struct CsKeyState
{
	SubTransactionId subid;
	CsValue    *value;			/* write_through: new value; NULL: deleted */
	struct CsKeyState *prev;	/* the state before this subtransaction */
} CsKeyState;

/* A key changed by the current transaction. */
typedef struct CsKeyEntry
{
	char	   *key;			/* hash key: the full Redis key */
	Oid			relid;
	CsKeyState *top;
	CsFormat	format;			/* set at pre-commit for write_through */
	int64		ttl_ms;
} CsKeyEntry;

/* An invalidation message to publish after commit (notify tables). */
typedef struct CsNotify
{
	Oid			relid;
	char	   *channel;		/* the table's channel, named at pre-commit */
	char	   *key;
} CsNotify;

/* A TRUNCATE in the current transaction. */
typedef struct CsTruncate
{
	Oid			relid;
	SubTransactionId subid;
} CsTruncate;

/* the current transaction's changes, in TopTransactionContext */
static HTAB *xact_keys = NULL;
static int	xact_nkeys = 0;
static Size xact_value_bytes = 0;	/* of the values recorded so far */
static List *xact_truncates = NIL;
static SubTransactionId xact_max_subid = InvalidSubTransactionId;
static bool xact_spilled = false;
static CsQueueBatch xact_spill;
static SubTransactionId *xact_spill_subids = NULL;
static MemoryContext xact_spill_cxt = NULL;

/* set at pre-commit for the commit and abort callbacks */
static List *xact_pushed = NIL;		/* keys whose values were pushed */
static List *xact_invalidate = NIL;	/* write_around keys to delete */
static List *xact_notify = NIL; /* CsNotify to publish after commit */
static uint64 xact_version = 0;
static bool xact_publishing = false;
static bool xact_push_failed = false;
static bool xact_queued = false;
static bool xact_changes = false;	/* wrote change outbox entries */

static bool callbacks_registered = false;

/*
 * The table whose row changes are not captured: set by the write-back
 * worker while it applies stream entries, whose cache entries it settles
 * itself (no echo of the application's own write as new cache work).
 */
Oid			cs_capture_skip_relid = InvalidOid;


/* Creates the key table of the current transaction. */
static void
xact_init(void)
{
	xact_keys = cs_keyset_create("cachesync transaction keys", 256,
								 sizeof(CsKeyEntry), TopTransactionContext);
	xact_nkeys = 0;
}

/* Forgets everything about the current transaction. */
static void
xact_reset(void)
{
	xact_keys = NULL;
	xact_nkeys = 0;
	xact_value_bytes = 0;
	xact_truncates = NIL;
	xact_max_subid = InvalidSubTransactionId;
	xact_spilled = false;
	memset(&xact_spill, 0, sizeof(xact_spill));
	xact_spill_subids = NULL;
	xact_spill_cxt = NULL;
	xact_pushed = NIL;
	xact_invalidate = NIL;
	xact_notify = NIL;
	xact_version = 0;
	xact_push_failed = false;
	xact_queued = false;
	xact_changes = false;
}

/* Returns true when the current transaction has cache work. */
static bool
xact_has_work(void)
{
	return xact_keys != NULL || xact_truncates != NIL || xact_spilled;
}

/*
 * Moves the keys still buffered into a fresh memory context, freeing those
 * already sent, so a huge transaction holds only what is not yet queued.
 */
static void
compact_spill(void)
{
	MemoryContext fresh = AllocSetContextCreate(TopTransactionContext,
												"cachesync spilled keys",
												ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(fresh);
	CsQueueBatch kept = {0};
	SubTransactionId *subids = palloc(sizeof(SubTransactionId) * Max(xact_spill.n, 1));

	for (int i = 0; i < xact_spill.n; i++)
	{
		subids[i] = xact_spill_subids[i];
		cs_queue_batch_add(&kept, xact_spill.relids[i], xact_spill.keys[i]);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(xact_spill_cxt);
	xact_spill_cxt = fresh;
	xact_spill = kept;
	xact_spill_subids = subids;
	if (kept.cap > xact_spill.n)
		xact_spill_subids = MemoryContextAlloc(fresh, sizeof(SubTransactionId) * Max(kept.cap, 1));
	memcpy(xact_spill_subids, subids, sizeof(SubTransactionId) * xact_spill.n);
}

/*
 * Sends the spilled keys recorded at subtransaction level min_subid or
 * deeper to the queue.  The INSERT belongs to the current subtransaction,
 * so keys of outer levels stay buffered: a rollback of the current level
 * must not take them along.
 */
static void
flush_spill(SubTransactionId min_subid)
{
	CsQueueBatch batch = {0};
	int			kept = 0;

	if (xact_spill.n == 0)
		return;
	for (int i = 0; i < xact_spill.n; i++)
	{
		if (xact_spill_subids[i] >= min_subid)
			cs_queue_batch_add(&batch, xact_spill.relids[i], xact_spill.keys[i]);
		else
		{
			xact_spill_subids[kept] = xact_spill_subids[i];
			xact_spill.relids[kept] = xact_spill.relids[i];
			xact_spill.keys[kept++] = xact_spill.keys[i];
		}
	}
	xact_spill.n = kept;
	if (batch.n == 0)
		return;
	cs_queue_insert(&batch);
	xact_queued = true;
	compact_spill();
}

/*
 * Switches the transaction to queue mode: from now on changed keys go to
 * the queue in batches instead of memory.  The keys already in memory stay
 * there (their subtransaction stacks are still needed) and are queued at
 * pre-commit.
 */
static void
spill(void)
{
	xact_spilled = true;
	xact_spill_cxt = AllocSetContextCreate(TopTransactionContext,
										   "cachesync spilled keys",
										   ALLOCSET_DEFAULT_SIZES);
}

/* Records a change of key in queue mode. */
static void
record_spilled(Oid relid, const char *key)
{
	MemoryContext old;
	int			cap;

	if (xact_spill.n >= CS_SPILL_CHUNK * 2)
		flush_spill(GetCurrentSubTransactionId());
	old = MemoryContextSwitchTo(xact_spill_cxt);
	cap = xact_spill.cap;
	cs_queue_batch_add(&xact_spill, relid, key);
	if (xact_spill.cap != cap)
		xact_spill_subids = xact_spill_subids
			? repalloc(xact_spill_subids, sizeof(SubTransactionId) * xact_spill.cap)
			: palloc(sizeof(SubTransactionId) * xact_spill.cap);
	xact_spill_subids[xact_spill.n - 1] = GetCurrentSubTransactionId();
	MemoryContextSwitchTo(old);
}

/* Records the new state of key (value NULL: deleted or just changed). */
static void
record_change(CsTable *t, char *key, CsValue *value)
{
	SubTransactionId subid = GetCurrentSubTransactionId();
	CsKeyEntry *e;
	CsKeyState *s;
	bool		found;
	MemoryContext old;

	if (xact_spilled)
	{
		record_spilled(t->relid, key);
		return;
	}
	if (xact_keys == NULL)
		xact_init();
	old = MemoryContextSwitchTo(TopTransactionContext);
	e = hash_search(xact_keys, &key, HASH_ENTER, &found);
	if (!found)
	{
		e->key = pstrdup(key);	/* the entry keeps its own copy */
		e->relid = t->relid;
		e->top = NULL;
		xact_nkeys++;
	}
	if (e->top != NULL && e->top->subid == subid)
	{
		s = e->top;
		if (s->value != NULL)
		{
			/* a row updated again and again must not grow memory */
			for (int i = 0; i < s->value->nargs; i++)
				pfree(s->value->args[i]);
			pfree(s->value->args);
			pfree(s->value->lens);
			pfree(s->value);
		}
	}
	else
	{
		s = palloc(sizeof(CsKeyState));
		s->subid = subid;
		s->prev = e->top;
		e->top = s;
	}
	s->value = NULL;
	if (value != NULL)
	{
		s->value = palloc(sizeof(CsValue));
		s->value->nargs = value->nargs;
		s->value->args = palloc(sizeof(char *) * Max(value->nargs, 1));
		s->value->lens = palloc(sizeof(size_t) * Max(value->nargs, 1));
		for (int i = 0; i < value->nargs; i++)
		{
			s->value->args[i] = pnstrdup(value->args[i], value->lens[i]);
			s->value->lens[i] = value->lens[i];
			xact_value_bytes += value->lens[i];
		}
	}
	xact_max_subid = Max(xact_max_subid, subid);
	MemoryContextSwitchTo(old);

	/* bounded memory, and a push that fits one Redis command */
	if (xact_nkeys > cachesync_max_transaction_changes ||
		xact_value_bytes > CS_MAX_PUSH_BYTES)
		spill();
}

/* Drops what the aborted subtransaction subid and its children recorded. */
static void
subxact_abort(SubTransactionId subid)
{
	HASH_SEQ_STATUS seq;
	CsKeyEntry *e;
	ListCell   *lc;
	int			kept = 0;

	if (xact_keys != NULL && subid <= xact_max_subid)
	{
		hash_seq_init(&seq, xact_keys);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			while (e->top != NULL && e->top->subid >= subid)
				e->top = e->top->prev;
			if (e->top == NULL)
			{
				hash_search(xact_keys, &e->key, HASH_REMOVE, NULL);
				xact_nkeys--;
			}
		}
	}
	foreach(lc, xact_truncates)
	{
		CsTruncate *tr = lfirst(lc);

		if (tr->subid >= subid)
			xact_truncates = foreach_delete_current(xact_truncates, lc);
	}
	/* spilled keys of the subtransaction vanished with its queue rows */
	for (int i = 0; i < xact_spill.n; i++)
	{
		if (xact_spill_subids[i] < subid)
		{
			xact_spill_subids[kept] = xact_spill_subids[i];
			xact_spill.relids[kept] = xact_spill.relids[i];
			xact_spill.keys[kept++] = xact_spill.keys[i];
		}
	}
	xact_spill.n = kept;
}

/*
 * Appends one FCALL cachesync_push carrying the whole transaction: every
 * key joins this process's intent set (emptied first, unless the worker
 * still has to heal it), write_through keys get their fenced put or delete,
 * write_around keys only the intent.  One command, one Lua call.
 */
static void
append_push(CsPipeline *p, List *through, List *around, uint64 version)
{
	int			nkeys = 1 + 2 * (list_length(through) + list_length(around));
	int			maxargs = 3 + nkeys + 4 + list_length(around);
	const char **argv;
	size_t	   *lens;
	int			argc = 0;
	char		nkeys_s[16];
	char		vbuf[32];
	char		tomb[32];
	ListCell   *lc;

	foreach(lc, through)
	{
		CsKeyEntry *e = lfirst(lc);

		maxargs += e->top->value ? 4 + e->top->value->nargs : 1;
	}
	argv = palloc(sizeof(char *) * maxargs);
	lens = palloc(sizeof(size_t) * maxargs);
	snprintf(nkeys_s, sizeof(nkeys_s), "%d", nkeys);
	snprintf(vbuf, sizeof(vbuf), UINT64_FORMAT, version);
	snprintf(tomb, sizeof(tomb), "%d", cachesync_tombstone_ttl);

#define ARG(s) (argv[argc] = (s), lens[argc] = strlen(argv[argc]), argc++)
	ARG("FCALL");
	ARG("cachesync_push");
	ARG(nkeys_s);
	ARG(cs_intent_key(cs_shared->generation, MyProc->pgprocno));
	foreach(lc, through)
	{
		ARG(((CsKeyEntry *) lfirst(lc))->key);
		ARG(cs_version_key(((CsKeyEntry *) lfirst(lc))->key));
	}
	foreach(lc, around)
	{
		ARG(((CsKeyEntry *) lfirst(lc))->key);
		ARG(cs_version_key(((CsKeyEntry *) lfirst(lc))->key));
	}
	ARG(vbuf);
	ARG(pg_atomic_read_u32(&cs_shared->slots[MyProc->pgprocno].heal) > 0 ? "0" : "1");
	ARG(CS_INTENT_TTL_MS);
	ARG(tomb);
	foreach(lc, through)
	{
		CsKeyEntry *e = lfirst(lc);
		CsValue    *v = e->top->value;

		if (v == NULL)
		{
			ARG("d");
			continue;
		}
		ARG("p");
		ARG(psprintf(INT64_FORMAT, e->ttl_ms));
		ARG(e->format == CS_FORMAT_JSON ? "json" : "hash");
		ARG(psprintf("%d", v->nargs));
		for (int i = 0; i < v->nargs; i++)
		{
			argv[argc] = v->args[i];
			lens[argc++] = v->lens[i];
		}
	}
	foreach(lc, around)
		ARG("i");
#undef ARG
	Assert(argc <= maxargs);
	cs_pipeline_append(p, argc, argv, lens);
}

/*
 * Appends a fenced put (value, in format with ttl_ms; 0: no expiry) or
 * delete (value NULL) of key.  With a guard key, the write happens only
 * while the guard holds guard_id (cachesync_settle, see writeback.c).
 */
void
cs_append_guarded_write(CsPipeline *p, const char *key, const char *guard_key,
						const char *guard_id, CsValue *value,
						CsFormat format, int64 ttl_ms, uint64 version)
{
	char		vbuf[32];
	char		ttl[32];
	char		tomb[32];
	const char **argv = palloc(sizeof(char *) * (11 + (value ? value->nargs : 0)));
	size_t	   *lens = palloc(sizeof(size_t) * (11 + (value ? value->nargs : 0)));
	int			argc = 0;

	snprintf(vbuf, sizeof(vbuf), UINT64_FORMAT, version);
	argv[argc++] = "FCALL";
	if (guard_key)
	{
		argv[argc++] = "cachesync_settle";
		argv[argc++] = "3";
		argv[argc++] = key;
		argv[argc++] = cs_version_key(key);
		argv[argc++] = guard_key;
		argv[argc++] = guard_id;
		argv[argc++] = value ? "p" : "d";
	}
	else
	{
		argv[argc++] = value ? "cachesync_put" : "cachesync_del";
		argv[argc++] = "2";
		argv[argc++] = key;
		argv[argc++] = cs_version_key(key);
	}
	argv[argc++] = vbuf;
	if (value)
	{
		snprintf(ttl, sizeof(ttl), INT64_FORMAT, ttl_ms);
		argv[argc++] = ttl;
		argv[argc++] = format == CS_FORMAT_JSON ? "json" : "hash";
	}
	else
	{
		snprintf(tomb, sizeof(tomb), "%d", cachesync_tombstone_ttl);
		argv[argc++] = tomb;
	}
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	for (int i = 0; value && i < value->nargs; i++)
	{
		argv[argc] = value->args[i];
		lens[argc++] = value->lens[i];
	}
	cs_pipeline_append(p, argc, argv, lens);
}

/*
 * Appends a fenced put (value, in format with ttl_ms; 0: no expiry) or
 * delete (value NULL) of key.
 */
void
cs_append_fenced_write(CsPipeline *p, const char *key, CsValue *value,
					   CsFormat format, int64 ttl_ms, uint64 version)
{
	cs_append_guarded_write(p, key, NULL, NULL, value, format, ttl_ms, version);
}

/* Appends an undo of what version wrote to key. */
static void
append_undo(CsPipeline *p, const char *key, uint64 version)
{
	char		vbuf[32];
	char		tomb[32];

	snprintf(vbuf, sizeof(vbuf), UINT64_FORMAT, version);
	snprintf(tomb, sizeof(tomb), "%d", cachesync_tombstone_ttl);
	cs_pipeline_append_strs(p, 7, (const char *[]) {"FCALL", "cachesync_undo", "2",
							key, cs_version_key(key), vbuf, tomb});
}

/* Returns true when every reply of a run is free of errors. */
bool
cs_replies_ok(CsReply **replies, int n, const char **error)
{
	for (int i = 0; i < n; i++)
	{
		if (replies[i]->type == CS_REPLY_ERROR)
		{
			*error = replies[i]->str;
			return false;
		}
	}
	return true;
}

/* Adds one to stat for each entry's table, one call per table. */
static void
count_entries(List *entries, CsStat stat)
{
	List	   *relids = NIL;
	List	   *counts = NIL;
	ListCell   *lc;
	ListCell   *rc;
	ListCell   *cc;

	foreach(lc, entries)
	{
		Oid			relid = ((CsKeyEntry *) lfirst(lc))->relid;
		bool		found = false;

		forboth(rc, relids, cc, counts)
		{
			if (lfirst_oid(rc) == relid)
			{
				lfirst_int(cc)++;
				found = true;
				break;
			}
		}
		if (!found)
		{
			relids = lappend_oid(relids, relid);
			counts = lappend_int(counts, 1);
		}
	}
	forboth(rc, relids, cc, counts)
		cs_stats_add(lfirst_oid(rc), stat, lfirst_int(cc));
}

/* Records a Redis failure against each entry's table. */
static void
count_failure(List *entries, const char *message)
{
	List	   *seen = NIL;
	ListCell   *lc;

	foreach(lc, entries)
	{
		Oid			relid = ((CsKeyEntry *) lfirst(lc))->relid;

		if (!list_member_oid(seen, relid))
		{
			cs_stats_error(relid, message);
			seen = lappend_oid(seen, relid);
		}
	}
}

/* Returns the keys of entries. */
static List *
entry_keys(List *entries)
{
	List	   *keys = NIL;
	ListCell   *lc;

	foreach(lc, entries)
		keys = lappend(keys, ((CsKeyEntry *) lfirst(lc))->key);
	return keys;
}

/*
 * Sends intents and write_through values in one FCALL.  Returns false when
 * Redis could not take them all; *error says why.
 */
static bool
push(List *through, List *around, const char **error)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **replies;

	xact_version = cs_version_begin_push();
	xact_publishing = true;
	append_push(p, through, around, xact_version);
	xact_pushed = entry_keys(through);
	if (!cs_redis_try_run(p, &replies))
	{
		*error = cs_redis_last_error();
		xact_push_failed = true;
		return false;
	}
	if (!cs_replies_ok(replies, p->ncommands, error))
	{
		/* e.g. the function library was flushed: reload it on reconnect */
		cs_redis_disconnect();
		return false;
	}
	return true;
}

/* Adds the batch's keys to each table's queued counter, one call per table. */
static void
count_queued(CsQueueBatch *b)
{
	int			start = 0;

	for (int i = 1; i <= b->n; i++)
	{
		if (i == b->n || b->relids[i] != b->relids[start])
		{
			cs_stats_add(b->relids[start], CS_STAT_QUEUED, i - start);
			start = i;
		}
	}
}

/* Raises the error of a push that failed with on_redis_error = error. */
static void
push_failed(const char *error)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("could not write the transaction's changes to Redis at %s",
					cs_redis_server()),
			 errdetail_internal("%s", error),
			 errhint("With cachesync.on_redis_error = queue the transaction would commit and the worker would apply the changes once Redis is back.")));
}

/*
 * Returns the invalidation messages of the entries of notify tables, their
 * channels named now (after commit the catalogs are out of reach).
 */
static List *
collect_notify(List *entries)
{
	List	   *out = NIL;
	Oid			last = InvalidOid;
	char	   *channel = NULL;
	ListCell   *lc;

	foreach(lc, entries)
	{
		CsKeyEntry *e = lfirst(lc);
		CsTable    *t = cs_registry_lookup(e->relid);
		CsNotify   *n;

		if (t == NULL || !t->notify)
			continue;
		if (e->relid != last)
			channel = cs_invalidate_channel(e->relid);
		last = e->relid;
		n = palloc(sizeof(CsNotify));
		n->relid = e->relid;
		n->channel = channel;
		n->key = e->key;
		out = lappend(out, n);
	}
	return out;
}

/* Appends the invalidation messages to p. */
static void
append_notify(CsPipeline *p, List *notify)
{
	ListCell   *lc;

	foreach(lc, notify)
		cs_notify_append(p, ((CsNotify *) lfirst(lc))->channel,
						 ((CsNotify *) lfirst(lc))->key);
}

/* Adds two messages per entry to stat of each entry's table. */
static void
count_notify(List *notify, CsStat stat)
{
	ListCell   *lc;

	foreach(lc, notify)
		cs_stats_add(((CsNotify *) lfirst(lc))->relid, stat, 2);
}

/*
 * Pre-commit: queue async keys and TRUNCATEs, push write_through values and
 * intents, remember write_around keys for after the commit.
 */
static void
pre_commit(bool prepare)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	CsQueueBatch queue = {0};
	List	   *through = NIL;
	List	   *around = NIL;
	HASH_SEQ_STATUS seq;
	CsKeyEntry *e;
	ListCell   *lc;
	const char *error = NULL;

	foreach(lc, xact_truncates)
		cs_queue_batch_add(&queue, ((CsTruncate *) lfirst(lc))->relid, NULL);
	if (xact_keys != NULL)
	{
		hash_seq_init(&seq, xact_keys);
		while ((e = hash_seq_search(&seq)) != NULL)
		{
			CsTable    *t = cs_registry_lookup(e->relid);

			if (t == NULL || prepare || xact_spilled || t->mode == CS_MODE_ASYNC)
				cs_queue_batch_add(&queue, e->relid, e->key);
			else if (t->mode == CS_MODE_WRITE_AROUND)
				around = lappend(around, e);
			else
			{
				/* what the push needs, copied while t is current */
				e->format = t->format;
				e->ttl_ms = t->ttl_ms;
				through = lappend(through, e);
			}
		}
	}

	if (through != NIL || around != NIL)
	{
		bool		pushed = false;
		List	   *notify = collect_notify(list_concat_copy(through, around));

		/* after a failure moments ago, queue at once rather than wait again */
		if (cachesync_on_redis_error == CS_ON_ERROR_ERROR || !cs_redis_known_down())
		{
			pushed = push(through, around, &error);
			if (!pushed)
			{
				cs_note_redis_down();
				count_failure(list_concat_copy(through, around), error);
				if (cachesync_on_redis_error == CS_ON_ERROR_ERROR)
					push_failed(error);
			}
		}
		if (pushed)
		{
			count_entries(through, CS_STAT_PUSHED);
			xact_notify = notify;
		}
		else
		{
			foreach(lc, list_concat_copy(through, around))
				cs_queue_batch_add(&queue, ((CsKeyEntry *) lfirst(lc))->relid,
								   ((CsKeyEntry *) lfirst(lc))->key);
			around = NIL;
		}
	}
	xact_invalidate = around;

	flush_spill(InvalidSubTransactionId);
	if (queue.n > 0)
	{
		count_queued(&queue);
		cs_queue_insert(&queue);
		xact_queued = true;
	}
	MemoryContextSwitchTo(old);
}

/*
 * After commit: delete write_around keys, fenced by a version drawn now.
 * Nothing here may throw or touch the catalogs: the commit is done.
 */
static void
post_commit(void)
{
	CsPipeline *p;
	CsReply   **replies;
	ListCell   *lc;
	uint64		version;
	const char *error;

	if (xact_invalidate == NIL && xact_notify == NIL)
		return;
	p = cs_pipeline_create();
	if (xact_invalidate == NIL)
	{
		/* write_through only: the values are in; do not wait for PUBLISH */
		append_notify(p, xact_notify);
		count_notify(xact_notify, cs_redis_send_unread(p)
					 ? CS_STAT_PUBLISHED : CS_STAT_PUBLISH_LOST);
		return;
	}
	version = cs_version_next();
	foreach(lc, xact_invalidate)
		cs_append_fenced_write(p, ((CsKeyEntry *) lfirst(lc))->key, NULL,
							   CS_FORMAT_JSON, 0, version);
	/* after the deletes: a near cache that reloads at once misses */
	append_notify(p, xact_notify);
	if (cs_redis_try_run(p, &replies) && cs_replies_ok(replies, p->ncommands, &error))
	{
		count_entries(xact_invalidate, CS_STAT_INVALIDATED);
		count_notify(xact_notify, CS_STAT_PUBLISHED);
	}
	else
	{
		count_failure(xact_invalidate, cs_redis_last_error());
		count_notify(xact_notify, CS_STAT_PUBLISH_LOST);
		cs_request_heal();
	}
}

/*
 * After abort: undo the values pushed at pre-commit (where our version still
 * stands).  The keys are then missing; the worker, asked by the caller,
 * writes the committed rows back from the intent set.
 */
static void
undo_pushed(void)
{
	CsPipeline *p;
	CsReply   **replies;
	ListCell   *lc;

	if (xact_pushed == NIL || xact_push_failed)
		return;					/* Redis just failed: do not wait for it twice */
	p = cs_pipeline_create();
	foreach(lc, xact_pushed)
		append_undo(p, lfirst(lc), xact_version);
	(void) cs_redis_try_run(p, &replies);
}

/* Transaction callback: see the file header. */
static void
xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			if (xact_has_work())
				pre_commit(event == XACT_EVENT_PRE_PREPARE);
			break;
		case XACT_EVENT_COMMIT:
			post_commit();
			if (xact_publishing)
				cs_version_end_push();
			xact_publishing = false;
			if (xact_changes)
				cs_changes_committed();
			if (xact_queued)
			{
				cs_queue_committed();
				cs_wake_worker();
			}
			xact_reset();
			break;
		case XACT_EVENT_ABORT:
			undo_pushed();
			if (xact_publishing)
				cs_version_end_push();
			/* the worker puts the committed rows back (after end_push) */
			if (xact_pushed != NIL)
				cs_request_heal();
			xact_publishing = false;
			cs_queue_aborted();
			xact_reset();
			break;
		case XACT_EVENT_PREPARE:
			/* COMMIT PREPARED runs no callback: the worker's full pass finds them */
			cs_queue_committed();
			xact_reset();
			break;
		default:
			break;
	}
}

/*
 * Subtransaction callback: drops the changes of rolled-back savepoints, and
 * queues the spilled keys of a committing one while it is still in progress
 * (an ERROR there aborts it cleanly).
 */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_PRE_COMMIT_SUB && xact_spilled)
		flush_spill(mySubid);	/* still in progress: their rows commit into the parent */
	else if (event == SUBXACT_EVENT_ABORT_SUB && xact_has_work())
		subxact_abort(mySubid);
}

/* Registers the callbacks once per process. */
static void
register_callbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
	callbacks_registered = true;
}

/*
 * The registered table a trigger serves: its own table, or the registered
 * ancestor of a partition.  Derived from the relation, never from trigger
 * arguments, which a role could forge on a table of its own (and which
 * would name stale OIDs after a dump and restore).
 */
static CsTable *
trigger_table(TriggerData *td)
{
	return cs_registry_lookup_rel(td->tg_relation);
}

/*
 * Converts a partition's tuple (NULL stays NULL) to the registered table's
 * row type, whose descriptor it returns in *desc.
 */
static HeapTuple
as_registered_row(CsTable *t, TupleDesc partdesc, HeapTuple tuple, TupleDesc *desc)
{
	Relation	root;
	TupleConversionMap *map;

	root = relation_open(t->relid, AccessShareLock);
	*desc = CreateTupleDescCopy(RelationGetDescr(root));
	relation_close(root, AccessShareLock);
	if (tuple == NULL)
		return NULL;
	map = convert_tuples_by_name(partdesc, *desc);
	return map ? execute_attr_map_tuple(tuple, map) : tuple;
}

/*
 * Returns the registered table a capture trigger serves, or NULL when
 * capture is off or no registration serves it; throws when the
 * registration is out of date.
 */
static CsTable *
capture_target(TriggerData *td, bool *cache)
{
	CsTable    *t;

	if (!cachesync_enabled)
		return NULL;
	cs_shmem_require();
	t = trigger_table(td);
	if (t == NULL)
		return NULL;
	/*
	 * Rows the write-back worker applies are not cache work (it settles the
	 * keys itself), but they are changes: the change stream still gets them.
	 */
	*cache = (t->relid != cs_capture_skip_relid);
	if (!*cache && !t->changes)
		return NULL;
	if (t->broken)
		cs_registry_get(t->relid);	/* throws with the reason */
	register_callbacks();
	return t;
}

/* Records the change of one row. */
static void
capture_row(CsTable *t, HeapTuple oldtup, HeapTuple newtup, TupleDesc desc,
			bool cache)
{
	char	   *oldkey = oldtup ? cs_row_key(t, oldtup, desc) : NULL;
	char	   *newkey = newtup ? cs_row_key(t, newtup, desc) : NULL;
	bool		values = (t->mode == CS_MODE_WRITE_THROUGH || t->mode == CS_MODE_WRITE_BACK);

	if (oldkey && newkey && strcmp(oldkey, newkey) == 0)
	{
		if (cs_row_cached_equal(t, oldtup, newtup, desc))
			return;				/* no cached column changed */
		oldkey = NULL;
		if (t->changes)
			cs_changes_record(t, "update", newkey, newtup, desc);
	}
	else if (t->changes)
	{
		/* a key change is the old key's delete and the new key's insert */
		if (oldkey)
			cs_changes_record(t, "delete", oldkey, NULL, desc);
		if (newkey)
			cs_changes_record(t, "insert", newkey, newtup, desc);
	}
	if (t->changes)
		xact_changes = true;	/* wake the worker at commit */
	if (!cache)
		return;
	/*
	 * A text key '__changes' or '__writeback' names the table's own stream:
	 * writing or deleting it would destroy the stream, so such a row is
	 * never cached (documented).
	 */
	if (oldkey && cs_is_stream_key(t, oldkey))
		oldkey = NULL;
	if (newkey && cs_is_stream_key(t, newkey))
		newkey = NULL;
	if (oldkey)
		record_change(t, oldkey, NULL);
	if (newkey)
		record_change(t, newkey, values && !xact_spilled ? cs_row_value(t, newtup, desc) : NULL);
}

/* cachesync.capture(): AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW */
Datum
cachesync_capture(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	CsTable    *t;
	TupleDesc	desc;
	HeapTuple	oldtup = NULL;
	HeapTuple	newtup = NULL;
	bool		cache;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_AFTER(td->tg_event))
		elog(ERROR, "cachesync.capture() must be an AFTER ... FOR EACH ROW trigger");
	t = capture_target(td, &cache);
	if (t == NULL)
		return PointerGetDatum(NULL);

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		newtup = td->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
		oldtup = td->tg_trigtuple;
	else
	{
		oldtup = td->tg_trigtuple;
		newtup = td->tg_newtuple;
	}
	desc = RelationGetDescr(td->tg_relation);
	if (RelationGetRelid(td->tg_relation) != t->relid)
	{
		/* a partition: convert its rows to the registered table's row type */
		TupleDesc	partdesc = desc;

		oldtup = as_registered_row(t, partdesc, oldtup, &desc);
		newtup = as_registered_row(t, partdesc, newtup, &desc);
	}
	capture_row(t, oldtup, newtup, desc, cache);
	return PointerGetDatum(NULL);
}

/* Turns every key of relid recorded so far into a deletion. */
static void
forget_table_keys(CsTable *t)
{
	HASH_SEQ_STATUS seq;
	CsKeyEntry *e;
	List	   *keys = NIL;
	ListCell   *lc;

	if (xact_keys == NULL)
		return;
	hash_seq_init(&seq, xact_keys);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if (e->relid == t->relid)
			keys = lappend(keys, e->key);
	}
	foreach(lc, keys)
		record_change(t, lfirst(lc), NULL);
}

/* cachesync.capture_truncate(): AFTER TRUNCATE FOR EACH STATEMENT */
Datum
cachesync_capture_truncate(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	CsTable    *t;
	CsTruncate *tr;
	MemoryContext old;
	bool		cache;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		elog(ERROR, "cachesync.capture_truncate() must be an AFTER TRUNCATE trigger");
	t = capture_target(td, &cache);
	if (t == NULL || !cache)
		return PointerGetDatum(NULL);
	forget_table_keys(t);
	if (t->changes)
	{
		cs_changes_record(t, "truncate", NULL, NULL, NULL);
		xact_changes = true;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	tr = palloc(sizeof(CsTruncate));
	tr->relid = t->relid;
	tr->subid = GetCurrentSubTransactionId();
	xact_truncates = lappend(xact_truncates, tr);
	MemoryContextSwitchTo(old);
	return PointerGetDatum(NULL);
}

/* Runs a utility statement through SPI. */
static void
spi_utility(const char *sql)
{
	if (SPI_execute(sql, false, 0) < 0)
		elog(ERROR, "could not run: %s", sql);
}

/* Returns the schema-qualified, quoted name of relid. */
static char *
qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}


/*
 * Creates the capture triggers on relid, or replaces them.  Row triggers of a
 * partitioned table reach every partition, but statement triggers do not:
 * each partition gets its own TRUNCATE trigger (and so do partitions added
 * later, by the cachesync_cover_new_partitions event trigger).  Called as
 * the extension's owner (EXECUTE on the trigger functions is not PUBLIC's).
 */
void
cs_capture_install(Oid relid)
{
	char	   *name = qualified_name(relid);
	ListCell   *lc;

	SPI_connect();
	spi_utility(psprintf("CREATE OR REPLACE TRIGGER cachesync_capture AFTER INSERT OR UPDATE OR DELETE ON %s "
						 "FOR EACH ROW EXECUTE FUNCTION cachesync.capture()", name));
	foreach(lc, find_all_inheritors(relid, NoLock, NULL))
		spi_utility(psprintf("CREATE OR REPLACE TRIGGER cachesync_truncate AFTER TRUNCATE ON %s "
							 "FOR EACH STATEMENT EXECUTE FUNCTION cachesync.capture_truncate()",
							 qualified_name(lfirst_oid(lc))));
	SPI_finish();
}

/* Drops the capture triggers of relid and its partitions. */
void
cs_capture_remove(Oid relid)
{
	ListCell   *lc;

	SPI_connect();
	spi_utility(psprintf("DROP TRIGGER IF EXISTS cachesync_capture ON %s", qualified_name(relid)));
	foreach(lc, find_all_inheritors(relid, NoLock, NULL))
		spi_utility(psprintf("DROP TRIGGER IF EXISTS cachesync_truncate ON %s",
							 qualified_name(lfirst_oid(lc))));
	SPI_finish();
}
