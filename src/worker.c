/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The cachesync background worker: ships the durable queue to Redis
 *	  and heals keys whose push or invalidation could not be finished.
 *
 * One worker serves cachesync.database.  Each round, in this order:
 *   0. if Redis lost cachesync's data (restart without persistence,
 *      FLUSHALL), warm every table's hottest keys (warmup.c), then load
 *      every write_through and async table again;
 *   1. after start and after every Redis outage: heal the intent sets left
 *      by an earlier generation (a crash between a push and its commit
 *      record), and those this generation's backends asked for;
 *   2. ship the queue, cachesync.batch_size entries per transaction, until
 *      it is empty.
 * Then it sleeps on its latch, which committing writers set, for at most a
 * second (to notice COMMIT PREPARED and heal requests), or backs off up to
 * CS_MAX_BACKOFF_MS while Redis is down, logging the outage once.
 *
 * A queue batch is: read the next entries by ctid, draw a
 * populator version, read the current rows, write them fenced, delete the
 * entries, commit.  A Redis failure rolls the batch back, so no entry is
 * lost; replaying one twice is harmless (it writes the committed row).
 * On a standby the worker does not start (BgWorkerStart_RecoveryFinished).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "storage/itemptr.h"

#include "cachesync.h"
#include "events.h"
#include "hotkeys.h"
#include "keys.h"
#include "keyspace.h"
#include "queue.h"
#include "redis.h"
#include "registry.h"
#include "shmem.h"
#include "stats.h"
#include "sync.h"
#include "version.h"
#include "worker.h"

#define CS_IDLE_WAIT_MS 1000
#define CS_MAX_BACKOFF_MS 5000

PGDLLEXPORT void cachesync_worker_main(Datum arg);

/* outcome of one unit of work */
typedef enum CsWork
{
	CS_WORK_IDLE,				/* nothing to do */
	CS_WORK_DONE,				/* did something: look again at once */
	CS_WORK_REDIS_DOWN			/* Redis failed: back off */
} CsWork;

static bool redis_down = false;
static bool healed_since_connect = false;

/*
 * How often the worker checks, without a reason, that Redis still holds its
 * data (load_if_empty) and that the change outbox is empty: a busy worker
 * runs a round per few commits, and each check costs a transaction and a
 * Redis round trip.  After a reconnect or a failure the check comes at once.
 */
#define CS_RECHECK_MS 1000

static uint64 healed_conn = 0;	/* cs_redis_connection_count() at the last full heal */
static TimestampTz last_epoch_check = 0;
static uint64 epoch_checked_conn = 0;	/* cs_redis_connection_count() then */
static TimestampTz last_outbox_read = 0;
static bool outbox_maybe_full = true;	/* the last read found entries or failed */

/*
 * When the worker last read the queue from its start.  In between it
 * resumes where it stopped (next_tid), or earlier when a commit reports
 * that it wrote to a lower block (cs_queue_take_low_block): the start of a
 * busy queue is mostly dead rows the worker deleted, and rereading them
 * every round cost a quarter of its CPU.
 */
static TimestampTz last_full_pass = 0;

/*
 * Registers a static worker of cachesync.database that starts once
 * recovery is over and restarts 5 s after it exits; called from _PG_init
 * while preloading.
 */
void
cs_register_bgworker(const char *function_name, const char *name)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "cachesync");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function_name);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", name);
	RegisterBackgroundWorker(&worker);
}

/* Registers the worker. */
void
cs_worker_register(void)
{
	cs_register_bgworker("cachesync_worker_main", "cachesync worker");
}

/* Notes a Redis failure: logged once per outage. */
static CsWork
redis_failed(const char *what)
{
	if (!redis_down)
		ereport(LOG,
				(errmsg("cachesync worker: Redis at %s is unreachable; retrying",
						cs_redis_server()),
				 errdetail_internal("%s: %s", what, cs_redis_last_error())));
	redis_down = true;
	healed_since_connect = false;
	last_epoch_check = 0;
	last_full_pass = 0;
	outbox_maybe_full = true;
	cs_note_redis_down();
	return CS_WORK_REDIS_DOWN;
}

/* Notes that Redis answered again. */
static void
redis_ok(void)
{
	cs_note_redis_up();
	if (redis_down)
		ereport(LOG,
				(errmsg("cachesync worker: Redis at %s is reachable again",
						cs_redis_server())));
	redis_down = false;
}

