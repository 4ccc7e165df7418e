/*
 * sparse_bm25.c: BM25 over tsvector on the sparse_inverted access method.
 *
 * A row's entries are its lexemes, each as a 32-bit hash (the term) with
 * its tf (positions, 1 without) as weight; lexemes of one row sharing a hash
 * add their tf. bm25query, made once per query by to_bm25query(), holds what
 * the score needs: per query lexeme its text, term and weight (idf times its
 * repetitions, idf = ln(1 + (N - df + 0.5) / (df + 0.5)) with N and df read
 * from the index), and k1, b and the average row length. Then
 *   tsvector <&> bm25query = -(sum over query lexemes of
 *       weight * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl)))
 * is a pure function of its two arguments, comparing lexemes by their text.
 * The index scan computes the same sum from the postings; a hash collision
 * can only raise a row's tf there (and a query term's weight, when two query
 * lexemes collide), so the index's value bounds the exact one from above and
 * the executor's recheck restores the exact order. Both compute each part as
 * SparseBM25Score does, rounded to a grid on which the sums are exact in any
 * order (unless two query lexemes share a hash), so the scan's key of a row
 * without a collision is the exact value to the bit, which the recheck finds
 * in place. Every BM25 row is rechecked: a collision raises a key by any
 * amount, and a word of a chosen hash is found in seconds.
 *
 * df counts rows whose lexemes include one with the lexeme's hash: the
 * lexeme's own df unless it shares its hash with another lexeme of the
 * corpus (about one pair in 2^32 for a given lexeme).
 */
#include "postgres.h"

#include <math.h>

#include "access/relation.h"
#include "access/table.h"
#include "catalog/index.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "tsearch/ts_type.h"
#include "tsearch/ts_utils.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/rls.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "sparse_index.h"

/* bm25query: a header, nterms terms, then their lexemes' bytes */
typedef struct BM25QueryTerm
{
	float8		weight;			/* idf times the lexeme's repetitions in the query */
	int32		term;			/* the lexeme's hash */
	uint32		df;
	uint32		lexoff;			/* into the lexeme bytes */
	uint32		lexlen;
} BM25QueryTerm;

typedef struct BM25Query
{
	int32		vl_len_;
	int32		nterms;
	float8		k1;
	float8		b;
	float8		avgdl;
	float8		documents;
	BM25QueryTerm terms[FLEXIBLE_ARRAY_MEMBER];
} BM25Query;

#define BM25QUERY_MAX_TERMS		(1 << 20)
#define BM25QUERY_LEXEMES(q)	((char *) &(q)->terms[(q)->nterms])
#define BM25QUERY_HDRSIZE(n)	(offsetof(BM25Query, terms) + (Size) (n) * sizeof(BM25QueryTerm))

int32
SparseLexemeTerm(const char *lexeme, int len)
{
	return (int32) hash_bytes((const unsigned char *) lexeme, len);
}

/* tf of a tsvector entry: its positions, 1 for a lexeme stored without */
static inline int
entry_tf(TSVector t, WordEntry *e)
{
	int			n = e->haspos ? POSDATALEN(t, e) : 0;

	return n > 0 ? n : 1;
}

/*
 * A detoasted tsvector whose entries and positions lie inside the value: the
 * type's input guarantees it, a damaged value must not take us outside.
 */
static TSVector
checked_tsvector(Datum value)
{
	TSVector	t = DatumGetTSVector(value);
	Size		size = VARSIZE(t);
	Size		strstart;

	if (size < DATAHDRSIZE || t->size < 0 ||
		(Size) t->size > (size - DATAHDRSIZE) / sizeof(WordEntry))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("malformed tsvector value")));
	strstart = CALCDATASIZE(t->size, 0);
	for (int i = 0; i < t->size; i++)
	{
		WordEntry  *e = &ARRPTR(t)[i];
		Size		end = strstart + e->pos + e->len;

		if (e->haspos)
		{
			end = strstart + SHORTALIGN(e->pos + e->len);
			if (end + sizeof(uint16) > size ||
				end + sizeof(uint16) + *(uint16 *) (STRPTR(t) + SHORTALIGN(e->pos + e->len)) * sizeof(WordEntryPos) > size)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("malformed tsvector value")));
		}
		else if (end > size)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("malformed tsvector value")));
	}
	return t;
}

/* a term and its tf (a row's entry) or its weight (a query's) */
typedef struct TermTf
{
	int32		term;
	float4		tf;
	double		weight;
} TermTf;

