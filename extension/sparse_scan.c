/*
 * sparse_scan.c: ORDER BY col <#> q, in exact order, lazily.
 *
 * The order is that of key = s + c * a, with s the inner product computed
 * in double from the float weights, a the sum of the products' absolute
 * values, and c = (query terms + 4) * FLT_EPSILON, then TID. -key is
 * reported as the ORDER BY value with xs_recheckorderby: it is a lower
 * bound of pgvector's own <#> (a float sum whose rounding error is below
 * c * a), so the executor recomputes <#> on the rows it fetches and
 * reorders them, and its order is exactly pgvector's. A row whose place
 * the bounds settle (no row before or after can score within its
 * [s - c * a, s + c * a]) is returned without that recheck (order_certain):
 * the executor then reads no vector for a row a filter or a policy discards.
 *
 * Rows come in batches of the best N rows with key > 0 after the last row
 * returned (the cursor). The first batch of a scan ranks every row at once
 * (rank_all): each query term's postings are added, term by term, into an
 * array with a slot per heap tuple position (the slots the postings name),
 * and the keys stay for the scan's later batches,
 * which select from them without reading the index again (a filter or a
 * row-level-security policy that discards rows costs a pass over the array
 * per batch, not a new scan of the lists). Else (a heap much sparser than
 * its indexed rows):
 *
 * A batch ranks exactly the best N rows with key > 0
 * that come after the last row returned (the cursor), with MaxScore over the
 * query terms' posting lists: the lists are ordered by their bound on a
 * row's key; the cheapest lists whose bounds add up to less than the N-th
 * best key so far cannot bring a row in on their own, so only rows of the
 * other lists are candidates, and a candidate is dropped as soon as its
 * partial key plus the bounds of the lists not read yet (the block's own
 * bound once it is located) falls below that key. The pending list is
 * scored row by row. The first batch has hybrid_search.sparse_batch_size
 * rows, each next one four times as many. Once no row with key > 0 is left,
 * or a batch would cover half the index, the scan ranks every remaining row
 * (rows sharing no term score 0, then negative scores, then null rows) in
 * one pass; with hybrid_search.sparse_positive_only the scan ends instead
 * (rows with key <= 0 cannot have a positive <#>). Work is bounded: each
 * batch reads each query term's postings at most once (rank_all: the first
 * batch only, then a pass over the slots, at most 4 per segment row plus
 * 65536, per batch), and there are at most log4(rows / batch size) + 1
 * batches before the one full pass over the query terms' postings and the
 * row list.
 *
 * Conditions on the index's filter columns (scan keys) narrow the rows a
 * batch may take, from the first batch or after
 * hybrid_search.sparse_filter_after batches, to those another index of the
 * table finds for them (begin_filter, sparse_filter.c):
 * every place a row enters a batch tests it, so each batch holds the best N
 * rows that may match, and the executor rechecks the conditions.
 *
 * Where the CPU runs AVX-512 (and hybrid_search.sparse_simd is on), rank_all
 * adds eight postings at a time and the pass over the slots tests eight at a
 * time, with the scalar loops' arithmetic: the same keys, bit for bit.
 *
 * What a posting adds to a row's score is the scorer's: the query weight
 * times the posting's weight for sparsevec, BM25's term part (from tf, the
 * row's length and the query's k1, b and average length) times the query
 * lexeme's weight for a BM25 index (sparse_bm25.c). Both are bounded over a
 * block or a list by its (maxw, minw), so the pruning above is the same.
 */
#include "postgres.h"

#include <float.h>
#include <math.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define SPARSE_HAVE_AVX512 1
#endif

#include "access/relscan.h"
#include "extension/vector/sparsevec.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "utils/float.h"
#include "utils/memutils.h"

#include "sparse_index.h"

typedef struct ScanRow
{
	double		key;
	double		low;			/* s - c * a: pgvector's value is not below it */
	uint64		tid;
	bool		isnull;
} ScanRow;

/* where a query term's posting list stands between windows (rank_all) */
typedef struct ListCursor
{
	BlockNumber blk;			/* page and item of the first block not done */
	OffsetNumber off;
	uint32		left;			/* blocks not done */
	int			pos;			/* first posting of that block not added */
} ListCursor;

typedef struct SparseScanOpaqueData
{
	MemoryContext cxt;			/* reset at every rescan */
	MemoryContext batchCxt;		/* reset at every batch */
	bool		queryNull;
	bool		positiveOnly;	/* hybrid_search.sparse_positive_only */
	int			nq;
	int32	   *qterms;
	double	   *qw;				/* query weights */
	double		c;
	/* the scorer: BM25 (with its parameters) or the inner product */
	bool		bm25;
	SparseBM25Scorer scorer;
	/* state */
	bool		started;
	bool		rest;			/* ranking every remaining row */
	bool		done;
	int64		batchN;
	ScanRow    *rows;
	int64		nrows;
	int64		pos;
	bool		haveCursor;
	double		curKey;
	uint64		curTid;
	int64		totalDocs;
	/* every row's key, made by the first batch and kept (see rank_all) */
	int			ranked;			/* RANKED_* */
	double	   *sums;			/* s by heap slot */
	double	   *absSums;		/* a by heap slot, or NULL when s = a */
	double		floor;			/* the least low of the rows returned */
	int64		nslots;
	OffsetNumber slotOffsets;	/* slots per heap block */
	ScanRow    *pendingRows;	/* the pending rows with key > 0 */
	int64		npending;
	/* the order every key sums the query terms' parts in (row_key) */
	int		   *order;
	bool		orderChosen;	/* by rank_all, for the rest of the scan */
	/* RANKED_PARTIAL: the terms order[added..nq-1] are not in sums yet */
	int			added;
	ListCursor *cursors;		/* where each query term's list stands */
	SparseMetaPageData segMeta; /* the segment they were read from */
	/* the rows the conditions on later columns may match; NULL: every row */
	SparseFilter *filter;
	bool		filterBegun;
	int			batches;		/* batches ranked so far */
} SparseScanOpaqueData;

#define RANKED_NOT_YET	0
#define RANKED_ALL		1		/* sums hold every row of the segment */
#define RANKED_BATCHES	2		/* ranked batch by batch (MaxScore) */
#define RANKED_PARTIAL	3		/* sums lack the terms skipped (rank_all) */

typedef SparseScanOpaqueData *SparseScanOpaque;

/* whether the row of a segment slot may pass the scan's conditions */
static inline bool
slot_passes(SparseScanOpaque so, int64 slot)
{
	return so->filter == NULL || SparseFilterSlot(so->filter, slot);
}

/* the filter's bits for the slots of the segment the sums were made from */
static void
narrow_slots(SparseScanOpaque so)
{
	MemoryContext oldcxt;

	if (so->filter == NULL)
		return;
	oldcxt = MemoryContextSwitchTo(so->cxt);
	SparseFilterSlots(so->filter, so->slotOffsets, so->nslots);
	MemoryContextSwitchTo(oldcxt);
}

/* whether the row at TID key may pass the scan's conditions */
static inline bool
tid_passes(SparseScanOpaque so, uint64 tid)
{
	return so->filter == NULL || SparseFilterTid(so->filter, tid);
}

/*
 * key of a row from its per-term contributions (by query term), summed in
 * the scan's order, and in *low (unless NULL) the least value the operator's
 * own sum can have, s - c * a
 */
static inline double
row_key(const double *contrib, const int *order, int nq, double c, double *low)
{
	double		s = 0,
				a = 0;

	for (int i = 0; i < nq; i++)
	{
		s += contrib[order[i]];
		a += fabs(contrib[order[i]]);
	}
	if (low)
		*low = s - c * a;
	return s + c * a;
}

static inline double
key_part(double p, double c)
{
	return p + c * fabs(p);
}

/*
 * What a query term of weight qw adds for a posting of weight w in a row of
 * length len: BM25's term part as bm25_distance computes it (the scorer's,
 * sparse_index.h), or the inner product's.
 */
static inline double
posting_score(bool bm25, double qw, float4 w, float4 len, const SparseBM25Scorer *scorer)
{
	if (bm25)
		return SparseBM25Score(scorer, qw, w, len);
	return qw * (double) w;
}

static inline double
term_score(SparseScanOpaque so, int qi, float4 w, float4 len)
{
	return posting_score(so->bm25, so->qw[qi], w, len, &so->scorer);
}

/*
 * Bound on key_part of term qi over postings with (maxw, minw), slightly
 * raised: BM25's part grows with tf and shrinks with length, an inner
 * product is largest at one end of the weights.
 */
static inline double
term_bound(SparseScanOpaque so, int qi, float4 maxw, float4 minw)
{
	double		hi = so->bm25 ? term_score(so, qi, maxw, minw)
		: Max(so->qw[qi] * maxw, so->qw[qi] * minw);
	double		b = key_part(hi, so->c);

	return b + 1e-9 * fabs(b) + 1e-300;
}

static inline bool
after_cursor(SparseScanOpaque so, double key, uint64 tid)
{
	return !so->haveCursor || key < so->curKey ||
		(key == so->curKey && tid > so->curTid);
}

/*
 * The best max rows offered (key falling, then TID): a buffer of max rows
 * and as many more (at most TOPN_SLACK), cut to its best max by a selection
 * each time it fills. A pass in slot order offers a batch about
 * max * ln(slots / max) rows; a min-heap took each in about log2(max) swaps,
 * the buffer takes each in one store (bench/builds.py, December 6: the
 * sparse and BM25 legs' mean CPU per query 1-7% lower, the same rows).
 * worst is the max-th best row at the last cut (full): a row not better
 * than it cannot enter. Until the first cut every row may.
 */
#define TOPN_SLACK 8192

typedef struct TopN
{
	ScanRow    *rows;
	int64		n;
	int64		max;
	int64		cap;
	bool		full;
	ScanRow		worst;
} TopN;

static inline bool
worse(const ScanRow *a, const ScanRow *b)
{
	return a->key < b->key || (a->key == b->key && a->tid > b->tid);
}

static void
topn_init(TopN *h, int64 max)
{
	h->max = max;
	h->cap = max + Min(max, TOPN_SLACK);
	h->n = 0;
	h->full = false;
	/* a huge allocation: a batch of a table of some 67M rows passes 1 GB */
	h->rows = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(ScanRow) * h->cap);
}