/* Returns true when the extension exists in this database. */
static bool
extension_installed(void)
{
	Oid			nsp = get_namespace_oid("cachesync", true);

	return OidIsValid(nsp) && OidIsValid(get_relname_relid("queue", nsp));
}

/* Keys of one table gathered for syncing. */
typedef struct TableKeys
{
	Oid			relid;
	bool		truncated;
	List	   *keys;
	HTAB	   *seen;
} TableKeys;

/* Returns the entry of relid in *tables, adding it. */
static TableKeys *
table_keys(List **tables, Oid relid)
{
	ListCell   *lc;
	TableKeys  *tk;

	foreach(lc, *tables)
	{
		tk = lfirst(lc);
		if (tk->relid == relid)
			return tk;
	}
	tk = palloc0(sizeof(TableKeys));
	tk->relid = relid;
	tk->seen = cs_keyset_create("cachesync batch keys", 64, sizeof(char *),
								CurrentMemoryContext);
	*tables = lappend(*tables, tk);
	return tk;
}

/* Adds key (NULL: the whole table) to its table's entry, once. */
static void
add_key(List **tables, Oid relid, char *key)
{
	TableKeys  *tk = table_keys(tables, relid);
	bool		found;

	if (key == NULL)
	{
		tk->truncated = true;
		return;
	}
	hash_search(tk->seen, &key, HASH_ENTER, &found);
	if (!found)
		tk->keys = lappend(tk->keys, key);
}

/*
 * Syncs the gathered keys of every table with one populator version drawn
 * now, before any row is read.  Returns false when Redis failed.
 */
static bool
sync_tables(List *tables)
{
	uint64		version = cs_version_for_read();
	ListCell   *lc;

	foreach(lc, tables)
	{
		TableKeys  *tk = lfirst(lc);
		CsTable    *t = cs_registry_lookup(tk->relid);
		CsSyncResult r = {0};

		if (t == NULL || t->broken)
			continue;			/* unregistered since: nothing to sync */
		if (tk->truncated && !cs_sync_prefix(t, version, &r))
			return false;
		if (tk->keys != NIL && !cs_sync_keys(t, tk->keys, version, &r))
			return false;
		cs_stats_add(t->relid, CS_STAT_PUSHED, r.pushed);
		cs_stats_add(t->relid, CS_STAT_INVALIDATED, r.removed);
	}
	return true;
}

/*
 * Runs the SELECT sql with args through *plan, prepared and kept on first
 * use (a worker's plan lives as long as the process); returns the number of
 * rows, in SPI_tuptable.
 */
uint64
cs_worker_select(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes, Datum *args)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "could not prepare \"%s\"", sql);
		*plan = p;
	}
	if (SPI_execute_plan(*plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not run \"%s\"", sql);
	return SPI_processed;
}

/* where the next batch starts: the worker walks the queue by ctid */
static ItemPointerData next_tid;

/* Reads up to batch_size entries after next_tid; returns how many. */
static uint64
read_batch(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[2] = {TIDOID, INT4OID};
	Datum		args[2] = {PointerGetDatum(&next_tid), Int32GetDatum(cachesync_batch_size)};

	/*
	 * A TID range scan in physical order, which is about arrival order.  No
	 * FOR UPDATE: this worker is the only one that deletes queue rows.
	 */
	return cs_worker_select(&plan, "SELECT ctid, rel, key FROM cachesync.queue "
							"WHERE ctid > $1 LIMIT $2", 2, argtypes, args);
}

/* Ships one batch of the queue.  Runs inside a transaction, SPI connected. */
static CsWork
ship_batch(void)
{
	List	   *tables = NIL;
	ListCell   *lc;
	ItemPointerData *tids;
	uint64		n = read_batch();

	if (n == 0)
		return CS_WORK_IDLE;
	tids = palloc(sizeof(ItemPointerData) * n);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 1, &isnull)),
						&tids[i]);
		add_key(&tables, DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull)),
				SPI_getvalue(tup, desc, 3));
	}
	ItemPointerCopy(&tids[n - 1], &next_tid);
	if (!sync_tables(tables))
	{
		ItemPointerSet(&next_tid, 0, 0);
		return redis_failed("shipping the queue");
	}
	redis_ok();
	foreach(lc, tables)
		cs_notify_keys(((TableKeys *) lfirst(lc))->relid, ((TableKeys *) lfirst(lc))->keys,
					   ((TableKeys *) lfirst(lc))->truncated);
	cs_delete_tids("queue", tids, n);

	/*
	 * A short batch reached the end of the queue: entries committed since
	 * then set the latch, so the worker waits on it rather than opening
	 * another transaction to find the queue empty.
	 */
	return n < (uint64) cachesync_batch_size ? CS_WORK_IDLE : CS_WORK_DONE;
}