static int
termtf_cmp(const void *a, const void *b)
{
	int32		ta = ((const TermTf *) a)->term;
	int32		tb = ((const TermTf *) b)->term;

	return ta < tb ? -1 : (ta > tb ? 1 : 0);
}

/*
 * A row's entries in a BM25 index: (term, tf) sorted by term, lexemes
 * sharing a hash merged by adding their tf.
 */
void
SparseTsvectorEntries(Relation index, Datum value, int32 *nnz, int32 **indices, float4 **values)
{
	TSVector	t = checked_tsvector(value);
	TermTf	   *pairs = palloc(sizeof(TermTf) * Max(t->size, 1));
	int			n = 0;

	for (int i = 0; i < t->size; i++)
	{
		WordEntry  *e = &ARRPTR(t)[i];

		pairs[i].term = SparseLexemeTerm(STRPTR(t) + e->pos, e->len);
		pairs[i].tf = (float4) entry_tf(t, e);
	}
	qsort(pairs, t->size, sizeof(TermTf), termtf_cmp);
	*indices = palloc(sizeof(int32) * Max(t->size, 1));
	*values = palloc(sizeof(float4) * Max(t->size, 1));
	for (int i = 0; i < t->size; i++)
	{
		if (n > 0 && (*indices)[n - 1] == pairs[i].term)
			(*values)[n - 1] += pairs[i].tf;
		else
		{
			(*indices)[n] = pairs[i].term;
			(*values)[n] = pairs[i].tf;
			n++;
		}
	}
	*nnz = n;
	pfree(pairs);
}

/* a bm25query whose parts lie inside it and whose numbers make sense */
static BM25Query *
checked_query(Datum value)
{
	BM25Query  *q = (BM25Query *) PG_DETOAST_DATUM(value);
	Size		size = VARSIZE(q);
	Size		lexbytes;

	if (size < offsetof(BM25Query, terms) || q->nterms < 0 || q->nterms > BM25QUERY_MAX_TERMS ||
		size < BM25QUERY_HDRSIZE(q->nterms) ||
		!isfinite(q->k1) || q->k1 < 0 || !(q->b >= 0 && q->b <= 1) ||
		!isfinite(q->avgdl) || q->avgdl < 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("malformed bm25query value")));
	lexbytes = size - BM25QUERY_HDRSIZE(q->nterms);
	for (int i = 0; i < q->nterms; i++)
	{
		BM25QueryTerm *t = &q->terms[i];

		if (t->lexoff > lexbytes || t->lexlen > lexbytes - t->lexoff ||
			!isfinite(t->weight) || t->weight < 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("malformed bm25query value")));
	}
	return q;
}

static int
int32_cmp(const void *a, const void *b)
{
	int32		x = *(const int32 *) a;
	int32		y = *(const int32 *) b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/*
 * A query's scorer (sparse_index.h), the same for the scan and for
 * bm25_distance. Its parts are rounded unless two of the query's lexemes
 * share a hash (the scan then weights their term by the two weights' sum,
 * and a part of a sum is not the sum of the parts) or its weights are too
 * large for a grid: 2^(51 - e) where a row's parts sum to less than 2^e (the
 * sum of weight * (k1 + 1) over the query's lexemes, in the query's order).
 */
static void
query_scorer(BM25Query *q, SparseBM25Scorer *s)
{
	int32	   *terms = palloc(sizeof(int32) * Max(q->nterms, 1));
	bool		shared = false;
	double		bound = 0;
	int			e;

	s->k1p1 = q->k1 + 1.0;
	s->norm0 = q->avgdl > 0 ? q->k1 * (1.0 - q->b) : q->k1;
	s->normLen = q->avgdl > 0 ? q->k1 * q->b / q->avgdl : 0;
	for (int i = 0; i < q->nterms; i++)
	{
		terms[i] = q->terms[i].term;
		bound += fabs(q->terms[i].weight) * s->k1p1;
	}
	qsort(terms, q->nterms, sizeof(int32), int32_cmp);
	for (int i = 1; i < q->nterms; i++)
		shared |= terms[i] == terms[i - 1];
	pfree(terms);
	(void) frexp(bound, &e);
	if (shared || !isfinite(bound) || e > 1000)
	{
		s->grid = 0;
		s->invGrid = 0;
		return;
	}
	e = Max(e, -900);
	s->grid = ldexp(1.0, 51 - e);
	s->invGrid = ldexp(1.0, e - 51);
}

/*
 * The scan's view of a query: distinct terms in increasing order, each
 * weighted by the sum of its lexemes' weights (an upper bound when two query
 * lexemes share a hash), and its scorer.
 */
void
SparseBM25QueryTerms(Relation index, Datum query, int *nq, int32 **terms, double **weights,
					 SparseBM25Scorer *scorer)
{
	BM25Query  *q = checked_query(query);
	TermTf	   *order = palloc(sizeof(TermTf) * Max(q->nterms, 1));
	int			n = 0;

	*terms = palloc(sizeof(int32) * Max(q->nterms, 1));
	*weights = palloc(sizeof(double) * Max(q->nterms, 1));
	/* sort the query's (term, weight) pairs by term, adding the weights of a shared term */
	for (int i = 0; i < q->nterms; i++)
	{
		order[i].term = q->terms[i].term;
		order[i].weight = q->terms[i].weight;
	}
	qsort(order, q->nterms, sizeof(TermTf), termtf_cmp);
	for (int i = 0; i < q->nterms; i++)
	{
		if (n > 0 && (*terms)[n - 1] == order[i].term)
			(*weights)[n - 1] += order[i].weight;
		else
		{
			(*terms)[n] = order[i].term;
			(*weights)[n] = order[i].weight;
			n++;
		}
	}
	*nq = n;
	query_scorer(q, scorer);
	pfree(order);
}

PG_FUNCTION_INFO_V1(bm25query_in);
Datum
bm25query_in(PG_FUNCTION_ARGS)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("a bm25query cannot be written as text"),
			 errhint("Make one with to_bm25query(index, query): it holds that index's statistics.")));
	PG_RETURN_NULL();
}

