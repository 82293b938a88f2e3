/*-------------------------------------------------------------------------
 *
 * rowformat.c
 *	  Keys and values of rows (see rowformat.h).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#include "cachesync.h"
#include "keys.h"
#include "rowformat.h"

/*
 * How row_to_json writes a column's value (json.c's json_categorize_type),
 * for the types whose JSON row_json writes itself.
 */
typedef enum CsJsonKind
{
	CS_JSON_OTHER,				/* anything else: row_to_json writes the row */
	CS_JSON_BOOL,				/* true or false */
	CS_JSON_NUMBER,				/* the text output, bare if a valid JSON number */
	CS_JSON_STRING,				/* the text output as a JSON string */
	CS_JSON_DATE,				/* JsonEncodeDateTime of a date */
	CS_JSON_TIMESTAMP,			/* ... of a timestamp */
	CS_JSON_TIMESTAMPTZ			/* ... of a timestamptz */
} CsJsonKind;

/* What formatting a table's rows needs, built once per registry load. */
typedef struct CsRowFormat
{
	int			natts;			/* of the table */
	FmgrInfo   *out;			/* output function per attribute, by attnum - 1 */
	bool	   *cached;			/* whether each attribute is cached */
	TupleDesc	json_desc;		/* blessed desc of the cached columns, or NULL for all */
	bool		json_direct;	/* every cached column's kind is not CS_JSON_OTHER */
	CsJsonKind *json_kind;		/* per attribute */
	char	  **json_name;		/* per cached attribute: its name as a JSON string */
} CsRowFormat;

/*
 * Returns how row_to_json writes a value of type typid, if it is one whose
 * JSON row_json writes itself: a built-in base type that json.c writes as a
 * boolean, a number, a date or timestamp in ISO 8601, or its text output as
 * a string (not an array, a composite, json or jsonb, nor a type with a
 * cast to json, which only a type that is not built-in may have).
 */
static CsJsonKind
json_kind(Oid typid)
{
	switch (typid)
	{
		case BOOLOID:
			return CS_JSON_BOOL;
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			return CS_JSON_NUMBER;
		case DATEOID:
			return CS_JSON_DATE;
		case TIMESTAMPOID:
			return CS_JSON_TIMESTAMP;
		case TIMESTAMPTZOID:
			return CS_JSON_TIMESTAMPTZ;
		case JSONOID:
		case JSONBOID:
			return CS_JSON_OTHER;
		default:
			break;
	}
	if (typid >= FirstNormalObjectId || get_typtype(typid) != TYPTYPE_BASE ||
		OidIsValid(get_element_type(typid)) || type_is_rowtype(typid) ||
		typid == ANYARRAYOID || typid == ANYCOMPATIBLEARRAYOID || typid == RECORDARRAYOID)
		return CS_JSON_OTHER;
	return CS_JSON_STRING;
}

/* Returns the row format of t, building it on first use. */
static CsRowFormat *
row_format(CsTable *t, TupleDesc desc)
{
	MemoryContext old;
	CsRowFormat *f;
	int			ncached = 0;

	if (t->fmt != NULL && t->fmt->natts == desc->natts)
		return t->fmt;

	old = MemoryContextSwitchTo(cs_registry_context());
	f = palloc0(sizeof(CsRowFormat));
	f->natts = desc->natts;
	f->out = palloc0(sizeof(FmgrInfo) * Max(desc->natts, 1));
	f->cached = palloc0(sizeof(bool) * Max(desc->natts, 1));
	f->json_kind = palloc0(sizeof(CsJsonKind) * Max(desc->natts, 1));
	f->json_name = palloc0(sizeof(char *) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Oid			func;
		bool		varlena;

		if (att->attisdropped)
			continue;
		getTypeOutputInfo(att->atttypid, &func, &varlena);
		fmgr_info_cxt(func, &f->out[i], CurrentMemoryContext);
		f->cached[i] = t->all_columns;
	}
	for (int c = 0; c < t->ncolumns; c++)
		f->cached[t->column_attnums[c] - 1] = true;
	f->json_direct = true;
	for (int i = 0; i < desc->natts; i++)
	{
		StringInfoData name;

		if (!f->cached[i])
			continue;
		f->json_kind[i] = json_kind(TupleDescAttr(desc, i)->atttypid);
		f->json_direct = f->json_direct && f->json_kind[i] != CS_JSON_OTHER;
		initStringInfo(&name);
		escape_json(&name, NameStr(TupleDescAttr(desc, i)->attname));
		appendStringInfoChar(&name, ':');
		f->json_name[i] = name.data;
	}
	if (!t->all_columns)
	{
		f->json_desc = CreateTemplateTupleDesc(t->ncolumns);
		for (int i = 0; i < desc->natts; i++)
		{
			if (f->cached[i])
				TupleDescCopyEntry(f->json_desc, ++ncached, desc, i + 1);
		}
		f->json_desc = BlessTupleDesc(f->json_desc);
	}
	MemoryContextSwitchTo(old);
	t->fmt = f;
	return f;
}

