/*-------------------------------------------------------------------------
 *
 * registry.h
 *	  Registered tables: the rows of cachesync.registrations, resolved to
 *	  attribute numbers and cached per backend.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CACHESYNC_REGISTRY_H
#define CACHESYNC_REGISTRY_H

#include "access/attnum.h"
#include "datatype/timestamp.h"
#include "utils/relcache.h"

typedef enum CsMode
{
	CS_MODE_WRITE_THROUGH,
	CS_MODE_WRITE_AROUND,
	CS_MODE_ASYNC,
	CS_MODE_WRITE_BACK
} CsMode;

typedef enum CsFormat
{
	CS_FORMAT_JSON,
	CS_FORMAT_HASH
} CsFormat;

/* One registered table, as the capture and read paths need it. */
typedef struct CsTable
{
	Oid			relid;			/* hash key */
	CsMode		mode;
	CsFormat	format;
	int64		ttl_ms;			/* 0: no expiry */
	char	   *key_prefix;		/* the table's own prefix */
	bool		notify;
	bool		changes;
	int			nkeys;
	AttrNumber *key_attnums;	/* in key order */
	Oid		   *key_types;
	int32	   *key_typmods;
	bool		all_columns;	/* columns was NULL: every column is cached */
	int			ncolumns;		/* otherwise the cached columns, keys included */
	AttrNumber *column_attnums; /* in attribute order */
	char	   *broken;			/* why the registration no longer resolves */
	struct CsRowFormat *fmt;	/* built on first use by rowformat.c */
} CsTable;

/* columns of cachesync.registrations */
#define Anum_reg_rel			1
#define Anum_reg_mode			2
#define Anum_reg_key_columns	3
#define Anum_reg_columns		4
#define Anum_reg_format			5
#define Anum_reg_ttl			6
#define Anum_reg_key_prefix		7
#define Anum_reg_notify			8
#define Anum_reg_changes		9
#define Natts_reg				10

extern CsTable *cs_registry_lookup(Oid relid);
extern CsTable *cs_registry_lookup_rel(Relation rel);
extern MemoryContext cs_registry_context(void);
extern CsTable *cs_registry_match_key(const char *key, size_t len);
extern void cs_registry_foreach(void (*fn) (CsTable *t, void *arg), void *arg);
extern CsTable *cs_registry_get(Oid relid);
extern bool cs_column_is_cached(CsTable *t, AttrNumber att);
extern Oid	cs_registry_relid(void);
extern void cs_registry_invalidate(void);
extern void cs_registry_rename_column(Oid relid, const char *oldname,
									  const char *newname);

extern int64 cs_interval_ms(const Interval *iv);
extern bool cs_mode_parse(const char *name, CsMode *mode);
extern bool cs_format_parse(const char *name, CsFormat *format);

#endif							/* CACHESYNC_REGISTRY_H */