static int	row_cmp(const void *a, const void *b);

/*
 * Rows [lo, hi] ordered so that rows[k] is the one a sort best first would
 * put there, with none worse before it and none better after it (Hoare's
 * FIND, with a median of three as the pivot; sorted outright after 64
 * rounds, so that no order of keys makes it quadratic).
 */
static void
topn_select(ScanRow *rows, int64 lo, int64 hi, int64 k)
{
	for (int round = 0; lo < hi; round++)
	{
		int64		mid = lo + (hi - lo) / 2;
		ScanRow		pivot;
		int64		i = lo,
					j = hi;

		if (round == 64)
		{
			qsort(&rows[lo], hi - lo + 1, sizeof(ScanRow), row_cmp);
			return;
		}
		/* the median of rows lo, mid and hi */
		if (worse(&rows[lo], &rows[mid]) != worse(&rows[lo], &rows[hi]))
			pivot = rows[lo];
		else if (worse(&rows[mid], &rows[lo]) != worse(&rows[mid], &rows[hi]))
			pivot = rows[mid];
		else
			pivot = rows[hi];
		while (i <= j)
		{
			while (worse(&pivot, &rows[i]))
				i++;
			while (worse(&rows[j], &pivot))
				j--;
			if (i <= j)
			{
				ScanRow		t = rows[i];

				rows[i++] = rows[j];
				rows[j--] = t;
			}
		}
		if (k <= j)
			hi = j;
		else if (k >= i)
			lo = i;
		else
			return;
	}
}

/*
 * The buffer cut to its best max rows, and worst set, once max are offered;
 * nothing to do when no row came in since the last cut.
 */
static void
topn_cut(TopN *h)
{
	if (h->n < h->max || (h->full && h->n == h->max))
		return;
	topn_select(h->rows, 0, h->n - 1, h->max - 1);
	h->n = h->max;
	h->worst = h->rows[h->max - 1];
	h->full = true;
}

static inline void
topn_push(TopN *h, double key, double low, uint64 tid)
{
	/* written past the rows kept (n < cap), and kept if better than worst */
	ScanRow    *r = &h->rows[h->n];

	r->key = key;
	r->low = low;
	r->tid = tid;
	r->isnull = false;
	if (h->full && !worse(&h->worst, r))
		return;
	if (++h->n == h->cap)
		topn_cut(h);
}

/* can a row whose key is at most bound still enter the batch? */
static inline bool
cannot_enter(const TopN *h, double bound)
{
	return bound <= 0 || (h->full && bound < h->worst.key);
}

static int
row_cmp(const void *a, const void *b)
{
	const ScanRow *ra = a;
	const ScanRow *rb = b;

	if (ra->isnull != rb->isnull)
		return ra->isnull ? 1 : -1;
	if (!ra->isnull && ra->key != rb->key)
		return ra->key > rb->key ? -1 : 1;
	if (ra->tid != rb->tid)
		return ra->tid < rb->tid ? -1 : 1;
	return 0;
}

/*
 * Score every pending row against the query: fn(key or NaN for a null row,
 * tid, arg). Holds the metapage's share lock so that no insert or merge
 * changes the list meanwhile; meta gets the metapage as read. Returns false
 * on a conflict.
 */
typedef void (*pending_fn) (double key, double low, bool isnull, uint64 tid, void *arg);

/* score_pending's row so far: its query terms' weights and its length */
typedef struct PendingRow
{
	SparseScanOpaque so;
	pending_fn	fn;
	void	   *arg;
	double	   *contrib;
	float4	   *weights;
	double		docLength;
	bool		haveDoc;
	bool		docNull;
	uint64		docTid;
} PendingRow;

/* the row read so far, if any, scored and handed to fn */
static void
pending_row_emit(PendingRow *pr)
{
	SparseScanOpaque so = pr->so;

	if (!pr->haveDoc)
		return;
	if (!tid_passes(so, pr->docTid))
	{
		memset(pr->weights, 0, sizeof(float4) * Max(so->nq, 1));
		pr->docLength = 0;
		return;
	}
	for (int qj = 0; qj < so->nq; qj++)
		pr->contrib[qj] = pr->weights[qj] != 0 ? term_score(so, qj, pr->weights[qj], (float4) pr->docLength) : 0;
	if (pr->docNull)
		pr->fn(0, 0, true, pr->docTid, pr->arg);
	else
	{
		double		low;
		double		key = row_key(pr->contrib, so->order, so->nq, so->c, &low);

		pr->fn(key, low, false, pr->docTid, pr->arg);
	}
	memset(pr->weights, 0, sizeof(float4) * Max(so->nq, 1));
	pr->docLength = 0;
}

static void
pending_row_item(SparsePendingItem *item, BlockNumber blk, OffsetNumber off, void *arg)
{
	PendingRow *pr = arg;
	SparseScanOpaque so = pr->so;
	int32	   *idx;
	float4	   *val;
	int			qi = 0;

	if (item->flags & SPARSE_PENDING_FIRST)
	{
		pending_row_emit(pr);
		pr->haveDoc = true;
		pr->docNull = (item->flags & SPARSE_DOC_NULL) != 0;
		pr->docTid = SparseTidKey(&item->tid);
	}
	if (!pr->haveDoc)
		return;
	idx = SPARSE_PENDING_INDICES(item);
	val = SPARSE_PENDING_VALUES(item);
	/* a BM25 row's length is the sum of its tf */
	if (so->bm25)
		for (int j = 0; j < item->nnz; j++)
			pr->docLength += val[j];
	for (int j = 0; j < item->nnz && qi < so->nq; j++)
	{
		while (qi < so->nq && so->qterms[qi] < idx[j])
			qi++;
		if (qi < so->nq && so->qterms[qi] == idx[j])
			pr->weights[qi] = val[j];
	}
}

static bool
score_pending(Relation index, SparseScanOpaque so, SparseMetaPageData *meta,
			  pending_fn fn, void *arg)
{
	Buffer		metabuf = SparseLockMeta(index, BUFFER_LOCK_SHARE, meta);
	PendingRow	pr = {0};

	pr.so = so;
	pr.fn = fn;
	pr.arg = arg;
	pr.contrib = palloc0(sizeof(double) * Max(so->nq, 1));
	pr.weights = palloc0(sizeof(float4) * Max(so->nq, 1));
	SparseWalkPending(index, meta, InvalidBlockNumber, InvalidOffsetNumber,
					  pending_row_item, NULL, &pr);
	pending_row_emit(&pr);
	UnlockReleaseBuffer(metabuf);
	pfree(pr.contrib);
	pfree(pr.weights);
	return true;
}

/* a posting list positioned on a row */
typedef struct ListPos
{
	SparseListIter it;
	int			qi;				/* query term */
	double		ub;				/* bound on its key part */
	uint64		cur;			/* key of the current row, if !it.done */
} ListPos;

/* what the list's current posting adds */
static inline double
list_score(SparseScanOpaque so, ListPos *l)
{
	return term_score(so, l->qi, l->it.weights[l->it.pos],
					  l->it.lengths ? l->it.lengths[l->it.pos] : 0);
}

static bool
list_load(ListPos *l)
{
	if (!SparseListNextBlock(&l->it))
		return false;
	l->cur = SparseTidKey(&l->it.tids[0]);
	return true;
}

static void
list_next(ListPos *l)
{
	if (++l->it.pos >= l->it.block->n)
	{
		if (!list_load(l))
			return;
	}
	else
		l->cur = SparseTidKey(&l->it.tids[l->it.pos]);
}

/* move to the first row >= target; false when the list ends */
static bool
list_seek(ListPos *l, uint64 target)
{
	int			lo,
				hi;

	if (l->it.done)
		return false;
	if (l->cur >= target)
		return true;
	if (l->it.block->lastKey < target)
	{
		if (!SparseListSeekBlock(&l->it, target))
			return false;
	}
	/* the first posting >= target: there is one, the block's last */
	lo = l->it.pos;
	hi = l->it.block->n - 1;
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (SparseTidKey(&l->it.tids[mid]) < target)
			lo = mid + 1;
		else
			hi = mid;
	}
	l->it.pos = lo;
	l->cur = SparseTidKey(&l->it.tids[lo]);
	return true;
}

/* the smallest current row of lists[from..n-1]; PG_UINT64_MAX when all ended */
static inline uint64
smallest_current(const ListPos *lists, int from, int n)
{
	uint64		d = PG_UINT64_MAX;

	for (int i = from; i < n; i++)
		if (!lists[i].it.done && lists[i].cur < d)
			d = lists[i].cur;
	return d;
}

static int
list_ub_cmp(const void *a, const void *b)
{
	const ListPos *la = a;
	const ListPos *lb = b;

	if (la->ub != lb->ub)
		return la->ub < lb->ub ? -1 : 1;
	return la->qi - lb->qi;
}

/* open the posting lists of the query terms in the segment */
static ListPos *
open_lists(Relation index, SparseScanOpaque so, SparseReader *r, SparseMetaPageData *meta, int *nlists)
{
	SparseDirEntry *entries = palloc(sizeof(SparseDirEntry) * Max(so->nq, 1));
	bool	   *found = palloc(sizeof(bool) * Max(so->nq, 1));
	ListPos    *lists = palloc0(sizeof(ListPos) * Max(so->nq, 1));
	int			n = 0;

	*nlists = 0;
	if (!SparseLookupTerms(r, meta, so->nq, so->qterms, entries, found))
		return lists;
	for (int i = 0; i < so->nq; i++)
	{
		if (!found[i] || entries[i].nblocks == 0)
			continue;
		SparseListBegin(&lists[n].it, r, &entries[i]);
		lists[n].qi = i;
		lists[n].ub = term_bound(so, i, entries[i].maxw, entries[i].minw);
		if (!list_load(&lists[n]))
		{
			if (r->conflict)
				return lists;
			continue;
		}
		n++;
	}
	*nlists = n;
	return lists;
}

/*
 * The pending rows scored (fn), then the query terms' posting lists opened in
 * the segment of the same generation, as r reads it; meta gets the metapage.
 * On a conflict with a concurrent merge r->conflict is set.
 */