/* Returns the text output of attribute attnum of tuple. */
static char *
attr_text(CsRowFormat *f, HeapTuple tuple, TupleDesc desc, AttrNumber attnum,
		  bool *isnull)
{
	Datum		d = heap_getattr(tuple, attnum, desc, isnull);

	return *isnull ? NULL : OutputFunctionCall(&f->out[attnum - 1], d);
}

/* Returns the full Redis key of the row. */
char *
cs_row_key(CsTable *t, HeapTuple tuple, TupleDesc desc)
{
	CsRowFormat *f = row_format(t, desc);
	StringInfoData buf;

	initStringInfo(&buf);
	cs_key_start(&buf, t);
	for (int i = 0; i < t->nkeys; i++)
	{
		bool		isnull;
		char	   *v = attr_text(f, tuple, desc, t->key_attnums[i], &isnull);

		if (i > 0)
			appendStringInfoChar(&buf, ':');
		if (!isnull)
			cs_key_append_part(&buf, v, strlen(v));
	}
	return buf.data;
}

/*
 * Returns row_to_json of the cached columns: written here, byte for byte as
 * json.c's composite_to_json does, when every cached column's type is one
 * json_kind knows (regress: rowformat); otherwise by row_to_json.
 */
static text *
row_json(CsTable *t, CsRowFormat *f, HeapTuple tuple, TupleDesc desc)
{
	Datum		row;

	if (f->json_direct)
	{
		StringInfoData buf;
		bool		sep = false;

		initStringInfo(&buf);
		appendStringInfoSpaces(&buf, VARHDRSZ);
		appendStringInfoChar(&buf, '{');
		for (int i = 0; i < desc->natts; i++)
		{
			bool		isnull;
			Datum		d;
			char	   *s;

			if (!f->cached[i])
				continue;
			if (sep)
				appendStringInfoChar(&buf, ',');
			sep = true;
			appendStringInfoString(&buf, f->json_name[i]);
			d = heap_getattr(tuple, i + 1, desc, &isnull);
			if (isnull)
			{
				appendStringInfoString(&buf, "null");
				continue;
			}
			switch (f->json_kind[i])
			{
				case CS_JSON_BOOL:
					appendStringInfoString(&buf, DatumGetBool(d) ? "true" : "false");
					break;
				case CS_JSON_NUMBER:
					s = OutputFunctionCall(&f->out[i], d);
					if (IsValidJsonNumber(s, strlen(s)))
						appendStringInfoString(&buf, s);
					else
						escape_json(&buf, s);
					pfree(s);
					break;
				case CS_JSON_DATE:
				case CS_JSON_TIMESTAMP:
				case CS_JSON_TIMESTAMPTZ:
					{
						char		dt[MAXDATELEN + 1];

						JsonEncodeDateTime(dt, d,
										   f->json_kind[i] == CS_JSON_DATE ? DATEOID :
										   f->json_kind[i] == CS_JSON_TIMESTAMP ? TIMESTAMPOID :
										   TIMESTAMPTZOID, NULL);
						appendStringInfo(&buf, "\"%s\"", dt);
					}
					break;
				default:
					s = OutputFunctionCall(&f->out[i], d);
					escape_json(&buf, s);
					pfree(s);
					break;
			}
		}
		appendStringInfoChar(&buf, '}');
		SET_VARSIZE(buf.data, buf.len);
		return (text *) buf.data;
	}
	if (f->json_desc == NULL)
		row = heap_copy_tuple_as_datum(tuple, desc);
	else
	{
		Datum	   *values = palloc(sizeof(Datum) * f->json_desc->natts);
		bool	   *nulls = palloc(sizeof(bool) * f->json_desc->natts);
		int			n = 0;

		for (int i = 0; i < desc->natts; i++)
		{
			if (f->cached[i])
			{
				values[n] = heap_getattr(tuple, i + 1, desc, &nulls[n]);
				n++;
			}
		}
		row = heap_copy_tuple_as_datum(heap_form_tuple(f->json_desc, values, nulls),
									   f->json_desc);
	}
	return DatumGetTextPP(DirectFunctionCall1(row_to_json, row));
}