/* as JSON: the parameters, and every lexeme with its df and weight */
PG_FUNCTION_INFO_V1(bm25query_out);
Datum
bm25query_out(PG_FUNCTION_ARGS)
{
	BM25Query  *q = checked_query(PG_GETARG_DATUM(0));
	StringInfoData out;

	initStringInfo(&out);
	appendStringInfo(&out, "{\"k1\": %.17g, \"b\": %.17g, \"avgdl\": %.17g, \"documents\": %.17g, \"terms\": [",
					 q->k1, q->b, q->avgdl, q->documents);
	for (int i = 0; i < q->nterms; i++)
	{
		BM25QueryTerm *t = &q->terms[i];
		char	   *lexeme = pnstrdup(BM25QUERY_LEXEMES(q) + t->lexoff, t->lexlen);

		if (i > 0)
			appendStringInfoString(&out, ", ");
		appendStringInfoString(&out, "{\"lexeme\": ");
		escape_json(&out, lexeme);
		appendStringInfo(&out, ", \"df\": %u, \"weight\": %.17g}", t->df, t->weight);
		pfree(lexeme);
	}
	appendStringInfoString(&out, "]}");
	PG_RETURN_CSTRING(out.data);
}

/* pending_df's terms and their counts */
typedef struct PendingDf
{
	int			n;
	const int32 *terms;
	uint32	   *df;
} PendingDf;

static void
pending_df_item(SparsePendingItem *item, BlockNumber blk, OffsetNumber off, void *arg)
{
	PendingDf  *pd = arg;
	int32	   *idx = SPARSE_PENDING_INDICES(item);
	int			qi = 0;

	/* a row's terms are distinct across its chunks: count each once */
	for (int j = 0; j < item->nnz && qi < pd->n; j++)
	{
		while (qi < pd->n && pd->terms[qi] < idx[j])
			qi++;
		if (qi < pd->n && pd->terms[qi] == idx[j])
			pd->df[qi]++;
	}
}

/* the entry of lexeme in t (entries are sorted by tsCompareString), or -1 */
static int
find_lexeme(TSVector t, char *lexeme, int len)
{
	int			lo = 0,
				hi = t->size - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		WordEntry  *e = &ARRPTR(t)[mid];
		int			cmp = tsCompareString(STRPTR(t) + e->pos, e->len, lexeme, len, false);

		if (cmp == 0)
			return mid;
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

static void
check_parameters(double k1, double b)
{
	if (!isfinite(k1) || k1 < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("BM25's k1 must be finite and not negative, not %g", k1)));
	if (!(b >= 0 && b <= 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("BM25's b must be between 0 and 1, not %g", b)));
}

/*
 * A bm25query of the tsvector's lexemes (its positions count repetitions)
 * with these statistics; df[i] is the document frequency of lexeme i.
 */