static ListPos *
pending_then_lists(IndexScanDesc scan, pending_fn fn, void *arg, SparseMetaPageData *meta,
				   SparseReader *r, int *nlists)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;

	score_pending(scan->indexRelation, so, meta, fn, arg);
	SparseReaderInit(r, scan->indexRelation, meta);
	return open_lists(scan->indexRelation, so, r, meta, nlists);
}

typedef struct BatchArg
{
	SparseScanOpaque so;
	TopN	   *top;
} BatchArg;

static void
batch_pending_fn(double key, double low, bool isnull, uint64 tid, void *arg)
{
	BatchArg   *ba = (BatchArg *) arg;

	if (isnull || key <= 0 || !after_cursor(ba->so, key, tid))
		return;
	topn_push(ba->top, key, low, tid);
}

typedef struct PendingArg
{
	SparseScanOpaque so;
	int64		max;
} PendingArg;

static void
keep_pending_fn(double key, double low, bool isnull, uint64 tid, void *arg)
{
	PendingArg *pa = (PendingArg *) arg;
	SparseScanOpaque so = pa->so;

	if (isnull || key <= 0)
		return;
	if (so->npending == pa->max)
	{
		pa->max = pa->max ? pa->max * 2 : 64;
		so->pendingRows = so->pendingRows ? repalloc_huge(so->pendingRows, pa->max * sizeof(ScanRow))
			: palloc(pa->max * sizeof(ScanRow));
	}
	so->pendingRows[so->npending].key = key;
	so->pendingRows[so->npending].low = low;
	so->pendingRows[so->npending].tid = tid;
	so->pendingRows[so->npending].isnull = false;
	so->npending++;
}

#ifdef SPARSE_HAVE_AVX512
/*
 * Whether this CPU and the kernel run AVX-512 F (both loops use nothing
 * else): the CPU reports it, and the OS saves the opmask and ZMM registers
 * (XCR0 bits 1, 2, 5-7).
 */
bool
SparseAvx512Usable(void)
{
	unsigned int eax,
				ebx,
				ecx,
				edx;
	uint32		xcr0;

	if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_OSXSAVE))
		return false;
	__asm__ volatile("xgetbv" : "=a"(xcr0) : "c"(0) : "edx");
	if ((xcr0 & 0xE6) != 0xE6)
		return false;
	return __builtin_cpu_supports("avx512f");
}

/* whether SparseAvx512Usable(); -1: not asked yet */
static int	cpu_avx512 = -1;

/* whether a loop runs its AVX-512 form: not with absSums, nor when turned off */
static inline bool
use_avx512(bool mixed)
{
	if (mixed || !sparse_simd)
		return false;
	if (cpu_avx512 < 0)
		cpu_avx512 = SparseAvx512Usable() ? 1 : 0;
	return cpu_avx512 == 1;
}

/*
 * add_block's loop without absSums, eight postings at a time: the slots
 * widened from their deltas and checked against the array, the products
 * computed as the scalar loop does, operation for operation (the Makefile
 * builds with -ffp-contract=off, so no multiply and add fuse), and added to
 * the sums one by one (gathering and scattering them was slower on an AMD
 * EPYC, December 4), hence the same keys bit for bit. The slots and
 * products of the whole range are stored first and added after: read back
 * lane by lane right after each vector store, they waited on the store
 * (bench/builds.py, December 6: the sparse leg's mean CPU per query 6-20%
 * lower in three runs). Returns how many postings it added (a multiple of
 * 8), or -1 if a slot is past nslots (and then it added none).
 */