/* Returns row_to_json of the row's cached columns, whatever the format. */
text *
cs_row_json(CsTable *t, HeapTuple tuple, TupleDesc desc)
{
	return row_json(t, row_format(t, desc), tuple, desc);
}

/* Returns the cached value of the row as FCALL arguments. */
CsValue *
cs_row_value(CsTable *t, HeapTuple tuple, TupleDesc desc)
{
	CsRowFormat *f = row_format(t, desc);
	CsValue    *v = palloc0(sizeof(CsValue));

	if (t->format == CS_FORMAT_JSON)
	{
		text	   *json = row_json(t, f, tuple, desc);

		v->nargs = 1;
		v->args = palloc(sizeof(char *));
		v->lens = palloc(sizeof(size_t));
		v->args[0] = VARDATA_ANY(json);
		v->lens[0] = VARSIZE_ANY_EXHDR(json);
		return v;
	}

	v->args = palloc(sizeof(char *) * 2 * Max(desc->natts, 1));
	v->lens = palloc(sizeof(size_t) * 2 * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		bool		isnull;
		char	   *s;

		if (!f->cached[i])
			continue;
		s = attr_text(f, tuple, desc, i + 1, &isnull);
		if (isnull)
			continue;
		v->args[v->nargs] = NameStr(TupleDescAttr(desc, i)->attname);
		v->lens[v->nargs] = strlen(v->args[v->nargs]);
		v->nargs++;
		v->args[v->nargs] = s;
		v->lens[v->nargs] = strlen(s);
		v->nargs++;
	}
	return v;
}

/* Returns true when a and b agree on every cached column. */
bool
cs_row_cached_equal(CsTable *t, HeapTuple a, HeapTuple b, TupleDesc desc)
{
	CsRowFormat *f = row_format(t, desc);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		anull;
		bool		bnull;
		Datum		ad;
		Datum		bd;

		if (!f->cached[i])
			continue;
		ad = heap_getattr(a, i + 1, desc, &anull);
		bd = heap_getattr(b, i + 1, desc, &bnull);
		if (anull != bnull)
			return false;
		if (!anull && !datumIsEqual(ad, bd, att->attbyval, att->attlen))
			return false;
	}
	return true;
}

/*
 * Splits a row key of t into its key values, undoing the escaping.
 * Returns NULL when the key does not have t's shape.
 */
char	  **
cs_key_parse(CsTable *t, const char *key, size_t len)
{
	size_t		skip = strlen(cachesync_key_prefix) + strlen(t->key_prefix);
	char	  **values = palloc0(sizeof(char *) * Max(t->nkeys, 1));
	StringInfoData part;
	int			n = 0;

	if (len < skip)
		return NULL;
	initStringInfo(&part);
	for (size_t i = skip; i <= len; i++)
	{
		if (i == len || key[i] == ':')
		{
			if (n >= t->nkeys)
				return NULL;
			values[n++] = pstrdup(part.data);
			resetStringInfo(&part);
		}
		else if (key[i] == '\\' && i + 1 < len)
			appendStringInfoChar(&part, key[++i]);
		else
			appendStringInfoChar(&part, key[i]);
	}
	return n == t->nkeys ? values : NULL;
}