static BM25Query *
make_query(TSVector tq, double k1, double b, double documents, double avgdl, const uint32 *df)
{
	Size		lexbytes = 0;
	Size		size;
	BM25Query  *q;
	char	   *lexout;

	for (int i = 0; i < tq->size; i++)
		lexbytes += ARRPTR(tq)[i].len;
	size = BM25QUERY_HDRSIZE(tq->size) + lexbytes;
	q = palloc0(size);
	SET_VARSIZE(q, size);
	q->nterms = tq->size;
	q->k1 = k1;
	q->b = b;
	q->avgdl = avgdl;
	q->documents = documents;
	lexout = BM25QUERY_LEXEMES(q);
	lexbytes = 0;
	for (int i = 0; i < tq->size; i++)
	{
		WordEntry  *e = &ARRPTR(tq)[i];
		double		d = Min((double) df[i], documents);

		q->terms[i].term = SparseLexemeTerm(STRPTR(tq) + e->pos, e->len);
		q->terms[i].df = (uint32) d;
		/* Lucene's idf: positive for every df <= N */
		q->terms[i].weight = entry_tf(tq, e) * log(1.0 + (documents - d + 0.5) / (d + 0.5));
		q->terms[i].lexoff = (uint32) lexbytes;
		q->terms[i].lexlen = e->len;
		memcpy(lexout + lexbytes, STRPTR(tq) + e->pos, e->len);
		lexbytes += e->len;
	}
	return q;
}

/* the distinct terms of tq's lexemes, sorted, into *terms; their number */
static int
query_terms(TSVector tq, int32 **terms)
{
	int			n = 0;

	*terms = palloc(sizeof(int32) * Max(tq->size, 1));
	for (int i = 0; i < tq->size; i++)
		(*terms)[i] = SparseLexemeTerm(STRPTR(tq) + ARRPTR(tq)[i].pos, ARRPTR(tq)[i].len);
	qsort(*terms, tq->size, sizeof(int32), int32_cmp);
	for (int i = 0; i < tq->size; i++)
		if (n == 0 || (*terms)[n - 1] != (*terms)[i])
			(*terms)[n++] = (*terms)[i];
	return n;
}

/* the df of each of tq's lexemes: that of its term, df[i] of terms[i] */
static uint32 *
lexeme_dfs(TSVector tq, const int32 *terms, int nterms, const uint32 *df)
{
	uint32	   *lexemeDf = palloc(sizeof(uint32) * Max(tq->size, 1));

	for (int i = 0; i < tq->size; i++)
	{
		int32		term = SparseLexemeTerm(STRPTR(tq) + ARRPTR(tq)[i].pos, ARRPTR(tq)[i].len);
		int32	   *hit = bsearch(&term, terms, nterms, sizeof(int32), int32_cmp);

		lexemeDf[i] = df[hit - terms];
	}
	return lexemeDf;
}

/*
 * A sparse_inverted index over tsvector opened by OID, with its table (both
 * AccessShareLock), for a caller that may SELECT from the table; errors
 * otherwise.
 */