__attribute__((target("avx512f")))
static int
add_postings_avx512(const SparsePostingBlock *b, int from, int n, const float4 *weights,
					const float4 *lengths, double qw, const SparseBM25Scorer *scorer,
					double *sums, int64 nslots, bool bm25)
{
	const bool	wide = (b->flags & SPARSE_BLOCK_WIDE) != 0;
	const __m512i base = _mm512_set1_epi64((int64) b->firstSlot);
	const __m512i vLimit = _mm512_set1_epi64(nslots);
	const __m512d vqw = _mm512_set1_pd(qw);
	const __m512d vk1p1 = _mm512_set1_pd(scorer->k1p1);
	const __m512d vnorm0 = _mm512_set1_pd(scorer->norm0);
	const __m512d vnormLen = _mm512_set1_pd(scorer->normLen);
	const __m512d vgrid = _mm512_set1_pd(scorer->grid);
	const __m512d vinvGrid = _mm512_set1_pd(scorer->invGrid);
	const bool	rounded = bm25 && scorer->grid > 0;
	int64		slots[SPARSE_BLOCK_POSTINGS] pg_attribute_aligned(64);
	double		parts[SPARSE_BLOCK_POSTINGS] pg_attribute_aligned(64);
	int			j;

	/* a range of one block, which SparseBlockOk holds to that many */
	Assert(n <= SPARSE_BLOCK_POSTINGS);

	for (j = 0; j + 8 <= n; j += 8)
	{
		__m512i		delta = wide ?
			_mm512_cvtepu32_epi64(_mm256_loadu_si256((const __m256i *) &SPARSE_BLOCK_DELTAS32(b)[from + j])) :
			_mm512_cvtepu16_epi64(_mm_loadu_si128((const __m128i *) &SPARSE_BLOCK_DELTAS16(b)[from + j]));
		__m512i		slot = _mm512_add_epi64(base, delta);
		__m512d		w = _mm512_cvtps_pd(_mm256_loadu_ps(&weights[j]));
		__m512d		p;

		/* unsigned: a slot that wrapped past 2^64 is caught too */
		if (_mm512_cmp_epu64_mask(slot, vLimit, _MM_CMPINT_NLT))
			return -1;
		if (bm25)
		{
			__m512d		len = _mm512_cvtps_pd(_mm256_loadu_ps(&lengths[j]));
			__m512d		den = _mm512_add_pd(_mm512_add_pd(w, vnorm0), _mm512_mul_pd(vnormLen, len));

			p = _mm512_mul_pd(vqw, _mm512_div_pd(_mm512_mul_pd(w, vk1p1), den));
			/* rint's rounding: to nearest, ties to even */
			if (rounded)
				p = _mm512_mul_pd(_mm512_roundscale_pd(_mm512_mul_pd(p, vgrid),
													   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
								  vinvGrid);
		}
		else
			p = _mm512_mul_pd(vqw, w);
		_mm512_store_epi64(&slots[j], slot);
		_mm512_store_pd(&parts[j], p);
	}
	for (int l = 0; l < j; l++)
		sums[slots[l]] += parts[l];
	return j;
}

/*
 * The first slot from "from" on of a group of eight with a key that can enter
 * (> 0 and not below worst; the keys without absSums, s + c * s, computed as
 * slot_key does), or the first of the fewer than eight slots left.
 */
__attribute__((target("avx512f")))
static int64
next_entering_avx512(const double *sums, double c, int64 from, int64 to, double worst)
{
	const __m512d vc = _mm512_set1_pd(c);
	const __m512d vworst = _mm512_set1_pd(worst);
	const __m512d zero = _mm512_setzero_pd();

	for (; from + 8 <= to; from += 8)
	{
		__m512d		s = _mm512_loadu_pd(&sums[from]);
		__m512d		key = _mm512_add_pd(s, _mm512_mul_pd(vc, s));

		if (_mm512_cmp_pd_mask(key, zero, _CMP_GT_OQ) & _mm512_cmp_pd_mask(key, vworst, _CMP_GE_OQ))
			break;
	}
	return from;
}
#endif

/*
 * Add postings [from, to) of a posting block to their rows' slots; what is
 * wrong with the block, or NULL. Inlined with constant mixed (absSums kept
 * or not) and bm25 (the scorer). The block's fields and the arrays are read
 * into restrict-qualified locals: the build's -fno-strict-aliasing would
 * otherwise reload them after every store into sums (the loop runs once per
 * posting of the query's terms).
 */
static pg_attribute_always_inline const char *
add_block(SparseScanOpaque so, int qi, SparsePostingBlock *b, int from, int to, bool mixed, bool bm25)
{
	const float4 *restrict weights = SPARSE_BLOCK_WEIGHTS(b) + from;
	const float4 *restrict lengths = bm25 ? SPARSE_BLOCK_LENGTHS_OF(b) + from : NULL;
	double	   *restrict sums = so->sums;
	double	   *restrict absSums = so->absSums;
	const double qw = so->qw[qi];
	const SparseBM25Scorer scorer = so->scorer;
	const int	n = to - from;
	const uint64 nslots = so->nslots;
	int			done = 0;

#ifdef SPARSE_HAVE_AVX512
	if (use_avx512(mixed))
	{
		done = add_postings_avx512(b, from, n, weights, lengths, qw, &scorer,
								   sums, so->nslots, bm25);
		if (done < 0)
			return "posting of a row beyond the segment's rows in";
	}
#endif
	for (int j = done; j < n; j++)
	{
		uint64		slot = SparseBlockSlot(b, from + j);
		double		p;

		/* a slot past the array's (a damaged block or metapage) */
		if (unlikely(slot >= nslots))
			return "posting of a row beyond the segment's rows in";
		p = posting_score(bm25, qw, weights[j], bm25 ? lengths[j] : 0, &scorer);
		sums[slot] += p;
		if (mixed)
			absSums[slot] += fabs(p);
	}
	return NULL;
}

/*
 * Ask for bytes [from, to) of a page in the CPU's cache, without reading it
 * (a page pinned but not locked, whose header is not to be trusted).
 */
static inline void
prefetch_lines(const char *page, Size from, Size to)
{
	for (Size at = from; at < to; at += 64)
		__builtin_prefetch(page + at);
}

/*
 * Ask for a locked page's items (pd_upper to pd_special) in the CPU's cache at
 * once: the posting loop reads each block's TIDs and weights once, and would
 * otherwise wait on each of their cache lines in turn (a quarter of a sparse
 * scan's time at 100,000 rows).
 */
static inline void
prefetch_items(Page page)
{
	PageHeader	ph = (PageHeader) page;

	prefetch_lines(page, ph->pd_upper & ~(Size) 63, Min(ph->pd_special, BLCKSZ));
}

/* the first posting of b from pos on whose slot is at least end (b->n if none) */
static int
block_cut(SparsePostingBlock *b, int pos, uint64 end)
{
	int			lo = pos,
				hi = b->n;

	if (SparseBlockSlot(b, b->n - 1) < end)
		return b->n;
	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (SparseBlockSlot(b, mid) < end)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Add what query term qi's postings of rows with slots below end give to
 * those slots, from where cur stands, reading the posting blocks where they
 * lie on their pages; cur then stands at the first posting not added.
 * Returns false on a conflict.
 */
static bool
add_list_window(SparseScanOpaque so, SparseReader *r, ListCursor *cur, int qi, uint64 end)
{
	uint16		flags = so->bm25 ? SPARSE_BLOCK_LENGTHS : 0;
	Buffer		ahead = InvalidBuffer;
	BlockNumber aheadBlk = InvalidBlockNumber;
	Size		aheadAt = 0;	/* how much of ahead's page was asked for */
	Size		aheadStep = BLCKSZ; /* and how much more after each block */

	while (cur->left > 0)
	{
		Buffer		buf;
		Page		page;
		OffsetNumber maxoff;
		const char *damage = NULL;
		bool		windowDone = false;

		CHECK_FOR_INTERRUPTS();
		if (BufferIsValid(ahead) && aheadBlk == cur->blk)
		{
			buf = ahead;
			ahead = InvalidBuffer;
			prefetch_lines(BufferGetPage(buf), aheadAt, BLCKSZ);
			page = SparseReaderLockPage(r, buf, SPARSE_PAGE_POSTING);
		}
		else
		{
			page = SparseReaderPage(r, cur->blk, SPARSE_PAGE_POSTING, &buf);
			if (page != NULL)
				prefetch_items(page);
		}
		if (page == NULL)
		{
			if (BufferIsValid(ahead))
				ReleaseBuffer(ahead);
			return false;
		}
		maxoff = PageGetMaxOffsetNumber(page);

		/*
		 * The list goes on past this page: pin its next page now, and ask for
		 * it in the CPU's cache an equal part after each block added here
		 * (all of it by the last), so that it arrives while this one is added
		 * (each page would otherwise wait on memory at its first block, and
		 * asking for all of it at once stalls on the CPU's queue of misses).
		 */
		if (!BufferIsValid(ahead) && cur->off <= maxoff &&
			cur->left > (uint32) (maxoff - cur->off + 1))
		{
			aheadBlk = SparsePageGetOpaque(page)->next;
			/* never ReadBuffer(InvalidBlockNumber): that is P_NEW, an extension */
			if (!BlockNumberIsValid(aheadBlk))
			{
				BlockNumber blk = cur->blk;

				UnlockReleaseBuffer(buf);
				ereport(ERROR,
						(errcode(ERRCODE_INDEX_CORRUPTED),
						 errmsg("posting list cut short in sparse_inverted index \"%s\" (block %u)",
								RelationGetRelationName(r->index), blk)));
			}
			ahead = ReadBuffer(r->index, aheadBlk);
			aheadAt = 0;
			aheadStep = TYPEALIGN(64, BLCKSZ / (maxoff - cur->off + 1));
		}
		for (; cur->off <= maxoff && cur->left > 0; cur->off++, cur->left--, cur->pos = 0)
		{
			ItemId		iid = PageGetItemId(page, cur->off);
			SparsePostingBlock *b = (SparsePostingBlock *) PageGetItem(page, iid);
			int			cut;

			if (!SparseBlockOk(b, ItemIdGetLength(iid), flags, r->slotOffsets) || cur->pos >= b->n)
			{
				damage = "malformed posting block";
				break;
			}
			cut = block_cut(b, cur->pos, end);
			if (so->bm25)
				damage = so->absSums ? add_block(so, qi, b, cur->pos, cut, true, true)
					: add_block(so, qi, b, cur->pos, cut, false, true);
			else
				damage = so->absSums ? add_block(so, qi, b, cur->pos, cut, true, false)
					: add_block(so, qi, b, cur->pos, cut, false, false);
			if (damage)
				break;
			if (BufferIsValid(ahead))
			{
				prefetch_lines(BufferGetPage(ahead), aheadAt, Min(aheadAt + aheadStep, BLCKSZ));
				aheadAt = Min(aheadAt + aheadStep, BLCKSZ);
			}
			if (cut < b->n)
			{
				/* the rest of the block is for a later window */
				cur->pos = cut;
				windowDone = true;
				break;
			}
		}
		if (damage)
		{
			UnlockReleaseBuffer(buf);
			ereport(ERROR,
					(errcode(ERRCODE_INDEX_CORRUPTED),
					 errmsg("%s sparse_inverted index \"%s\" (block %u, item %u)",
							damage, RelationGetRelationName(r->index), cur->blk, cur->off)));
		}
		if (!windowDone && cur->left > 0)
		{
			cur->blk = SparsePageGetOpaque(page)->next;
			cur->off = FirstOffsetNumber;
		}
		UnlockReleaseBuffer(buf);
		if (windowDone)
			break;
	}
	if (BufferIsValid(ahead))
		ReleaseBuffer(ahead);
	return true;
}

/* the scan's slot arrays back to sparse_slots.c */
static void
return_slots(SparseScanOpaque so)
{
	SparseReturnSlots(so->sums);
	SparseReturnSlots(so->absSums);
	so->sums = so->absSums = NULL;
}

/* a slot's key, as row_key makes it from the same sums */
static pg_attribute_always_inline double
slot_key(const double *restrict sums, const double *restrict absSums, double c, int64 slot, bool mixed)
{
	double		s = sums[slot];

	return s + c * (mixed ? absSums[slot] : s);
}

/* a slot's low, s - c * a, as row_key makes it */
static pg_attribute_always_inline double
slot_low(const double *restrict sums, const double *restrict absSums, double c, int64 slot, bool mixed)
{
	double		s = sums[slot];

	return s - c * (mixed ? absSums[slot] : s);
}

/*
 * Push the slots in [from, to) whose key is > 0 and not below worst (the
 * batch's worst key once it has one) and comes after the cursor; the new
 * worst.
 */
static pg_attribute_always_inline double
push_slots(SparseScanOpaque so, TopN *top, int64 from, int64 to, double worst, bool mixed)
{
	for (int64 slot = from; slot < to; slot++)
	{
		double		key = slot_key(so->sums, so->absSums, so->c, slot, mixed);
		uint64		tid;

		if (key <= 0 || key < worst || !slot_passes(so, slot))
			continue;
		tid = SparseSlotKey(slot, so->slotOffsets);
		if (after_cursor(so, key, tid))
		{
			topn_push(top, key, slot_low(so->sums, so->absSums, so->c, slot, mixed), tid);
			if (top->full)
				worst = top->worst.key;
		}
	}
	return worst;
}

/*
 * The pass over every slot, SLOT_CHUNK at a time: a chunk's keys are
 * compared with worst without a branch per slot (a row that matches some
 * query terms and a row that matches none alternate at random, which a
 * branch per slot mispredicts), and only a chunk with a slot that can enter
 * is looked at slot by slot.
 */
#define SLOT_CHUNK 16

static pg_attribute_always_inline double
pass_slots(SparseScanOpaque so, TopN *top, double worst, int64 start, int64 end, bool mixed)
{
	const double *restrict sums = so->sums;
	const double *restrict absSums = so->absSums;
	const double c = so->c;
	int64		from;

#ifdef SPARSE_HAVE_AVX512
	if (use_avx512(mixed))
	{
		for (from = start; from < end; from += 8)
		{
			from = next_entering_avx512(sums, c, from, end, worst);
			worst = push_slots(so, top, from, Min(from + 8, end), worst, false);
		}
		return worst;
	}
#endif
	for (from = start; from + SLOT_CHUNK <= end; from += SLOT_CHUNK)
	{
		int			enter = 0;

		for (int j = 0; j < SLOT_CHUNK; j++)
		{
			double		key = slot_key(sums, absSums, c, from + j, mixed);

			enter |= (key > 0) & (key >= worst);
		}
		if (enter)
			worst = push_slots(so, top, from, from + SLOT_CHUNK, worst, mixed);
	}
	return push_slots(so, top, from, end, worst, mixed);
}

/*
 * A batch's best so->batchN rows (TopN), with the pending rows after
 * the cursor in it; its worst key once it is full, else 0.
 */
static double
batch_begin(SparseScanOpaque so, TopN *top)
{
	topn_init(top, so->batchN);
	/* kept before the scan narrowed, if it has: tested again */
	for (int64 i = 0; i < so->npending; i++)
		if (after_cursor(so, so->pendingRows[i].key, so->pendingRows[i].tid) &&
			tid_passes(so, so->pendingRows[i].tid))
			topn_push(top, so->pendingRows[i].key, so->pendingRows[i].low, so->pendingRows[i].tid);
	topn_cut(top);
	return top->full ? top->worst.key : 0;
}

/* the rows of slots [start, end) that enter the batch; the new worst key */
static double
batch_add_slots(SparseScanOpaque so, TopN *top, double worst, int64 start, int64 end)
{
	if (so->absSums)
		return pass_slots(so, top, worst, start, end, true);
	return pass_slots(so, top, worst, start, end, false);
}

/* the batch's rows, best first, are the scan's next rows */
static void
batch_end(SparseScanOpaque so, TopN *top)
{
	topn_cut(top);
	qsort(top->rows, top->n, sizeof(ScanRow), row_cmp);
	so->rows = top->rows;
	so->nrows = top->n;
	so->pos = 0;
}

/*
 * A key that about 4 * so->batchN rows after the cursor reach, from a sample:
 * the FLOOR_SAMPLE_RANK-th best key after the cursor of every
 * (so->batchN / 4)-th slot; 0 for a small batch or too few such slots.
 */
#define FLOOR_SAMPLE_RANK 16

static double
sample_floor(SparseScanOpaque so)
{
	int64		step = so->batchN / 4;
	double		best[FLOOR_SAMPLE_RANK];	/* best first */
	int			nbest = 0;

	if (step < 16)
		return 0;
	for (int64 slot = step / 2; slot < so->nslots; slot += step)
	{
		double		key = slot_key(so->sums, so->absSums, so->c, slot, so->absSums != NULL);
		int			i;

		if (key <= 0 || !slot_passes(so, slot) || (so->haveCursor && key >= so->curKey) ||
			(nbest == FLOOR_SAMPLE_RANK && key <= best[nbest - 1]))
			continue;
		if (nbest < FLOOR_SAMPLE_RANK)
			nbest++;
		for (i = nbest - 1; i > 0 && best[i - 1] < key; i--)
			best[i] = best[i - 1];
		best[i] = key;
	}
	return nbest == FLOOR_SAMPLE_RANK ? best[nbest - 1] : 0;
}

/*
 * The best so->batchN rows with key > 0 after the cursor, from rank_all's
 * keys: one pass over the slots (pass_slots). Rows below a sampled floor
 * are not offered to the batch, which would otherwise take, in a pass in
 * slot order, every row that beats the worst it holds so far (pushes were a
 * fifth of a 10%-filtered scan's time). The floor holds if the full batch's
 * worst is not below it; else the pass is made again without it.
 */
static void
batch_from_sums(SparseScanOpaque so)
{
	TopN		top;
	double		worst = batch_begin(so, &top);
	double		sampled = sample_floor(so);

	if (sampled > worst)
	{
		batch_add_slots(so, &top, sampled, 0, so->nslots);
		topn_cut(&top);
		if (top.full && top.worst.key >= sampled)
		{
			batch_end(so, &top);
			return;
		}
		pfree(top.rows);
		worst = batch_begin(so, &top);
	}
	batch_add_slots(so, &top, worst, 0, so->nslots);
	batch_end(so, &top);
}

/*
 * Add the postings of query terms order[from..to) to their slots, each list
 * from where its cursor stands, a window of hybrid_search.sparse_window_slots
 * slots (65536 by default: 512 kB of sums, which stay in a core's L2 cache)
 * at a time: at a million rows the array is 13 MB, and a term at a time over
 * all of it would sweep it from memory once per term. With zero a window is
 * zeroed first; with top its rows are offered to the batch once its terms
 * are in (*worst: the batch's worst key). Returns false on a conflict.
 */
static bool
add_terms(SparseScanOpaque so, SparseReader *r, int from, int to, bool zero, TopN *top, double *worst)
{
	int64		window = sparse_window_slots;

	for (int64 start = 0; start < so->nslots; start += window)
	{
		int64		end = Min(start + window, so->nslots);

		/*
		 * the last window takes every posting left, so that one of a row
		 * past the segment's is met, and reported, as add_block checks it
		 */
		uint64		postingsEnd = end == so->nslots ? PG_UINT64_MAX : (uint64) end;

		if (zero)
		{
			memset(&so->sums[start], 0, (end - start) * sizeof(double));
			if (so->absSums)
				memset(&so->absSums[start], 0, (end - start) * sizeof(double));
		}
		for (int t = from; t < to; t++)
		{
			int			qi = so->order[t];

			if (!add_list_window(so, r, &so->cursors[qi], qi, postingsEnd))
				return false;
		}
		if (top)
			*worst = batch_add_slots(so, top, *worst, start, end);
	}
	return true;
}

/* a query term and its bound, for choose_order's sort */
typedef struct TermBound
{
	int			qi;
	double		bound;
} TermBound;

static int
bound_desc_cmp(const void *a, const void *b)
{
	const TermBound *ta = a;
	const TermBound *tb = b;

	if (ta->bound != tb->bound)
		return ta->bound > tb->bound ? -1 : 1;
	return ta->qi - tb->qi;
}

/*
 * The order every key of the scan sums its terms in: first the terms whose
 * lists are short (at most an eighth of the slots, or without a skip array)
 * or absent, in query order, then the long lists by falling bound, so that
 * the long lists with the smallest bounds are last. Returns how many come
 * before the long lists.
 */
static int
choose_order(SparseScanOpaque so, const SparseDirEntry *entries, const bool *found,
			 const double *bounds, int64 nslots)
{
	TermBound  *longs = palloc(sizeof(TermBound) * Max(so->nq, 1));
	int			nshort = 0,
				nlong = 0;

	for (int i = 0; i < so->nq; i++)
	{
		if (found[i] && entries[i].df > nslots / 8 && BlockNumberIsValid(entries[i].skipBlk))
		{
			longs[nlong].qi = i;
			longs[nlong++].bound = bounds[i];
		}
		else
			so->order[nshort++] = i;
	}
	qsort(longs, nlong, sizeof(TermBound), bound_desc_cmp);
	for (int j = 0; j < nlong; j++)
		so->order[nshort + j] = longs[j].qi;
	pfree(longs);
	return nshort;
}

/* the batchN-th best key of the slots (after the cursor), 0 if fewer are > 0 */
static double
nth_key(SparseScanOpaque so)
{
	TopN		top;
	double		nth;

	topn_init(&top, so->batchN);
	batch_add_slots(so, &top, 0, 0, so->nslots);
	topn_cut(&top);
	nth = top.full ? top.worst.key : 0;
	pfree(top.rows);
	return nth;
}

/* a row that may enter the first batch, and its sum so far */
typedef struct Candidate
{
	int64		slot;
	double		s;
} Candidate;

/* key of a candidate, as slot_key makes it from the same sum (no absSums) */
static inline double
candidate_key(const Candidate *cand, double c)
{
	return cand->s + c * cand->s;
}

/*
 * Whether a row whose key is key now and can grow by at most bound may
 * still reach theta, a key of the batch's N-th row or below. The margin
 * covers the rounding of the sums, far below it.
 */
static inline bool
may_reach(double key, double bound, double theta)
{
	return key + bound >= theta - 1e-9 * theta;
}

/*
 * The slots whose key is > 0 and may still reach theta with bound more, in
 * slot order. theta rises during the pass to the batchN-th best key met so
 * far, and so does the least key a slot needs: from the keys of the short
 * lists alone, theta is often far below the batch's, and collecting every
 * slot above that would store hundreds of thousands of rows at a million
 * rows (keep_candidates then drops those collected before theta rose).
 */
static Candidate *
collect_candidates(SparseScanOpaque so, double bound, double *theta, int64 *ncand)
{
	int64		max = 1024,
				n = 0;
	Candidate  *cands = palloc(sizeof(Candidate) * max);
	double		threshold = *theta - bound - 1e-9 * *theta;
	TopN		best;

	topn_init(&best, so->batchN);
	for (int64 from = 0; from < so->nslots;)
	{
		int64		to;

#ifdef SPARSE_HAVE_AVX512
		if (use_avx512(false))
			from = next_entering_avx512(so->sums, so->c, from, so->nslots, threshold);
#endif
		to = Min(from + 8, so->nslots);
		for (int64 slot = from; slot < to; slot++)
		{
			double		key = slot_key(so->sums, NULL, so->c, slot, false);

			if (key <= 0 || key < threshold || !slot_passes(so, slot))
				continue;
			if (n == max)
			{
				max *= 2;
				cands = repalloc_huge(cands, sizeof(Candidate) * max);
			}
			cands[n].slot = slot;
			cands[n++].s = so->sums[slot];
			topn_push(&best, key, 0, slot);
			if (best.full && best.worst.key > *theta)
			{
				*theta = best.worst.key;
				threshold = *theta - bound - 1e-9 * *theta;
			}
		}
		from = to;
	}
	pfree(best.rows);
	*ncand = n;
	return cands;
}

/*
 * The batchN-th best key of the candidates, at least floor, then only the
 * candidates that may still reach it with bound more; their count.
 */
static int64
keep_candidates(SparseScanOpaque so, Candidate *cands, int64 n, double bound, double *theta)
{
	int64		kept = 0;

	if (n >= so->batchN)
	{
		TopN		top;

		topn_init(&top, so->batchN);
		for (int64 i = 0; i < n; i++)
			topn_push(&top, candidate_key(&cands[i], so->c), 0, cands[i].slot);
		topn_cut(&top);
		*theta = Max(*theta, top.worst.key);
		pfree(top.rows);
	}
	for (int64 i = 0; i < n; i++)
		if (may_reach(candidate_key(&cands[i], so->c), bound, *theta))
			cands[kept++] = cands[i];
	return kept;
}

/*
 * Add what query term qi's postings give to the candidates (in slot order):
 * the sums are those add_terms makes. Each candidate's block is found in the
 * list's skip array, and only the blocks holding a candidate are read: their
 * slots where the candidates are, then the weights there. Returns false on
 * a conflict.
 */
static bool
probe_list(SparseScanOpaque so, SparseReader *r, int qi, const SparseDirEntry *entry,
		   Candidate *cands, int64 ncand)
{
	uint16		flags = so->bm25 ? SPARSE_BLOCK_LENGTHS : 0;
	SparseSkipEntry *skip = palloc(sizeof(SparseSkipEntry) * entry->nblocks);
	Buffer		buf = InvalidBuffer;
	BlockNumber bufBlk = InvalidBlockNumber;
	Page		page = NULL;
	int64		j = 0;
	bool		ok = true;
	BlockNumber skipBlk;
	OffsetNumber skipOff;
	const char *unread = SparseReadSkip(r, entry, skip, &skipBlk, &skipOff);

	if (unread && !r->conflict)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("%s of term %d in sparse_inverted index \"%s\" (block %u, item %u)",
						unread, entry->term, RelationGetRelationName(r->index), skipBlk, skipOff)));
	if (unread)
	{
		pfree(skip);
		return false;
	}
	for (int64 ci = 0; ci < ncand;)
	{
		uint64		slot = cands[ci].slot;
		int64		lo,
					hi;
		ItemId		iid;
		SparsePostingBlock *b;
		const float4 *weights;
		const float4 *lengths;
		uint64		blockEnd;
		int			pos = 0;

		CHECK_FOR_INTERRUPTS();
		/* the last block from j on whose first slot is at most slot */
		lo = j;
		hi = entry->nblocks - 1;
		while (lo < hi)
		{
			int64		mid = lo + (hi - lo + 1) / 2;

			if (skip[mid].firstSlot <= slot)
				lo = mid;
			else
				hi = mid - 1;
		}
		j = lo;
		if (skip[j].firstSlot > slot)
		{
			ci++;				/* before the list's first row */
			continue;
		}
		blockEnd = j + 1 < entry->nblocks ? skip[j + 1].firstSlot : PG_UINT64_MAX;
		if (skip[j].blk != bufBlk)
		{
			if (BufferIsValid(buf))
				UnlockReleaseBuffer(buf);
			bufBlk = skip[j].blk;
			page = SparseReaderPage(r, bufBlk, SPARSE_PAGE_POSTING, &buf);
			if (page == NULL)
			{
				buf = InvalidBuffer;	/* released */
				ok = false;
				break;
			}
		}
		if (skip[j].off < FirstOffsetNumber || skip[j].off > PageGetMaxOffsetNumber(page))
			iid = NULL;
		else
			iid = PageGetItemId(page, skip[j].off);
		b = iid ? (SparsePostingBlock *) PageGetItem(page, iid) : NULL;
		if (b == NULL || !SparseBlockOk(b, ItemIdGetLength(iid), flags, r->slotOffsets) ||
			b->firstSlot != skip[j].firstSlot)
		{
			UnlockReleaseBuffer(buf);
			ereport(ERROR,
					(errcode(ERRCODE_INDEX_CORRUPTED),
					 errmsg("skip entry of term %d in sparse_inverted index \"%s\" gives no block of its list (block %u, item %u)",
							entry->term, RelationGetRelationName(r->index), skip[j].blk, skip[j].off)));
		}
		weights = SPARSE_BLOCK_WEIGHTS(b);
		lengths = so->bm25 ? SPARSE_BLOCK_LENGTHS_OF(b) : NULL;
		for (; ci < ncand && cands[ci].slot < blockEnd; ci++)
		{
			pos = block_cut(b, pos, cands[ci].slot);
			if (pos < b->n && SparseBlockSlot(b, pos) == cands[ci].slot)
				cands[ci].s += term_score(so, qi, weights[pos], lengths ? lengths[pos] : 0);
		}
	}
	if (BufferIsValid(buf))
		UnlockReleaseBuffer(buf);
	pfree(skip);
	return ok;
}

