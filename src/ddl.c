/*-------------------------------------------------------------------------
 *
 * ddl.c
 *	  Keeping registrations valid across ALTER TABLE: a renamed key or
 *	  cached column is renamed in the registration too, and dropping one is
 *	  refused with a clear error (instead of every later write failing).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "cachesync.h"
#include "registry.h"

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* Returns true when attnum is a key or explicitly cached column of t. */
static bool
column_is_registered(CsTable *t, AttrNumber attnum)
{
	for (int i = 0; i < t->nkeys; i++)
	{
		if (t->key_attnums[i] == attnum)
			return true;
	}
	for (int i = 0; !t->all_columns && i < t->ncolumns; i++)
	{
		if (t->column_attnums[i] == attnum)
			return true;
	}
	return false;
}

/* Returns the registration of the table rv names, or NULL. */
static CsTable *
registered(RangeVar *rv)
{
	Oid			relid = rv ? RangeVarGetRelid(rv, NoLock, true) : InvalidOid;

	return OidIsValid(relid) ? cs_registry_lookup(relid) : NULL;
}

/* Refuses ALTER TABLE ... DROP COLUMN of a key or cached column. */
static void
check_drop_columns(AlterTableStmt *stmt)
{
	CsTable    *t = registered(stmt->relation);
	ListCell   *lc;

	if (t == NULL || t->broken)
		return;
	foreach(lc, stmt->cmds)
	{
		AlterTableCmd *cmd = lfirst(lc);
		AttrNumber	attnum;

		if (cmd->subtype != AT_DropColumn || cmd->name == NULL)
			continue;
		attnum = get_attnum(t->relid, cmd->name);
		if (attnum > 0 && column_is_registered(t, attnum))
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("cannot drop column \"%s\" of table \"%s\": cachesync caches it",
							cmd->name, get_rel_name(t->relid)),
					 errhint("Register the table again without it (or unregister it) first.")));
	}
}

/*
 * ProcessUtility hook: before ALTER TABLE ... DROP COLUMN, refuse to drop
 * a registered column; after ALTER TABLE ... RENAME COLUMN, rename it in
 * the registration.
 */
static void
cs_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				  ProcessUtilityContext context, ParamListInfo params,
				  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *node = pstmt->utilityStmt;
	RenameStmt *rename = NULL;
	Oid			renamed_rel = InvalidOid;

	if (IsA(node, AlterTableStmt) && OidIsValid(cs_registry_relid()))
		check_drop_columns((AlterTableStmt *) node);
	if (IsA(node, RenameStmt) && ((RenameStmt *) node)->renameType == OBJECT_COLUMN &&
		OidIsValid(cs_registry_relid()))
	{
		CsTable    *t = registered(((RenameStmt *) node)->relation);

		if (t != NULL)
		{
			rename = (RenameStmt *) copyObject(node);
			renamed_rel = t->relid;
		}
	}

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
							queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	if (rename != NULL)
		cs_registry_rename_column(renamed_rel, rename->subname, rename->newname);
}

/* Installs the hook; called from _PG_init while preloading. */
void
cs_ddl_init(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = cs_ProcessUtility;
}