Relation
SparseOpenBM25Index(Oid indexoid, Relation *heap)
{
	Oid			heapoid = IndexGetRelation(indexoid, true);
	AclResult	aclresult;
	Relation	index;

	if (!OidIsValid(heapoid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not an index", get_rel_name(indexoid) ? get_rel_name(indexoid) : "?")));
	aclresult = pg_class_aclcheck(heapoid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, get_rel_name(heapoid));
	*heap = table_open(heapoid, AccessShareLock);
	index = index_open(indexoid, AccessShareLock);
	if (index->rd_indam->ambuild != sparse_build || !SparseIsBM25(index))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a sparse_inverted index over tsvector", RelationGetRelationName(index))));
	return index;
}

/*
 * The statistics of an index's non-null rows, or of those among them in
 * rows: their number, their total length, and the df of each query term.
 */
typedef struct IndexStatistics
{
	SparseFilter *rows;			/* NULL: every row */
	PendingDf	pd;				/* the query terms and their df */
	uint64		documents;
	double		length;
	bool		counting;		/* the pending row being walked is in rows */
} IndexStatistics;

/* st for the terms of tq's lexemes, over rows (NULL: every row) */
static void
statistics_init(IndexStatistics *st, TSVector tq, SparseFilter *rows)
{
	int32	   *terms;

	memset(st, 0, sizeof(*st));
	st->rows = rows;
	st->pd.n = query_terms(tq, &terms);
	st->pd.terms = terms;
	st->pd.df = palloc0(sizeof(uint32) * Max(st->pd.n, 1));
}

static void
pending_rows_item(SparsePendingItem *item, BlockNumber blk, OffsetNumber off, void *arg)
{
	IndexStatistics *st = arg;

	if (item->flags & SPARSE_PENDING_FIRST)
	{
		st->counting = !(item->flags & SPARSE_DOC_NULL) && SparseFilterTid(st->rows, SparseTidKey(&item->tid));
		if (st->counting)
			st->documents++;
	}
	if (!st->counting)
		return;
	for (int j = 0; j < item->nnz; j++)
		st->length += SPARSE_PENDING_VALUES(item)[j];
	pending_df_item(item, blk, off, &st->pd);
}

/*
 * Whether slot's bit is set in rows, 0 or 1, without a branch: a slot past
 * the array (a damaged block: the deltas' order is not checked) reads bit 0
 * and counts nothing.
 */
static inline uint64
slot_bit(const SparseFilter *rows, uint64 slot)
{
	uint64		in = slot < (uint64) rows->nslots;
	uint64		safe = in ? slot : 0;

	return in & (rows->bits[safe / 64] >> (safe % 64));
}

/*
 * Add the segment's non-null rows with their slot's bit set in st->rows
 * (SparseFilterSlots done), and their length, to st; false on a conflict
 * with a merge.
 */
static bool
count_segment_rows(SparseReader *r, const SparseMetaPageData *meta, IndexStatistics *st)
{
	BlockNumber blk = meta->docListHead;

	while (BlockNumberIsValid(blk))
	{
		Buffer		buf;
		Page		page = SparseReaderPage(r, blk, SPARSE_PAGE_DOCLIST, &buf);

		if (page == NULL)
			return false;
		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			ItemId		iid = PageGetItemId(page, off);
			SparseDocChunk *c = (SparseDocChunk *) PageGetItem(page, iid);
			uint64		documents = 0;
			double		length = 0;

			if (!SparseDocChunkOk(c, ItemIdGetLength(iid), true))
				ereport(ERROR,
						(errcode(ERRCODE_INDEX_CORRUPTED),
						 errmsg("malformed row-list chunk in sparse_inverted index \"%s\" (block %u, item %u)",
								RelationGetRelationName(r->index), blk, off)));
			for (int j = 0; j < c->n; j++)
			{
				uint64		slot = SparseKeySlot(SparseTidKey(&SPARSE_DOCCHUNK_TIDS(c)[j]), r->slotOffsets);
				uint64		in = slot_bit(st->rows, slot) & !(SPARSE_DOCCHUNK_FLAGS(c)[j] & SPARSE_DOC_NULL);

				documents += in;
				length += in ? SPARSE_DOCCHUNK_LENGTHS(c)[j] : 0;
			}
			st->documents += documents;
			st->length += length;
		}
		blk = SparsePageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
	}
	return true;
}

/*
 * The postings of b whose slot's bit is set in rows, counted without a
 * branch per posting (about one in ten is, at random, and a branch on it
 * cost more than the rest of the loop).
 */
static uint32
count_block_rows(const SparsePostingBlock *b, const SparseFilter *rows)
{
	uint64		count = 0;

	if (b->flags & SPARSE_BLOCK_WIDE)
		for (int j = 0; j < b->n; j++)
			count += slot_bit(rows, b->firstSlot + SPARSE_BLOCK_DELTAS32(b)[j]);
	else
		for (int j = 0; j < b->n; j++)
			count += slot_bit(rows, b->firstSlot + SPARSE_BLOCK_DELTAS16(b)[j]);
	return (uint32) count;
}

/*
 * Add the postings of entry's list whose slot's bit is set in rows to *df;
 * false on a conflict with a merge. Read in place: no block is copied.
 */
static bool
count_list_rows(SparseReader *r, const SparseDirEntry *entry, const SparseFilter *rows, uint32 *df)
{
	BlockNumber blk = entry->firstBlk;
	OffsetNumber off = entry->firstOff;
	uint32		left = entry->nblocks;

	while (left > 0)
	{
		Buffer		buf;
		Page		page = SparseReaderPage(r, blk, SPARSE_PAGE_POSTING, &buf);

		if (page == NULL)
			return false;
		for (; off <= PageGetMaxOffsetNumber(page) && left > 0; off++, left--)
			*df += count_block_rows(SparseReaderBlock(r, buf, blk, off, SPARSE_BLOCK_LENGTHS), rows);
		blk = SparsePageGetOpaque(page)->next;
		off = FirstOffsetNumber;
		UnlockReleaseBuffer(buf);
	}
	return true;
}

/*
 * Count st's statistics: the pending list under the metapage's lock, then
 * the segment of the same generation, all again after a concurrent merge.
 * Every row's from the metapage's counters and the directory's df; the rows
 * of st->rows counted in the pending list, the row list and the query
 * terms' postings. False when st->rows is given and the row list keeps no
 * lengths.
 */
static bool
count_statistics(Relation index, IndexStatistics *st)
{
	int			n = Max(st->pd.n, 1);

	for (int attempt = 0;; attempt++)
	{
		SparseDirEntry *entries = palloc(sizeof(SparseDirEntry) * n);
		bool	   *found = palloc(sizeof(bool) * n);
		SparseMetaPageData meta;
		Buffer		metabuf = SparseLockMeta(index, BUFFER_LOCK_SHARE, &meta);
		SparseReader r;
		bool		done;

		if (st->rows != NULL && meta.segDocs > 0 && !(meta.flags & SPARSE_META_DOC_LENGTHS))
		{
			UnlockReleaseBuffer(metabuf);
			return false;
		}
		st->documents = 0;
		st->length = 0;
		st->counting = false;
		memset(st->pd.df, 0, sizeof(uint32) * n);
		if (st->rows != NULL)
			SparseWalkPending(index, &meta, InvalidBlockNumber, InvalidOffsetNumber,
							  pending_rows_item, NULL, st);
		else if (st->pd.n > 0)
			SparseWalkPending(index, &meta, InvalidBlockNumber, InvalidOffsetNumber,
							  pending_df_item, NULL, &st->pd);
		UnlockReleaseBuffer(metabuf);
		SparseReaderInit(&r, index, &meta);
		if (st->rows == NULL)
		{
			st->documents = meta.segRows + meta.pendingRows;
			st->length = (double) (meta.segLength + meta.pendingLength);
			done = SparseLookupTerms(&r, &meta, st->pd.n, st->pd.terms, entries, found);
			for (int i = 0; done && i < st->pd.n; i++)
				if (found[i])
					st->pd.df[i] += entries[i].df;
		}
		else
		{
			SparseFilterSlots(st->rows, meta.segMaxOffset,
							  meta.segDocs == 0 ? 0 : ((int64) meta.segMaxBlock + 1) * meta.segMaxOffset);
			done = meta.segDocs == 0 ||
				(count_segment_rows(&r, &meta, st) &&
				 SparseLookupTerms(&r, &meta, st->pd.n, st->pd.terms, entries, found));
			for (int i = 0; done && i < st->pd.n && meta.segDocs > 0; i++)
				if (found[i])
					done = count_list_rows(&r, &entries[i], st->rows, &st->pd.df[i]);
		}
		if (done)
			return true;
		SparseGenerationAfterConflict(index, &meta.generation);
		if (attempt >= 100)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("sparse_inverted index \"%s\" was merged too often while reading its statistics",
							RelationGetRelationName(index)),
					 errhint("Retry the query.")));
	}
}