/*
 * A candidate's lookup in a list costs about as much as adding this many
 * postings: a list is left out only where its postings outnumber the
 * candidates' lookups by more.
 */
#define LOOKUP_POSTINGS 32

/*
 * rank_all's first batch, leaving out the long lists (choose_order) that
 * cannot bring a row in on their own (MaxScore, term at a time). The other
 * lists are added as add_terms adds them, in two steps: the short lists,
 * whose slots' batchN-th best key theta is a floor for the batch's worst
 * key; then the long lists but those with the smallest bounds adding up to
 * less than theta / 2, left out. A row can then only enter the batch if its
 * key so far plus those bounds reaches theta: those rows (the candidates)
 * get the left-out lists' postings by lookups in their blocks, found
 * through the lists' skip arrays (probe_list), in the same order as
 * add_terms would add them, and the batch is made from them and
 * the pending rows. so->ranked is RANKED_PARTIAL: a later batch adds the
 * left-out lists to every slot first (they are last in the order the keys
 * sum in, so the sums are those of a scan that read every list). Where the
 * lookups would cost more than adding the lists, every list is added.
 * Returns false on a conflict.
 */
static bool
rank_skipping(IndexScanDesc scan, SparseReader *r, int nshort, const double *bounds,
			  const SparseDirEntry *entries, TopN *top, double worst)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	int			nq = so->nq;
	int			first = Max(nshort, 1);
	int			skipFrom = nq;
	double		theta = 0;
	double		skipped = 0;
	int64		skippedPostings = 0;
	int64		firstPostings = 0;
	int64		allPostings = 0;

	for (int t = 0; t < first; t++)
		firstPostings += entries[so->order[t]].df;
	for (int t = 0; t < nq; t++)
		allPostings += entries[so->order[t]].df;
	if (!add_terms(so, r, 0, first, true, NULL, NULL))
		return false;
	/* fewer postings than batchN rows leave theta 0 */
	if (firstPostings >= so->batchN)
		theta = nth_key(so);
	while (skipFrom > first && skipped + bounds[so->order[skipFrom - 1]] < theta / 2)
	{
		skipFrom--;
		skipped += bounds[so->order[skipFrom]];
		skippedPostings += entries[so->order[skipFrom]].df;
	}
	if (!add_terms(so, r, first, skipFrom, false, NULL, NULL))
		return false;
	if (skipFrom < nq)
	{
		int64		ncand;
		Candidate  *cands = collect_candidates(so, skipped, &theta, &ncand);

		ncand = keep_candidates(so, cands, ncand, skipped, &theta);
		if (ncand * (nq - skipFrom) * LOOKUP_POSTINGS <= skippedPostings)
		{
			double		left = skipped;

			elog(DEBUG1, "sparse_inverted scan of \"%s\": %d of %d query terms' lists looked up at %lld rows, %lld of %lld postings left out",
				 RelationGetRelationName(scan->indexRelation), nq - skipFrom, nq, (long long) ncand,
				 (long long) skippedPostings, (long long) allPostings);
			for (int t = skipFrom; t < nq; t++)
			{
				if (!probe_list(so, r, so->order[t], &entries[so->order[t]], cands, ncand))
					return false;
				left -= bounds[so->order[t]];
				if (t + 1 < nq)
					ncand = keep_candidates(so, cands, ncand, Max(left, 0), &theta);
			}
			for (int64 i = 0; i < ncand; i++)
			{
				double		key = candidate_key(&cands[i], so->c);
				uint64		tid = SparseSlotKey(cands[i].slot, so->slotOffsets);

				if (key > 0 && key >= worst && after_cursor(so, key, tid))
				{
					topn_push(top, key, cands[i].s - so->c * cands[i].s, tid);
					if (top->full)
						worst = top->worst.key;
				}
			}
			batch_end(so, top);
			so->added = skipFrom;
			so->ranked = RANKED_PARTIAL;
			return true;
		}
	}
	if (!add_terms(so, r, skipFrom, nq, false, NULL, NULL))
		return false;
	batch_add_slots(so, top, worst, 0, so->nslots);
	batch_end(so, top);
	so->ranked = RANKED_ALL;
	return true;
}