/*
 * Ships one batch of the change outbox (events.c).  In a transaction.  After
 * a short batch it waits for the next commit's note rather than reading the
 * outbox again to find it empty.
 */
static CsWork
ship_changes(void)
{
	CsChangesShipped r = cs_changes_ship();

	last_outbox_read = GetCurrentTimestamp();
	if (r == CS_CHANGES_FAILED)
		return redis_failed("appending to change streams");
	outbox_maybe_full = (r == CS_CHANGES_MORE);
	if (r != CS_CHANGES_NONE)
		redis_ok();
	return r == CS_CHANGES_MORE ? CS_WORK_DONE : CS_WORK_IDLE;
}

/* Returns true when the intent set key belongs to an earlier generation. */
static bool
intent_is_old(const char *key, int *slot)
{
	const char *p = strrchr(key, ':');
	const char *g;
	uint64		gen;

	*slot = p ? atoi(p + 1) : -1;
	g = key + strlen(cachesync_key_prefix) + strlen(CS_INTERNAL_PREFIX) + strlen("intent:");
	gen = strtou64(g, NULL, 10);
	return gen != cs_shared->generation;
}

/* Syncs the members of one intent set, grouped by table. */
static bool
heal_members(const char *ikey)
{
	CsReply    *members;
	CsPipeline *p = cs_pipeline_create();
	CsReply   **r;
	List	   *tables = NIL;

	cs_pipeline_append_strs(p, 2, (const char *[]) {"SMEMBERS", ikey});
	if (!cs_redis_try_run(p, &r))
		return false;
	members = r[0];
	if (members->type != CS_REPLY_ARRAY)
		return true;
	for (size_t i = 0; i < members->nelem; i++)
	{
		CsTable    *t = cs_registry_match_key(members->elem[i]->str, members->elem[i]->len);

		if (t)
			add_key(&tables, t->relid, members->elem[i]->str);
	}
	return sync_tables(tables);
}

/*
 * cs_keyspace_scan callback of a full heal: syncs every intent set of one
 * SCAN page, deletes those of earlier generations (their processes are
 * gone) and clears the requests of this generation's.
 */
static bool
heal_page(List *keys, void *arg)
{
	ListCell   *lc;

	foreach(lc, keys)
	{
		char	   *ikey = lfirst(lc);
		int			slot;
		bool		old = intent_is_old(ikey, &slot);
		uint32		requested = 0;

		if (!old && (slot < 0 || slot >= cs_shared->nslots))
			continue;
		if (!old)
			requested = pg_atomic_read_u32(&cs_shared->slots[slot].heal);
		if (!heal_members(ikey))
			return false;
		if (old)
		{
			CsPipeline *p = cs_pipeline_create();
			CsReply   **r;

			cs_pipeline_append_strs(p, 2, (const char *[]) {"DEL", ikey});
			if (!cs_redis_try_run(p, &r))
				return false;
		}
		else if (requested > 0)
			pg_atomic_compare_exchange_u32(&cs_shared->slots[slot].heal, &requested, 0);
	}
	return true;
}

/* Returns true when some backend of this generation asked for healing. */
static bool
heal_requested(void)
{
	for (int i = 0; i < cs_shared->nslots; i++)
	{
		if (pg_atomic_read_u32(&cs_shared->slots[i].heal) > 0)
			return true;
	}
	return false;
}

/* Heals the intent sets of this generation whose owners asked. */
static bool
heal_requested_slots(void)
{
	for (int i = 0; i < cs_shared->nslots; i++)
	{
		uint32		requested = pg_atomic_read_u32(&cs_shared->slots[i].heal);
		char	   *ikey;

		if (requested == 0)
			continue;
		ikey = cs_intent_key(cs_shared->generation, i);
		if (!heal_members(ikey))
			return false;
		pg_atomic_compare_exchange_u32(&cs_shared->slots[i].heal, &requested, 0);
	}
	return true;
}