/* the bm25query of tq's lexemes (statistics_init's) with st's counted statistics */
static BM25Query *
statistics_query(TSVector tq, double k1, double b, const IndexStatistics *st)
{
	return make_query(tq, k1, b, (double) st->documents,
					  st->documents > 0 ? st->length / st->documents : 0,
					  lexeme_dfs(tq, st->pd.terms, st->pd.n, st->pd.df));
}

/*
 * _bm25query(index, query tsvector, k1, b): the query's lexemes weighted
 * with the index's statistics now. Reading them needs SELECT on the index's
 * table, and no row-level security there (they count every row) unless the
 * index is partial with the role's policies as its predicate
 * (sparse_policy.c): then they count only rows of the role's.
 */
PG_FUNCTION_INFO_V1(bm25query_make);
Datum
bm25query_make(PG_FUNCTION_ARGS)
{
	TSVector	tq = checked_tsvector(PG_GETARG_DATUM(1));
	double		k1 = PG_GETARG_FLOAT8(2);
	double		b = PG_GETARG_FLOAT8(3);
	Oid			heapoid;
	Relation	heap,
				index;
	IndexStatistics st;
	BM25Query  *q;

	check_parameters(k1, b);
	index = SparseOpenBM25Index(PG_GETARG_OID(0), &heap);
	heapoid = RelationGetRelid(heap);
	if (check_enable_rls(heapoid, InvalidOid, false) == RLS_ENABLED &&
		!SparsePolicyIsPredicate(heap, index))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("row-level security applies to table \"%s\": the statistics of index \"%s\" count rows the role cannot see",
						get_rel_name(heapoid), RelationGetRelationName(index)),
				 errhint("Compute the statistics of the visible rows and use _bm25query_statistics(), or use a partial index whose predicate is exactly the role's policies.")));

	statistics_init(&st, tq, NULL);
	count_statistics(index, &st);
	q = statistics_query(tq, k1, b, &st);
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	PG_RETURN_POINTER(q);
}