/*
 * Every row's key, and the scan's first batch from them: term at a time,
 * each posting of each query term (in so->order) added to its row's slot,
 * heap block times segMaxOffset plus offset, so s and a are summed in the
 * same order as row_key's and the keys are the same as every other path's
 * (add_terms). Kept in so->cxt for the whole scan, so a scan asked for more
 * rows (a filter, a policy) ranks its next batches from them instead of
 * reading the lists again. They are the index as it was at the first batch:
 * a row committed later is not in the scan's snapshot anyway. Where every
 * product is >= 0 (the sparsevec's and the query's weights, or BM25 with
 * positive query weights), the first batch may leave long lists out
 * (rank_skipping, hybrid_search.sparse_skip_lists) and a later one add them.
 *
 * Used for both scorers when the segment's slots are few for its rows (a
 * heap not much sparser than its indexed rows); else so->ranked is
 * RANKED_BATCHES, no batch is made, and the scan ranks batch by batch.
 * Returns false on a conflict.
 */
static bool
rank_all(IndexScanDesc scan)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	SparseMetaPageData meta;
	SparseMetaPageData pendingMeta;
	SparseReader r;
	PendingArg	pa;
	SparseDirEntry *entries;
	bool	   *found;
	double	   *bounds;
	bool		mixed = false;
	bool		skip = false;
	int			nshort = 0;
	MemoryContext oldcxt;
	int64		nslots;
	TopN		top;
	double		worst;

	SparseReadMeta(index, &meta);
	so->totalDocs = meta.segDocs + meta.pendingDocs;

	/* a row's slot: heap block * segMaxOffset + offset - 1 */
	nslots = meta.segDocs == 0 ? 0 :
		((int64) meta.segMaxBlock + 1) * meta.segMaxOffset;
	if ((meta.segDocs > 0 && meta.segMaxOffset == 0) ||
		nslots > 4 * (int64) meta.segDocs + 65536 ||
		(Size) nslots * sizeof(double) > MaxAllocHugeSize / 2)
	{
		so->ranked = RANKED_BATCHES;
		return true;
	}

	SparseReaderInit(&r, index, &meta);
	entries = palloc0(sizeof(SparseDirEntry) * Max(so->nq, 1));
	found = palloc(sizeof(bool) * Max(so->nq, 1));
	bounds = palloc(sizeof(double) * Max(so->nq, 1));
	if (!SparseLookupTerms(&r, &meta, so->nq, so->qterms, entries, found))
		return false;
	for (int i = 0; i < so->nq; i++)
	{
		if (so->qw[i] < 0 || (!so->bm25 && found[i] && entries[i].minw < 0))
			mixed = true;
		bounds[i] = found[i] ? term_bound(so, i, entries[i].maxw, entries[i].minw) : 0;
	}
	/* the order is chosen once: keys of rows returned stay comparable */
	if (!so->orderChosen)
	{
		nshort = choose_order(so, entries, found, bounds, nslots);
		so->orderChosen = true;
		skip = (sparse_skip_lists == SPARSE_SKIP_ON ||
				(sparse_skip_lists == SPARSE_SKIP_AUTO && !so->bm25 && nslots >= SPARSE_SKIP_MIN_SLOTS)) &&
			!mixed && nshort < so->nq && !so->haveCursor;
	}

	/* the pending rows' keys, summed in that order, from the same segment */
	oldcxt = MemoryContextSwitchTo(so->cxt);
	so->pendingRows = NULL;
	so->npending = 0;
	pa.so = so;
	pa.max = 0;
	score_pending(index, so, &pendingMeta, keep_pending_fn, &pa);
	MemoryContextSwitchTo(oldcxt);
	if (pendingMeta.generation != meta.generation)
		return false;
	so->totalDocs = pendingMeta.segDocs + pendingMeta.pendingDocs;

	so->nslots = nslots;
	so->slotOffsets = meta.segMaxOffset;
	so->segMeta = meta;
	so->sums = SparseBorrowSlots(so->cxt, nslots);
	so->absSums = mixed ? SparseBorrowSlots(so->cxt, nslots) : NULL;
	narrow_slots(so);
	so->cursors = MemoryContextAlloc(so->cxt, sizeof(ListCursor) * Max(so->nq, 1));
	for (int i = 0; i < so->nq; i++)
	{
		so->cursors[i].blk = entries[i].firstBlk;
		so->cursors[i].off = entries[i].firstOff;
		so->cursors[i].left = found[i] ? entries[i].nblocks : 0;
		so->cursors[i].pos = 0;
	}
	worst = batch_begin(so, &top);
	if (skip)
	{
		if (!rank_skipping(scan, &r, nshort, bounds, entries, &top, worst))
		{
			return_slots(so);
			return false;
		}
		return true;
	}
	if (!add_terms(so, &r, 0, so->nq, true, &top, &worst))
	{
		return_slots(so);
		return false;
	}
	batch_end(so, &top);
	so->ranked = RANKED_ALL;
	return true;
}