/*
 * Heals intent sets: after a (re)connect every one (SCAN), including those
 * an earlier generation left behind after a crash; otherwise only those
 * whose owner asked (named directly, no SCAN).  Runs inside a transaction,
 * SPI connected.
 */
static CsWork
heal(void)
{
	char	   *pattern;

	if (healed_since_connect)
	{
		if (!heal_requested())
			return CS_WORK_IDLE;
		if (!heal_requested_slots())
			return redis_failed("healing unfinished pushes");
		return CS_WORK_DONE;
	}
	pattern = psprintf("%s%sintent:", cachesync_key_prefix, CS_INTERNAL_PREFIX);
	if (!cs_keyspace_scan(pattern, heal_page, NULL))
		return redis_failed("healing unfinished pushes");
	redis_ok();
	healed_since_connect = true;
	healed_conn = cs_redis_connection_count();
	return CS_WORK_IDLE;
}

/* Returns the name of the marker that tells Redis still holds our data. */
static char *
epoch_key(void)
{
	return psprintf("%s%sepoch", cachesync_key_prefix, CS_INTERNAL_PREFIX);
}

typedef struct LoadState
{
	bool		failed;
	int			tables;
	int64		rows;
	List	   *covered;		/* loaded tables whose queue entries it covers */
} LoadState;

/*
 * cs_registry_foreach callback: loads one write_through, async or
 * write_back table (the cache of a write_back table is kept like a
 * write_through one's).
 */
static void
load_table(CsTable *t, void *arg)
{
	LoadState  *st = arg;
	CsSyncResult r = {0};
	CsSyncResult orphans = {0};

	if (st->failed || t->broken ||
		t->mode == CS_MODE_WRITE_AROUND)
		return;
	/*
	 * The rows, then a sweep of the keys they did not write: a Redis
	 * restarted from an older snapshot holds keys of rows deleted since,
	 * which nothing else would remove.  Not for a write_back table: its
	 * keys may hold application writes not applied yet (no version), which
	 * the sweep would delete; their settles write them in the end.
	 */
	if (!cs_sync_table(t, &r) ||
		(t->mode != CS_MODE_WRITE_BACK && !cs_sync_orphans(t, r.first_version, &orphans)))
		st->failed = true;
	cs_stats_add(t->relid, CS_STAT_PUSHED, r.pushed);
	cs_stats_add(t->relid, CS_STAT_INVALIDATED, orphans.removed);
	st->tables++;
	st->rows += r.pushed;
	/* a table that notifies still ships its entries: they publish them */
	if (!t->notify)
		st->covered = lappend_oid(st->covered, t->relid);
}

/*
 * After a load: deletes the queue entries of the covered tables that
 * committed before the load began (visible to before).  Every page of the
 * load read its rows with a snapshot taken later, so those changes are in
 * Redis already (or a later commit's entry or push supersedes them), and
 * the sweep removed the keys of rows that are gone: shipping them again
 * would only rewrite the same rows.
 */
static void
drop_covered_entries(List *covered, Snapshot before)
{
	Oid			argtypes[1] = {OIDARRAYOID};
	Datum		args[1];
	Datum	   *oids;
	ListCell   *lc;
	SPIPlanPtr	plan;
	ItemPointerData *tids;
	int			i = 0;

	if (covered == NIL)
		return;
	oids = palloc(sizeof(Datum) * list_length(covered));
	foreach(lc, covered)
		oids[i++] = ObjectIdGetDatum(lfirst_oid(lc));
	args[0] = PointerGetDatum(construct_array(oids, i, OIDOID, sizeof(Oid), true, TYPALIGN_INT));
	plan = SPI_prepare("SELECT ctid FROM cachesync.queue WHERE rel = ANY($1)", 1, argtypes);
	if (plan == NULL ||
		SPI_execute_snapshot(plan, args, NULL, before, InvalidSnapshot, true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read cachesync.queue");
	tids = palloc(sizeof(ItemPointerData) * Max(SPI_processed, 1));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;

		ItemPointerCopy((ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[r],
																	SPI_tuptable->tupdesc, 1, &isnull)),
						&tids[r]);
	}
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("cachesync worker: the load covered " UINT64_FORMAT " queued changes; dropping them unshipped",
						(uint64) SPI_processed)));
	cs_delete_tids("queue", tids, (int) SPI_processed);
}