/*
 * _bm25query_policy_rows(index, query tsvector, k1, b): for a role under
 * row-level security whose policies another index names exactly
 * (SparsePolicyRows: tenant = 3 with a btree on tenant), the query's lexemes
 * weighted with the statistics of those rows, counted in index: its pending
 * rows among them, then one pass over its row list (each row's length) and
 * over the query lexemes' postings. No table row is read. Counted as index
 * counts rows: versions of the role's rows deleted or updated away count
 * until VACUUM (or until the other index drops their entries), and none of
 * anyone else's. NULL when no index names the policies' rows exactly (or
 * their TIDs would exceed work_mem), no policy applies, or index keeps no
 * row lengths (REINDEX adds them).
 */
PG_FUNCTION_INFO_V1(bm25query_policy_rows);
Datum
bm25query_policy_rows(PG_FUNCTION_ARGS)
{
	TSVector	tq = checked_tsvector(PG_GETARG_DATUM(1));
	double		k1 = PG_GETARG_FLOAT8(2);
	double		b = PG_GETARG_FLOAT8(3);
	Relation	heap,
				index;
	SparseFilter *rows = NULL;
	IndexStatistics st;
	BM25Query  *q = NULL;

	check_parameters(k1, b);
	index = SparseOpenBM25Index(PG_GETARG_OID(0), &heap);
	if (check_enable_rls(RelationGetRelid(heap), InvalidOid, false) == RLS_ENABLED)
		rows = SparsePolicyRows(heap, index);
	if (rows != NULL)
	{
		statistics_init(&st, tq, rows);
		if (count_statistics(index, &st))
			q = statistics_query(tq, k1, b, &st);
	}
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	if (q == NULL)
		PG_RETURN_NULL();
	PG_RETURN_POINTER(q);
}

/*
 * _bm25query_statistics(query tsvector, k1, b, documents, total_length,
 * lexemes text[], dfs bigint[]): the query's lexemes weighted with the
 * statistics given (a lexeme not in lexemes has df 0), for a role that may
 * only count the rows it sees.
 */
PG_FUNCTION_INFO_V1(bm25query_with_statistics);
Datum
bm25query_with_statistics(PG_FUNCTION_ARGS)
{
	TSVector	tq = checked_tsvector(PG_GETARG_DATUM(0));
	double		k1 = PG_GETARG_FLOAT8(1);
	double		b = PG_GETARG_FLOAT8(2);
	int64		documents = PG_GETARG_INT64(3);
	double		total = PG_GETARG_FLOAT8(4);
	ArrayType  *lexemes = PG_GETARG_ARRAYTYPE_P(5);
	ArrayType  *dfs = PG_GETARG_ARRAYTYPE_P(6);
	Datum	   *lexemeValues,
			   *dfValues;
	bool	   *lexemeNulls,
			   *dfNulls;
	int			nlexemes,
				ndfs;
	uint32	   *df = palloc0(sizeof(uint32) * Max(tq->size, 1));

	check_parameters(k1, b);
	if (documents < 0 || documents > PG_UINT32_MAX || !isfinite(total) || total < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("documents must be between 0 and %u and total_length finite and not negative",
						PG_UINT32_MAX)));
	deconstruct_array(lexemes, TEXTOID, -1, false, TYPALIGN_INT, &lexemeValues, &lexemeNulls, &nlexemes);
	deconstruct_array(dfs, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &dfValues, &dfNulls, &ndfs);
	if (nlexemes != ndfs)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("lexemes and dfs must have the same length, not %d and %d", nlexemes, ndfs)));
	for (int j = 0; j < nlexemes; j++)
	{
		text	   *t;
		int64		d;
		int			i;

		if (lexemeNulls[j] || dfNulls[j])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("lexemes and dfs must not contain NULL")));
		t = DatumGetTextPP(lexemeValues[j]);
		d = DatumGetInt64(dfValues[j]);
		if (d < 0 || d > documents)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a df must be between 0 and documents, not " INT64_FORMAT, d)));
		i = find_lexeme(tq, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		if (i >= 0)
			df[i] = (uint32) d;
	}
	PG_RETURN_POINTER(make_query(tq, k1, b, (double) documents,
								 documents > 0 ? total / documents : 0, df));
}