/*
 * The terms rank_skipping left out added to every slot, from the segment
 * it read; false on a conflict (the segment was merged since), after which
 * the scan ranks every row again (rank_all, in the same order).
 */
static bool
add_skipped(IndexScanDesc scan)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	SparseReader r;

	SparseReaderInit(&r, scan->indexRelation, &so->segMeta);
	if (!add_terms(so, &r, so->added, so->nq, false, NULL, NULL))
	{
		return_slots(so);
		so->ranked = RANKED_NOT_YET;
		return false;
	}
	so->ranked = RANKED_ALL;
	return true;
}

/*
 * The best so->batchN rows with key > 0 after the cursor. Returns false on a
 * conflict with a concurrent merge.
 */
static bool
run_batch(IndexScanDesc scan)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	SparseMetaPageData meta;
	SparseReader r;
	TopN		top;
	BatchArg	ba;
	ListPos    *lists;
	int			nl;
	double	   *prefix;
	double	   *contrib;
	int			e;

	if (so->ranked == RANKED_NOT_YET)
	{
		if (!rank_all(scan))
			return false;
		if (so->ranked != RANKED_BATCHES)
			return true;		/* rank_all made the first batch */
	}
	else if (so->ranked == RANKED_PARTIAL && !add_skipped(scan))
		return false;
	if (so->ranked == RANKED_ALL)
	{
		batch_from_sums(so);
		return true;
	}

	topn_init(&top, so->batchN);
	ba.so = so;
	ba.top = &top;

	lists = pending_then_lists(scan, batch_pending_fn, &ba, &meta, &r, &nl);
	so->totalDocs = meta.segDocs + meta.pendingDocs;
	if (r.conflict)
		return false;
	qsort(lists, nl, sizeof(ListPos), list_ub_cmp);
	prefix = palloc(sizeof(double) * (nl + 1));
	prefix[0] = 0;
	/* a row need not be in every list: a negative bound counts as 0 */
	for (int i = 0; i < nl; i++)
		prefix[i + 1] = prefix[i] + Max(lists[i].ub, 0);
	contrib = palloc0(sizeof(double) * Max(so->nq, 1));

	/* lists[0..e-1] cannot bring a row in alone */
	e = 0;
	while (e < nl && cannot_enter(&top, prefix[e + 1]))
		e++;

	for (;;)
	{
		uint64		d;
		double		partial = 0;
		bool		dropped = false;
		double		key,
					low;

		CHECK_FOR_INTERRUPTS();
		d = smallest_current(lists, e, nl);
		if (r.conflict)
			return false;
		if (d == PG_UINT64_MAX)
			break;
		for (int i = e; i < nl; i++)
		{
			if (!lists[i].it.done && lists[i].cur == d)
			{
				double		p = list_score(so, &lists[i]);

				contrib[lists[i].qi] = p;
				partial += key_part(p, so->c);
				list_next(&lists[i]);
			}
		}
		for (int i = e - 1; i >= 0; i--)
		{
			double		bub;

			if (cannot_enter(&top, partial + prefix[i + 1]))
			{
				dropped = true;
				break;
			}
			if (!list_seek(&lists[i], d))
				continue;
			bub = term_bound(so, lists[i].qi, lists[i].it.block->maxw, lists[i].it.block->minw);
			if (cannot_enter(&top, partial + prefix[i] + Max(bub, 0)))
			{
				dropped = true;
				break;
			}
			if (lists[i].cur == d)
			{
				double		p = list_score(so, &lists[i]);

				contrib[lists[i].qi] = p;
				partial += key_part(p, so->c);
			}
		}
		if (!dropped)
		{
			key = row_key(contrib, so->order, so->nq, so->c, &low);
			if (key > 0 && after_cursor(so, key, d) && tid_passes(so, d))
			{
				topn_push(&top, key, low, d);
				while (e < nl && cannot_enter(&top, prefix[e + 1]))
					e++;
			}
		}
		for (int i = 0; i < nl; i++)
			contrib[lists[i].qi] = 0;
	}
	if (r.conflict)
		return false;
	batch_end(so, &top);
	return true;
}

typedef struct RestArg
{
	SparseScanOpaque so;
	ScanRow    *rows;
	int64		n;
	int64		max;
} RestArg;

static void
rest_add(RestArg *ra, double key, bool isnull, uint64 tid)
{
	if (!isnull && !after_cursor(ra->so, key, tid))
		return;
	if (ra->so->positiveOnly && (isnull || key <= 0))
		return;
	if (!tid_passes(ra->so, tid))
		return;
	if (ra->n == ra->max)
	{
		ra->max = ra->max ? ra->max * 2 : 1024;
		ra->rows = ra->rows ? repalloc_huge(ra->rows, ra->max * sizeof(ScanRow))
			: palloc(ra->max * sizeof(ScanRow));
	}
	ra->rows[ra->n].key = isnull ? 0 : key;
	ra->rows[ra->n].low = 0;	/* the rest's rows are always rechecked */
	ra->rows[ra->n].isnull = isnull;
	ra->rows[ra->n].tid = tid;
	ra->n++;
}

static void
rest_pending_fn(double key, double low, bool isnull, uint64 tid, void *arg)
{
	rest_add((RestArg *) arg, key, isnull, tid);
}

/* every remaining row, ranked; false on a conflict */
static bool
run_rest(IndexScanDesc scan)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	SparseMetaPageData meta;
	SparseReader r;
	RestArg		ra;
	ListPos    *lists;
	int			nl;
	double	   *contrib;
	uint64	   *mkeys = NULL;
	double	   *mvals = NULL;
	int64		nm = 0,
				maxm = 0,
				mi = 0;
	BlockNumber blk;

	memset(&ra, 0, sizeof(ra));
	ra.so = so;
	/* then the keys of the rows with postings of query terms, in TID order */
	lists = pending_then_lists(scan, rest_pending_fn, &ra, &meta, &r, &nl);
	if (r.conflict)
		return false;
	contrib = palloc0(sizeof(double) * Max(so->nq, 1));
	for (;;)
	{
		uint64		d;

		CHECK_FOR_INTERRUPTS();
		d = smallest_current(lists, 0, nl);
		if (r.conflict)
			return false;
		if (d == PG_UINT64_MAX)
			break;
		for (int i = 0; i < nl; i++)
		{
			if (!lists[i].it.done && lists[i].cur == d)
			{
				contrib[lists[i].qi] = list_score(so, &lists[i]);
				list_next(&lists[i]);
			}
		}
		if (nm == maxm)
		{
			maxm = maxm ? maxm * 2 : 1024;
			mkeys = mkeys ? repalloc_huge(mkeys, maxm * sizeof(uint64)) : palloc(maxm * sizeof(uint64));
			mvals = mvals ? repalloc_huge(mvals, maxm * sizeof(double)) : palloc(maxm * sizeof(double));
		}
		mkeys[nm] = d;
		/* no low: the rest's rows are always rechecked */
		mvals[nm] = row_key(contrib, so->order, so->nq, so->c, NULL);
		nm++;
		for (int i = 0; i < nl; i++)
			contrib[lists[i].qi] = 0;
	}
	if (r.conflict)
		return false;

	/* every row of the segment */
	blk = meta.docListHead;
	while (BlockNumberIsValid(blk))
	{
		Buffer		buf = ReadBuffer(scan->indexRelation, blk);
		Page		page;
		OffsetNumber maxoff;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!SparsePageOk(page, SPARSE_PAGE_DOCLIST, r.generation))
		{
			UnlockReleaseBuffer(buf);
			return false;
		}
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			SparseDocChunk *c = (SparseDocChunk *) PageGetItem(page, PageGetItemId(page, off));

			for (int j = 0; j < c->n; j++)
			{
				uint64		k = SparseTidKey(&SPARSE_DOCCHUNK_TIDS(c)[j]);
				bool		isnull = (SPARSE_DOCCHUNK_FLAGS(c)[j] & SPARSE_DOC_NULL) != 0;
				double		key = 0;

				while (mi < nm && mkeys[mi] < k)
					mi++;
				if (mi < nm && mkeys[mi] == k)
					key = mvals[mi];
				rest_add(&ra, key, isnull, k);
			}
		}
		blk = SparsePageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
	}
	qsort(ra.rows, ra.n, sizeof(ScanRow), row_cmp);
	so->rows = ra.rows;
	so->nrows = ra.n;
	so->pos = 0;
	return true;
}

/*
 * The most keys a condition's rows, read in TID order, may have for the
 * first batch to rank only them: what the heap fetches of the batch's rows
 * cost (SPARSE_KEYS_PER_HEAP_FETCH keys a row), or, if more, what those of
 * the rows the condition would reject cost: where S of the index's N rows
 * meet it, about batchN * N / S rows are returned before a batch's worth
 * pass, so the set pays while S * S <= SPARSE_KEYS_PER_HEAP_FETCH * batchN
 * * N (at a million rows and k = 100, 184,000 keys: a 10% filter's set is
 * read for the first batch, where three batches of rows it rejects cost
 * more; performance.md, December 7, session 37).
 */
static int64
first_batch_keys(IndexScanDesc scan)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	SparseMetaPageData meta;
	double		keys = (double) so->batchN * SPARSE_KEYS_PER_HEAP_FETCH;

	SparseReadMeta(scan->indexRelation, &meta);
	/* at most 2^40 * 256 keys, and its root times 2^64 rows: an int64 either way */
	return (int64) Max(keys, sqrt(keys * (double) (meta.segDocs + meta.pendingDocs)));
}

/*
 * A scan with conditions on later columns ranks only the rows another index
 * of the table finds for them (sparse_filter.c), from the first batch when
 * they are cheap to read (a btree's entries or a GIN index's posting lists,
 * in TID order, up to first_batch_keys keys, or a set this transaction made
 * already for the same snapshot: another leg of hybrid_search), else after
 * hybrid_search.sparse_filter_after batches (3).
 * A bitmap costs something per row it holds, however few of them the scan
 * would have met, so it pays for a condition that rejects nearly every row
 * returned, not for one that a tenth of the rows meet (unless read in TID
 * order for the first batch, as above): the first three
 * batches (B, 4B and 16B rows, B about 1.25 k from the search functions)
 * find the k rows of such a condition, and a condition still short of k
 * rows after them has passed under 4% of the 21B rows returned
 * (performance.md, December 6, session 27). False if no row can meet the
 * conditions.
 */