/* Returns the run_id line value of an INFO server reply, or "". */
static char *
run_id_of(const CsReply *info)
{
	const char *p;

	if (info->type != CS_REPLY_STRING || (p = strstr(info->str, "run_id:")) == NULL)
		return "";
	p += strlen("run_id:");
	return pnstrdup(p, strcspn(p, "\r\n"));
}

/*
 * When Redis lost cachesync's data (restarted, even from an older snapshot,
 * or flushed), loads every write_through and async table again, so the
 * cache converges without manual action; write_around tables fill on
 * reads.  The marker holds the run_id of the Redis it was loaded into and
 * is set only once every table is loaded, so an interrupted load starts
 * over.
 */
static CsWork
load_if_empty(void)
{
	CsPipeline *p = cs_pipeline_create();
	CsReply   **r;
	LoadState	st = {0};
	char	   *run_id;
	Snapshot	before;

	cs_pipeline_append_strs(p, 2, (const char *[]) {"INFO", "server"});
	cs_pipeline_append_strs(p, 2, (const char *[]) {"GET", epoch_key()});
	if (!cs_redis_try_run(p, &r))
		return redis_failed("checking whether Redis lost its data");
	run_id = run_id_of(r[0]);
	if (r[1]->type == CS_REPLY_STRING && strcmp(r[1]->str, run_id) == 0)
		return CS_WORK_IDLE;

	ereport(LOG,
			(errmsg("cachesync worker: Redis at %s %s; loading the write_through and async tables",
					cs_redis_server(),
					r[1]->type == CS_REPLY_STRING ? "restarted" : "holds no cachesync data")));
	/* queue entries visible now are covered by the load (drop_covered_entries) */
	before = RegisterSnapshot(GetLatestSnapshot());
	if (!cs_warmup())
	{
		UnregisterSnapshot(before);
		return redis_failed("warming hot keys");
	}
	cs_registry_foreach(load_table, &st);
	if (st.failed)
	{
		UnregisterSnapshot(before);
		return redis_failed("loading tables into Redis");
	}
	cs_pipeline_reset(p);
	cs_pipeline_append_strs(p, 3, (const char *[]) {"SET", epoch_key(), run_id});
	if (!cs_redis_try_run(p, &r))
	{
		UnregisterSnapshot(before);
		return redis_failed("marking Redis as loaded");
	}
	drop_covered_entries(st.covered, before);
	UnregisterSnapshot(before);
	redis_ok();
	ereport(LOG,
			(errmsg("cachesync worker: loaded " INT64_FORMAT " rows of %d tables into Redis",
					st.rows, st.tables)));
	return CS_WORK_DONE;
}

/*
 * Runs fn(arg) in its own transaction with SPI connected, a snapshot and
 * search_path pinned; commits when it returns true, else rolls back.  Does
 * nothing (returns false) while the extension is not installed.  An ERROR
 * is logged under the worker's name and rolled back; returns false then.
 * Shared by the background workers (this one and the write-back worker).
 */
bool
cs_worker_xact(bool (*fn) (void *arg), void *arg, const char *activity)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool ok = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		int			nest;

		SPI_connect();
		nest = cs_pin_search_path();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		ok = extension_installed() && fn(arg);
		PopActiveSnapshot();
		cs_unpin_search_path(nest);
		SPI_finish();
		if (ok)
			CommitTransactionCommand();
		else
			AbortCurrentTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		ereport(LOG,
				(errmsg("%s: %s failed: %s", MyBgworkerEntry->bgw_type, activity,
						edata->message)));
		FreeErrorData(edata);
		RESUME_INTERRUPTS();
		ok = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(cxt);
	return ok;
}

/* a worker step and what it returned (in_transaction) */
typedef struct WorkStep
{
	CsWork		(*fn) (void);
	bool		ran;			/* false: the extension is not installed */
	CsWork		result;
} WorkStep;

/* cs_worker_xact callback: runs a step; rolls back when Redis failed. */
static bool
run_step(void *arg)
{
	WorkStep   *step = arg;

	step->ran = true;
	step->result = step->fn();
	return step->result != CS_WORK_REDIS_DOWN;
}

/*
 * Runs fn in its own transaction.  Redis failing in it, or an ERROR, rolls
 * it back and returns CS_WORK_REDIS_DOWN (an ERROR backs off the same way).
 */
static CsWork
in_transaction(CsWork (*fn) (void), const char *activity)
{
	WorkStep	step = {fn, false, CS_WORK_REDIS_DOWN};

	if (!cs_worker_xact(run_step, &step, activity))
		return step.ran ? CS_WORK_REDIS_DOWN : CS_WORK_IDLE;
	return step.result;
}