/*
 * Transition of the aggregate _bm25_visible_statistics(fts, query): the
 * state is bigint[] {rows, their total length, the df of each of query's
 * lexemes in query's order}, counted in place (the state is the aggregate's
 * own copy). In C because a role under row-level security pays it on every
 * row it sees, every query: a binary search per query lexeme and row, where
 * unnesting every row's lexemes in SQL cost about 20 us a row.
 */
PG_FUNCTION_INFO_V1(bm25_visible_statistics_add);
Datum
bm25_visible_statistics_add(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	TSVector	q;
	TSVector	t;
	ArrayType  *state;
	int64	   *counts;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("_bm25_visible_statistics_add can only be called by its aggregate")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("_bm25_visible_statistics: the query must not be NULL")));
	q = checked_tsvector(PG_GETARG_DATUM(2));
	if (PG_ARGISNULL(0))
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(aggcxt);
		Datum	   *zeros = palloc0(sizeof(Datum) * (q->size + 2));

		for (int i = 0; i < q->size + 2; i++)
			zeros[i] = Int64GetDatum(0);
		state = construct_array(zeros, q->size + 2, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
		MemoryContextSwitchTo(oldcxt);
	}
	else
		state = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(state) != 1 || ARR_HASNULL(state) || ARR_ELEMTYPE(state) != INT8OID ||
		ARR_DIMS(state)[0] != q->size + 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("_bm25_visible_statistics: the query must be the same on every row")));
	if (PG_ARGISNULL(1))
		PG_RETURN_ARRAYTYPE_P(state);
	t = checked_tsvector(PG_GETARG_DATUM(1));
	counts = (int64 *) ARR_DATA_PTR(state);
	counts[0]++;
	for (int i = 0; i < t->size; i++)
		counts[1] += entry_tf(t, &ARRPTR(t)[i]);
	for (int i = 0; i < q->size; i++)
		if (find_lexeme(t, STRPTR(q) + ARRPTR(q)[i].pos, ARRPTR(q)[i].len) >= 0)
			counts[2 + i]++;
	PG_RETURN_ARRAYTYPE_P(state);
}

/* bm25_distance's scorer, kept for the query it was made for */
typedef struct DistanceScorer
{
	SparseBM25Scorer scorer;
	Size		size;
	char		query[FLEXIBLE_ARRAY_MEMBER];	/* a copy of the query */
} DistanceScorer;

/* q's scorer (query_scorer), made once per query */
static const SparseBM25Scorer *
distance_scorer(FunctionCallInfo fcinfo, BM25Query *q)
{
	DistanceScorer *d = (DistanceScorer *) fcinfo->flinfo->fn_extra;
	Size		size = VARSIZE(q);

	if (d == NULL || d->size != size || memcmp(d->query, q, size) != 0)
	{
		if (d != NULL)
			pfree(d);
		d = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, offsetof(DistanceScorer, query) + size);
		query_scorer(q, &d->scorer);
		d->size = size;
		memcpy(d->query, q, size);
		fcinfo->flinfo->fn_extra = d;
	}
	return &d->scorer;
}

/*
 * tsvector <&> bm25query: minus the row's BM25 score, so that ascending
 * order is best first. Lexemes are compared by their text; the parts are
 * computed and rounded as the index scan does (SparseBM25Score).
 */
PG_FUNCTION_INFO_V1(bm25_distance);
Datum
bm25_distance(PG_FUNCTION_ARGS)
{
	TSVector	t = checked_tsvector(PG_GETARG_DATUM(0));
	BM25Query  *q = checked_query(PG_GETARG_DATUM(1));
	const SparseBM25Scorer *scorer = distance_scorer(fcinfo, q);
	WordEntry  *entries = ARRPTR(t);
	double		length = 0;
	double		score = 0;

	for (int i = 0; i < t->size; i++)
		length += entry_tf(t, &entries[i]);
	for (int i = 0; i < q->nterms; i++)
	{
		int			hit = find_lexeme(t, BM25QUERY_LEXEMES(q) + q->terms[i].lexoff, (int) q->terms[i].lexlen);

		if (hit >= 0)
			score += SparseBM25Score(scorer, q->terms[i].weight, entry_tf(t, &entries[hit]), length);
	}
	PG_RETURN_FLOAT8(-score);
}