static bool
begin_filter(IndexScanDesc scan)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	SparseFilterWay way = so->batches >= sparse_filter_after ? SPARSE_FILTER_ANY :
		so->batches == 0 ? SPARSE_FILTER_ORDERED : SPARSE_FILTER_CACHED;
	int64		orderedKeys = way == SPARSE_FILTER_ORDERED ? first_batch_keys(scan) : 0;
	MemoryContext oldcxt = MemoryContextSwitchTo(so->cxt);
	SparseFilter *filter = SparseFilterBegin(scan, way, orderedKeys);

	MemoryContextSwitchTo(oldcxt);
	if (filter == NULL && way != SPARSE_FILTER_ANY)
		return true;
	so->filterBegun = true;
	so->filter = filter;
	if (so->sums)
		narrow_slots(so);
	return so->filter == NULL || !so->filter->empty;
}

IndexScanDesc
sparse_beginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	SparseScanOpaque so = palloc0(sizeof(SparseScanOpaqueData));

	so->cxt = AllocSetContextCreate(CurrentMemoryContext, "sparse_inverted scan", ALLOCSET_DEFAULT_SIZES);
	so->batchCxt = AllocSetContextCreate(so->cxt, "sparse_inverted batch", ALLOCSET_DEFAULT_SIZES);
	scan->opaque = so;
	if (norderbys > 0)
	{
		scan->xs_orderbyvals = palloc0(sizeof(Datum) * norderbys);
		scan->xs_orderbynulls = palloc(sizeof(bool) * norderbys);
		for (int i = 0; i < norderbys; i++)
			scan->xs_orderbynulls[i] = true;
	}
	return scan;
}

void
sparse_rescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	MemoryContext oldcxt;

	return_slots(so);
	MemoryContextReset(so->cxt);
	so->batchCxt = AllocSetContextCreate(so->cxt, "sparse_inverted batch", ALLOCSET_DEFAULT_SIZES);
	if (keys && scan->numberOfKeys > 0)
		memmove(scan->keyData, keys, scan->numberOfKeys * sizeof(ScanKeyData));
	if (orderbys && scan->numberOfOrderBys > 0)
		memmove(scan->orderByData, orderbys, scan->numberOfOrderBys * sizeof(ScanKeyData));

	oldcxt = MemoryContextSwitchTo(so->cxt);
	so->nq = 0;
	so->qterms = NULL;
	so->qw = NULL;
	so->queryNull = true;
	so->bm25 = SparseIsBM25(scan->indexRelation);
	if (scan->numberOfOrderBys > 0 && !(scan->orderByData[0].sk_flags & SK_ISNULL) && so->bm25)
	{
		SparseBM25QueryTerms(scan->indexRelation, scan->orderByData[0].sk_argument,
							 &so->nq, &so->qterms, &so->qw, &so->scorer);
		so->queryNull = false;
	}
	else if (scan->numberOfOrderBys > 0 && !(scan->orderByData[0].sk_flags & SK_ISNULL))
	{
		int32		nnz;
		int32	   *indices;
		float4	   *values;

		SparseCheckSparsevec(scan->indexRelation, scan->orderByData[0].sk_argument, &nnz, &indices, &values);
		so->nq = nnz;
		so->qterms = palloc(sizeof(int32) * Max(nnz, 1));
		so->qw = palloc(sizeof(double) * Max(nnz, 1));
		memcpy(so->qterms, indices, sizeof(int32) * nnz);
		for (int i = 0; i < nnz; i++)
			so->qw[i] = values[i];
		so->queryNull = false;
	}
	/*
	 * key = s + c * a bounds the operator's value from above: pgvector sums a
	 * sparsevec's products in float, while a BM25 scorer that rounds its
	 * parts makes bm25_distance's very sum (a hash collision only raises ours)
	 */
	so->c = so->bm25 && !so->queryNull && so->scorer.grid > 0 ? 0 : (so->nq + 4) * (double) FLT_EPSILON;
	so->order = palloc(sizeof(int) * Max(so->nq, 1));
	for (int i = 0; i < so->nq; i++)
		so->order[i] = i;
	MemoryContextSwitchTo(oldcxt);
	so->orderChosen = false;
	so->added = 0;
	so->cursors = NULL;

	so->positiveOnly = sparse_positive_only;
	so->started = false;
	so->rest = false;
	so->done = false;
	so->batchN = sparse_batch_size;
	so->rows = NULL;
	so->nrows = 0;
	so->pos = 0;
	so->haveCursor = false;
	so->floor = get_float8_infinity();
	so->totalDocs = 0;
	so->ranked = RANKED_NOT_YET;
	so->sums = NULL;
	so->absSums = NULL;
	so->nslots = 0;
	so->pendingRows = NULL;
	so->npending = 0;
	so->filter = NULL;
	so->filterBegun = false;
	so->batches = 0;
}

/*
 * The next batch (or the rest) into so->rows, retrying after a conflict
 * with a merge. An attempt after the first began under the generation the
 * conflict before it left (or a later one).
 */
static void
next_rows(IndexScanDesc scan)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;
	MemoryContext oldcxt;
	uint32		generationBefore = 0;

	MemoryContextReset(so->batchCxt);
	so->rows = NULL;
	so->nrows = 0;
	so->pos = 0;
	oldcxt = MemoryContextSwitchTo(so->batchCxt);
	for (int attempt = 0;; attempt++)
	{
		bool		ok = so->rest ? run_rest(scan) : run_batch(scan);

		if (ok)
			break;
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(so->batchCxt);
		generationBefore = SparseGenerationAfterConflict(scan->indexRelation,
														 attempt > 0 ? &generationBefore : NULL);
		if (attempt >= 100)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("sparse_inverted index \"%s\" was merged too often during a scan",
							RelationGetRelationName(scan->indexRelation)),
					 errhint("Retry the query.")));
		oldcxt = MemoryContextSwitchTo(so->batchCxt);
	}
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Whether row, the one just taken from so->rows, is in the place the
 * operator's own value gives it, so that the executor need not recompute
 * that value (fetching and detoasting the row's vector) to reorder: the
 * value lies in [row->low, row->key], so it is if every row returned before
 * can only score above row->key (their least low, so->floor, is above it)
 * and every row after can only score below row->low (they score at most the
 * next row's key). Never for the last row of a batch (the next is not
 * known yet), the rest's rows, or keys pgvector's float sum may overflow.
 * A reported -key is then taken as the row's value for the order only: a
 * query's own <#> or <&> still computes the exact one. Never for BM25
 * either: a row with another lexeme of a query lexeme's hash has a key
 * above its value by any amount, below its low (and such a lexeme can be
 * made on purpose); where the key is that value to the bit (a rounding
 * scorer), the executor's recheck finds the row in place at the cost of
 * bm25_distance alone, without copying it aside to reorder.
 */
static inline bool
order_certain(SparseScanOpaque so, const ScanRow *row)
{
	return !so->bm25 && !so->rest && !row->isnull && !so->queryNull && row->key <= 1e38 &&
		row->key < so->floor && so->pos < so->nrows && row->low > so->rows[so->pos].key;
}

bool
sparse_gettuple(IndexScanDesc scan, ScanDirection dir)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;

	if (dir != ForwardScanDirection)
		elog(ERROR, "sparse_inverted supports only forward scans");

	for (;;)
	{
		if (so->pos < so->nrows)
		{
			ScanRow    *row = &so->rows[so->pos++];

			SparseKeyTid(row->tid, &scan->xs_heaptid);
			/* the filter is a superset: the executor tests the conditions */
			scan->xs_recheck = scan->numberOfKeys > 0;
			if (scan->numberOfOrderBys > 0)
			{
				scan->xs_recheckorderby = !order_certain(so, row);
				if (row->isnull || so->queryNull)
				{
					scan->xs_orderbyvals[0] = (Datum) 0;
					scan->xs_orderbynulls[0] = true;
				}
				else
				{
					double		dist = -row->key;

					/* pgvector's float sum may overflow where ours does not */
					if (row->key > 1e38)
						dist = -get_float8_infinity();
					scan->xs_orderbyvals[0] = Float8GetDatum(dist);
					scan->xs_orderbynulls[0] = false;
				}
			}
			if (!row->isnull)
			{
				so->floor = Min(so->floor, row->low);
				so->haveCursor = true;
				so->curKey = row->key;
				so->curTid = row->tid;
			}
			return true;
		}
		if (so->done)
			return false;
		if (so->rest)
		{
			/* the rest has been returned */
			so->done = true;
			return false;
		}
		if (so->started)
		{
			/* the last batch was short: no row with key > 0 is left */
			if (so->nrows < so->batchN)
			{
				if (so->positiveOnly)
				{
					so->done = true;
					return false;
				}
				so->rest = true;
			}
			else
			{
				so->batchN = Min(so->batchN * 4, (int64) 1 << 40);
				if (so->batchN * 2 > so->totalDocs)
					so->rest = true;
			}
		}
		else
		{
			/* pg_stat_user_indexes.idx_scan: a DBA looks there for unused indexes */
			pgstat_count_index_scan(scan->indexRelation);
			for (int i = 0; i < scan->numberOfKeys; i++)
			{
				/* every filter operator is strict */
				if (scan->keyData[i].sk_flags & SK_ISNULL)
				{
					so->done = true;
					return false;
				}
			}
		}
		if (scan->numberOfKeys > 0 && !so->filterBegun &&
			!begin_filter(scan))
		{
			/* no row can meet the conditions */
			so->done = true;
			return false;
		}
		so->started = true;
		so->batches++;
		if (so->queryNull)
		{
			if (so->positiveOnly)
			{
				so->done = true;
				return false;
			}
			so->rest = true;
		}
		next_rows(scan);
	}
}

void
sparse_endscan(IndexScanDesc scan)
{
	SparseScanOpaque so = (SparseScanOpaque) scan->opaque;

	return_slots(so);
	MemoryContextDelete(so->cxt);
	pfree(so);
	scan->opaque = NULL;
}