/*
 * Runs one round: reload an empty Redis, heal, then ship the queue until a
 * batch comes back short, then the change outbox.
 */
static CsWork
round_of_work(void)
{
	CsWork		w = CS_WORK_IDLE;
	CsWork		s;
	BlockNumber low;
	TimestampTz now = GetCurrentTimestamp();

	if (epoch_checked_conn != cs_redis_connection_count() ||
		TimestampDifferenceExceeds(last_epoch_check, now, CS_RECHECK_MS))
	{
		w = in_transaction(load_if_empty, "loading an empty Redis");
		if (w == CS_WORK_REDIS_DOWN)
			return w;
		last_epoch_check = now;
		epoch_checked_conn = cs_redis_connection_count();
	}
	/* healing needs a transaction only after a reconnect or when asked */
	if (healed_conn != cs_redis_connection_count())
		healed_since_connect = false;
	if (!healed_since_connect || heal_requested())
	{
		w = in_transaction(heal, "healing");
		if (w == CS_WORK_REDIS_DOWN)
			return w;
	}
	/* where this round's pass over the queue starts */
	low = cs_queue_take_low_block();
	if (TimestampDifferenceExceeds(last_full_pass, now, CS_RECHECK_MS))
	{
		/* now and then from the start: COMMIT PREPARED reports nothing */
		ItemPointerSet(&next_tid, 0, 0);
		last_full_pass = now;
	}
	else if (low != InvalidBlockNumber &&
			 low <= ItemPointerGetBlockNumberNoCheck(&next_tid))
		ItemPointerSet(&next_tid, low, 0);

	do
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		s = in_transaction(ship_batch, "shipping the queue");
	} while (s == CS_WORK_DONE);
	if (s == CS_WORK_REDIS_DOWN)
		return s;

	/* the outbox: when a commit wrote to it, it held entries, or now and then */
	if (cs_changes_take_pending() || outbox_maybe_full ||
		TimestampDifferenceExceeds(last_outbox_read, now, CS_RECHECK_MS))
	{
		do
		{
			CHECK_FOR_INTERRUPTS();
			s = in_transaction(ship_changes, "shipping change streams");
		} while (s == CS_WORK_DONE);
		if (s == CS_WORK_REDIS_DOWN)
			return s;
	}
	return CS_WORK_IDLE;
}

/* Unregisters the worker's latch when it exits. */
static void
worker_exit(int code, Datum arg)
{
	LWLockAcquire(cs_shared->lock, LW_EXCLUSIVE);
	if (cs_shared->worker_pid == MyProcPid)
	{
		cs_shared->worker_pid = 0;
		cs_shared->worker_latch = NULL;
	}
	LWLockRelease(cs_shared->lock);
}

/* Entry point of the background worker. */
void
cachesync_worker_main(Datum arg)
{
	int			backoff = 100;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(cachesync_database, NULL, 0);
	/*
	 * The worker's commits need no flush: a queue entry whose deletion is
	 * lost in a crash is shipped again, which writes the same committed row.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	LWLockAcquire(cs_shared->lock, LW_EXCLUSIVE);
	cs_shared->worker_pid = MyProcPid;
	cs_shared->worker_latch = MyLatch;
	LWLockRelease(cs_shared->lock);
	before_shmem_exit(worker_exit, (Datum) 0);
	ereport(LOG, (errmsg("cachesync worker started for database \"%s\"", cachesync_database)));

	for (;;)
	{
		CsWork		w;
		long		wait;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		w = round_of_work();
		cs_hot_persist_if_due();
		/*
		 * Publish this process's table statistics (at most once a second), as
		 * a backend does when it goes idle: autovacuum counts the dead rows of
		 * the queue and the outbox, which the worker deletes, from them.
		 */
		pgstat_report_stat(false);
		if (w == CS_WORK_REDIS_DOWN)
		{
			wait = backoff;
			backoff = Min(backoff * 2, CS_MAX_BACKOFF_MS);
		}
		else
		{
			backoff = 100;
			wait = (w == CS_WORK_DONE) ? 0 : CS_IDLE_WAIT_MS;
			/* while change entries flow, poll for them (events.c) */
			if (wait > 0 && cs_changes_flowing())
				wait = cs_changes_poll_ms();
		}
		if (wait > 0)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 wait, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
