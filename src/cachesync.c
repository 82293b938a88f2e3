/*-------------------------------------------------------------------------
 *
 * cachesync.c
 *	  Library entry point: settings, and the check that the library was
 *	  loaded through shared_preload_libraries.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/syscache.h"
#include "utils/guc.h"

#include "cachesync.h"
#include "shmem.h"
#include "worker.h"
#include "writeback.h"

PG_MODULE_MAGIC;

/* true in every process forked from a postmaster that preloaded us */
bool		cachesync_preloaded = false;

void		_PG_init(void);

/*
 * Defines the settings always (so SHOW works), and everything that needs
 * the postmaster only when preloaded.
 */
void
_PG_init(void)
{
	cachesync_define_gucs();

	if (!process_shared_preload_libraries_in_progress)
		return;

	cachesync_preloaded = true;
	cs_shmem_init_hooks();
	cs_worker_register();
	cs_writeback_register();
	cs_ddl_init();
}

/*
 * Fails unless the library was preloaded: capture, the worker and shared
 * state only exist then.
 */
void
cachesync_require_preload(void)
{
	if (!cachesync_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cachesync must be loaded via shared_preload_libraries"),
				 errhint("Add cachesync to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * Pins search_path to pg_catalog for the SQL cachesync runs on its own
 * behalf (often as a superuser): the caller's path must not pick the
 * functions and operators it resolves.  Returns the GUC nest level to pass
 * to cs_unpin_search_path(); an ERROR in between restores it too.
 */
int
cs_pin_search_path(void)
{
	int			nest = NewGUCNestLevel();

	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

/* Restores the search_path cs_pin_search_path() replaced. */
void
cs_unpin_search_path(int nest)
{
	AtEOXact_GUC(true, nest);
}

/* Returns the owner of relid. */
Oid
cs_rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}
