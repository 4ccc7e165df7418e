/*
 * dense_scan.c: ORDER BY col <=> q, exactly, through the executor's
 * reordering.
 *
 * The first call scores every row the scan's filter conditions allow
 * (sparse_filter.c finds them in another index; without one, every row).
 * The query is coded once as int16, q = step * qc + d, and a row's
 * est = step * scale * sum(qc[i] * codes[i]) is an integer sum times two
 * factors. With x' = scale * codes, q.x = est + d.x' + q.(x - x'), and
 * Cauchy-Schwarz bounds the last two by |d| (|x| + error) and |q| error;
 * pgvector's own float sums lie within dims * FLT_EPSILON of the exact ones
 * relative to |q| |x|, so
 *   similarity <= est / (|q| |x|) + error / |x| + |d| / |q| (1 + error / |x|)
 *                 + slack
 * and 1 - that (pgvector clamps similarity to [-1, 1]) is a lower bound of
 * pgvector's cosine distance. Rows come out in the order of that bound with
 * xs_recheckorderby: the executor computes each one's exact distance and
 * returns a row only once no later row's bound is below it, so the order
 * and distances are a sequential scan's. A row or query of a norm where
 * float squares under- or overflow gets the bound 0, which always holds;
 * a zero vector's distance is NaN, and its bound infinity. Rows with a NULL
 * vector come after all others, as a sequential scan's ORDER BY puts them.
 *
 * A row VACUUM marks dead after the scan copied its row page may still be
 * returned: its heap slot is then unused, or holds a row inserted since by a
 * transaction the scan's MVCC snapshot cannot see, which the executor skips.
 */
#include "postgres.h"

#include <float.h>
#include <math.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DENSE_HAVE_AVX512 1
#endif

#include "access/relscan.h"
#include "storage/buf_internals.h"
#include "pgstat.h"
#include "utils/float.h"
#include "utils/memutils.h"

#include "dense_flat.h"
#include "sparse_index.h"

/* a row to return: NULL vectors after every other, as ORDER BY puts them */
typedef struct Candidate
{
	double		bound;
	ItemPointerData tid;
	bool		isnull;
} Candidate;

typedef struct DenseScanOpaqueData
{
	MemoryContext cxt;
	bool		started;
	bool		queryNull;
	DenseVector *query;
	double		queryNorm;
	int16	   *queryCodes;		/* query ~ queryStep * queryCodes */
	double		queryStep;
	double		queryError;		/* |query - that| */
	Candidate  *heap;			/* a min-heap by (isnull, bound) */
	int64		n;
	int64		max;
	SparseFilterCursor cursor;	/* where the last row's key was found */
	BlockNumber nblocks;		/* the index's size when last asked */
	/* score_rows' arrays, a row page's worth */
	int		   *live;			/* the rows not marked dead */
	uint64	   *liveKeys;		/* their TID keys */
	bool	   *allowed;		/* whether the filter allows them */
	int		   *need;
	int		   *groupStart;
} DenseScanOpaqueData;

typedef DenseScanOpaqueData *DenseScanOpaque;

IndexScanDesc
dense_beginscan(Relation index, int nkeys, int norderbys)
{
	IndexScanDesc scan = RelationGetIndexScan(index, nkeys, norderbys);
	DenseScanOpaque so = palloc0(sizeof(DenseScanOpaqueData));

	so->cxt = AllocSetContextCreate(CurrentMemoryContext, "dense_flat scan", ALLOCSET_DEFAULT_SIZES);
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
dense_rescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;

	MemoryContextReset(so->cxt);
	if (keys && scan->numberOfKeys > 0)
		memmove(scan->keyData, keys, scan->numberOfKeys * sizeof(ScanKeyData));
	if (orderbys && scan->numberOfOrderBys > 0)
		memmove(scan->orderByData, orderbys, scan->numberOfOrderBys * sizeof(ScanKeyData));
	so->started = false;
	so->queryNull = scan->numberOfOrderBys == 0 || (scan->orderByData[0].sk_flags & SK_ISNULL);
	so->query = NULL;
	so->heap = NULL;
	so->n = so->max = 0;
	memset(&so->cursor, 0, sizeof(so->cursor));
	so->nblocks = 0;
}

/*
 * The query as int16 codes, q ~ step * codes (|codes| <= DENSE_QUERY_MAX),
 * so a row's sum of products is an integer the scan computes exactly: at
 * most 2 * 2^14 * 128 per pair of dimensions and DENSE_MAX_DIMS / 64 pairs
 * per AVX-512 lane, well inside int32.
 */
#define DENSE_QUERY_MAX 16383

/* sum(q[i] * codes[i]) */
static int64
dot_codes(const int16 *q, const int8 *codes, int dims)
{
	int64		s = 0;

	for (int i = 0; i < dims; i++)
		s += (int32) q[i] * codes[i];
	return s;
}

#ifdef DENSE_HAVE_AVX512
/* the same sum, 64 dimensions at a time: pairs of int16 products (vpmaddwd) */
__attribute__((target("avx512f,avx512bw")))
static int64
dot_codes_avx512(const int16 *q, const int8 *codes, int dims)
{
	__m512i		acc0 = _mm512_setzero_si512(),
				acc1 = _mm512_setzero_si512();
	int			i = 0;

	for (; i + 64 <= dims; i += 64)
	{
		__m512i		c0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *) (codes + i)));
		__m512i		c1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *) (codes + i + 32)));

		acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(_mm512_loadu_si512(q + i), c0));
		acc1 = _mm512_add_epi32(acc1, _mm512_madd_epi16(_mm512_loadu_si512(q + i + 32), c1));
	}
	return _mm512_reduce_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc0))) +
		_mm512_reduce_add_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc0, 1))) +
		_mm512_reduce_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc1))) +
		_mm512_reduce_add_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc1, 1))) +
		dot_codes(q + i, codes + i, dims - i);
}

/* whether SparseAvx512Usable() and AVX-512 BW; -1: not asked yet */
static int	cpu_avx512 = -1;
#endif

static inline int64
dot(const int16 *q, const int8 *codes, int dims)
{
#ifdef DENSE_HAVE_AVX512
	if (cpu_avx512 < 0)
		cpu_avx512 = SparseAvx512Usable() && __builtin_cpu_supports("avx512bw") ? 1 : 0;
	if (cpu_avx512 == 1 && sparse_simd)
		return dot_codes_avx512(q, codes, dims);
#endif
	return dot_codes(q, codes, dims);
}

/* whether float squares and products of a vector of this norm are exact enough */
static inline bool
norm_in_range(double norm)
{
	return norm >= 1e-12 && norm <= 1e12;
}

/* the lower bound of the row's cosine distance (the file's comment) */
static double
row_bound(DenseScanOpaque so, const DenseCodes *c)
{
	int			dims = so->query->dim;
	double		rowError,
				sim;

	if (c->norm == 0 || so->queryNorm == 0)
		return get_float8_infinity();
	if (!norm_in_range(c->norm) || !norm_in_range(so->queryNorm))
		return 0;
	rowError = c->error / c->norm;
	sim = so->queryStep * c->scale * dot(so->queryCodes, c->codes, dims) / (so->queryNorm * c->norm) +
		rowError +
		so->queryError / so->queryNorm * (1 + rowError) +
		2.0 * (dims + 4) * FLT_EPSILON * (1 + rowError);
	return sim >= 1 ? 0 : 1 - sim;
}

/* the query's norm, and its int16 codes with their step and error */
static void
encode_query(DenseScanOpaque so)
{
	const DenseVector *q = so->query;
	double		max = 0,
				error = 0,
				norm = 0;

	so->queryCodes = palloc(sizeof(int16) * q->dim);
	for (int i = 0; i < q->dim; i++)
	{
		norm += (double) q->x[i] * q->x[i];
		max = Max(max, fabs((double) q->x[i]));
	}
	so->queryNorm = sqrt(norm);
	so->queryStep = max / DENSE_QUERY_MAX;
	for (int i = 0; i < q->dim; i++)
	{
		double		code = so->queryStep > 0 ? rint(q->x[i] / so->queryStep) : 0;
		double		diff = q->x[i] - so->queryStep * code;

		so->queryCodes[i] = (int16) code;
		error += diff * diff;
	}
	so->queryError = sqrt(error);
}

static void
add_candidate(DenseScanOpaque so, double bound, ItemPointer tid, bool isnull)
{
	if (so->n == so->max)
	{
		so->max = Max(so->max * 2, 1024);
		so->heap = so->heap == NULL ?
			MemoryContextAllocHuge(so->cxt, sizeof(Candidate) * so->max) :
			repalloc_huge(so->heap, sizeof(Candidate) * so->max);
	}
	so->heap[so->n].bound = bound;
	so->heap[so->n].tid = *tid;
	so->heap[so->n].isnull = isnull;
	so->n++;
}

static inline bool
before(const Candidate *a, const Candidate *b)
{
	return a->isnull != b->isnull ? b->isnull : a->bound < b->bound;
}

static void
sift_down(Candidate *h, int64 n, int64 i)
{
	for (;;)
	{
		int64		least = i,
					l = 2 * i + 1,
					r = l + 1;
		Candidate	t;

		if (l < n && before(&h[l], &h[least]))
			least = l;
		if (r < n && before(&h[r], &h[least]))
			least = r;
		if (least == i)
			return;
		t = h[i];
		h[i] = h[least];
		h[least] = t;
		i = least;
	}
}

/*
 * The codes of a row at byte at of a pinned code page. The page is not
 * locked: an item and its line pointer never change once written (an insert
 * adds items below the last, VACUUM leaves code pages alone, nothing
 * compacts them), and a row names its codes only once they are written, in
 * the same WAL record, under the row page's lock the scan took to read the
 * row; a pin keeps them readable, as it keeps a found heap tuple. Nor is the
 * page's type checked (a cache miss at the page's end, for every row): a
 * damaged index gives wrong rows here, never a read outside the page, and
 * dense_flat_check finds it.
 */
static const DenseCodes *
row_codes(Relation index, Buffer buf, Page page, uint16 at, int dims)
{
	const DenseCodes *codes = DenseCodesAt(page, at, dims);

	if (codes == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" names codes that page %u does not hold",
						RelationGetRelationName(index), BufferGetBlockNumber(buf)),
				 errhint("REINDEX it.")));
	return codes;
}

/*
 * How far ahead of the group scored its memory is asked for: a code page's
 * buffer descriptor, then its codes. Only the page scored is pinned: a
 * backend keeps 8 pins in an array and the rest in a hash table that every
 * pin and release then searches (pinning 8 pages ahead cost a filtered scan
 * about 3% more, ad hoc, session 38).
 */
#define DENSE_DESCRIPTOR_AHEAD 16
#define DENSE_CODES_AHEAD 4

/*
 * This backend's buffers of one index's code pages, as last found:
 * ReadRecentBuffer pins such a buffer without a lookup in the shared buffer
 * table (a quarter of a filtered scan's time went to those lookups), and
 * falls back to one when the page has left it.
 */
static struct
{
	Oid			relid;
	RelFileNode node;
	BlockNumber n;
	Buffer	   *bufs;
}			recent;

static void
recent_buffers(Relation index, BlockNumber nblocks)
{
	if (recent.bufs == NULL || recent.relid != RelationGetRelid(index) ||
		!RelFileNodeEquals(recent.node, index->rd_node))
	{
		if (recent.bufs != NULL)
			pfree(recent.bufs);
		recent.bufs = NULL;
		recent.n = 0;
		recent.relid = RelationGetRelid(index);
		recent.node = index->rd_node;
	}
	if (nblocks > recent.n)
	{
		BlockNumber n = Max(nblocks, recent.n * 2);

		recent.bufs = recent.bufs == NULL ?
			MemoryContextAllocHuge(TopMemoryContext, sizeof(Buffer) * n) :
			repalloc_huge(recent.bufs, sizeof(Buffer) * n);
		memset(recent.bufs + recent.n, 0, sizeof(Buffer) * (n - recent.n));
		recent.n = n;
	}
}

/* pin code page blk (< recent.n) */
static Buffer
pin_codes(Relation index, BlockNumber blk)
{
	Buffer		buf = recent.bufs[blk];

	if (BufferIsValid(buf) && ReadRecentBuffer(index->rd_node, MAIN_FORKNUM, blk, buf))
		return buf;
	buf = ReadBuffer(index, blk);
	recent.bufs[blk] = buf;
	return buf;
}

/* code page blk's shared buffer as last found, not pinned, or InvalidBuffer */
static inline Buffer
recent_shared(BlockNumber blk)
{
	Buffer		buf = recent.bufs[blk];

	return BufferIsValid(buf) && !BufferIsLocal(buf) ? buf : InvalidBuffer;
}

/*
 * The page of that buffer, or NULL: only its memory is asked for, which
 * whatever page the buffer holds by then leaves readable.
 */
static inline Page
recent_page(BlockNumber blk)
{
	Buffer		buf = recent_shared(blk);

	return BufferIsValid(buf) ? BufferGetPage(buf) : NULL;
}

/* ask the CPU for a buffer's descriptor, which pinning it reads and writes */
static inline void
prefetch_descriptor(BlockNumber blk)
{
	Buffer		buf = recent_shared(blk);

	if (BufferIsValid(buf))
		__builtin_prefetch(GetBufferDescriptor(buf - 1), 1);
}

/*
 * Ask the CPU for every line of the codes of rows need[from .. to - 1] in
 * their page's buffer as last found.
 */
static inline void
prefetch_codes(const DenseRow *rows, const int *need, int from, int to, int dims)
{
	Page		page = recent_page(rows[need[from]].codesBlk);

	if (page == NULL)
		return;
	for (int j = from; j < to; j++)
	{
		const char *item = page + rows[need[j]].codesAt % BLCKSZ;

		for (int line = 0; line < DENSE_CODES_SIZE(dims); line += 64)
			__builtin_prefetch(item + line);
	}
}

/*
 * Score the rows of one row page (copied out), reading their codes: the
 * rows whose codes share a page form a group, and the memory of the groups
 * ahead of the one scored is asked for, so that the cache misses of many
 * pages overlap (a filter's rows lie one in a page or so: the scan waits on
 * memory, not on the sums).
 */
static void
score_rows(IndexScanDesc scan, const DenseRow *rows, int n, const SparseFilter *filter, int dims)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	int		   *need = so->need;
	int		   *groupStart = so->groupStart;
	int			nlive = 0,
				nneed = 0,
				ngroups = 0;

	for (int i = 0; i < n; i++)
	{
		ItemPointerData tid = rows[i].tid;

		if (ItemPointerIsValid(&tid))
		{
			so->live[nlive] = i;
			so->liveKeys[nlive++] = SparseTidKey(&tid);
		}
	}
	if (filter != NULL)
		SparseFilterTidsFrom(filter, &so->cursor, so->liveKeys, nlive, so->allowed);
	for (int l = 0; l < nlive; l++)
	{
		int			i = so->live[l];
		const DenseRow *row = &rows[i];
		ItemPointerData tid = row->tid;

		if (filter != NULL && !so->allowed[l])
			continue;
		if (so->queryNull || !BlockNumberIsValid(row->codesBlk))
			add_candidate(so, 0, &tid, !so->queryNull);
		else
		{
			DenseCheckBlock(index, &so->nblocks, row->codesBlk, 0);
			if (nneed == 0 || row->codesBlk != rows[need[nneed - 1]].codesBlk)
				groupStart[ngroups++] = nneed;
			need[nneed++] = i;
		}
	}
	groupStart[ngroups] = nneed;
	if (nneed > 0)
		recent_buffers(index, so->nblocks);

	for (int g = 0; g < ngroups; g++)
	{
		Buffer		buf;
		Page		page;

		if (g + DENSE_DESCRIPTOR_AHEAD < ngroups)
			prefetch_descriptor(rows[need[groupStart[g + DENSE_DESCRIPTOR_AHEAD]]].codesBlk);
		if (g + DENSE_CODES_AHEAD < ngroups)
			prefetch_codes(rows, need, groupStart[g + DENSE_CODES_AHEAD],
						   groupStart[g + DENSE_CODES_AHEAD + 1], dims);
		buf = pin_codes(index, rows[need[groupStart[g]]].codesBlk);
		page = BufferGetPage(buf);
		for (int j = groupStart[g]; j < groupStart[g + 1]; j++)
		{
			const DenseRow *row = &rows[need[j]];
			ItemPointerData tid = row->tid;

			add_candidate(so, row_bound(so, row_codes(index, buf, page, row->codesAt, dims)), &tid, false);
		}
		ReleaseBuffer(buf);
	}
}

/* every candidate, in a heap */
static void
score_all(IndexScanDesc scan)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	DenseMetaPageData meta;
	SparseFilter *filter = NULL;
	DenseRow   *rows;
	MemoryContext oldcxt = MemoryContextSwitchTo(so->cxt);

	if (scan->numberOfKeys > 0)
		filter = SparseFilterBegin(scan, SPARSE_FILTER_ANY, 0);
	DenseReadMeta(index, &meta);
	if (!so->queryNull)
	{
		so->query = DatumGetDenseVector(scan->orderByData[0].sk_argument);
		if (meta.dims != 0 && so->query->dim != meta.dims)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("different vector dimensions %d and %d", meta.dims, so->query->dim)));
		encode_query(so);
	}
	rows = palloc(sizeof(DenseRow) * DENSE_ROWS_PER_PAGE);
	so->live = palloc(sizeof(int) * DENSE_ROWS_PER_PAGE);
	so->liveKeys = palloc(sizeof(uint64) * DENSE_ROWS_PER_PAGE);
	so->allowed = palloc(sizeof(bool) * DENSE_ROWS_PER_PAGE);
	so->need = palloc(sizeof(int) * DENSE_ROWS_PER_PAGE);
	so->groupStart = palloc(sizeof(int) * (DENSE_ROWS_PER_PAGE + 1));
	for (BlockNumber blk = meta.rowsHead, pages = 0; BlockNumberIsValid(blk); pages++)
	{
		Buffer		buf;
		Page		page;
		int			n;

		CHECK_FOR_INTERRUPTS();
		DenseCheckBlock(index, &so->nblocks, blk, pages);
		buf = ReadBuffer(index, blk);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = DensePage(index, buf, DENSE_PAGE_ROWS);
		n = DensePageNRows(page);
		memcpy(rows, DensePageRows(page), sizeof(DenseRow) * n);
		blk = DensePageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
		/* no code page is locked while a row page is */
		score_rows(scan, rows, n, filter, meta.dims);
	}
	for (int64 i = so->n / 2 - 1; i >= 0; i--)
		sift_down(so->heap, so->n, i);
	MemoryContextSwitchTo(oldcxt);
}

/* the row's ORDER BY value for the executor: the bound, or NULL */
static void
set_order_value(IndexScanDesc scan, const double *bound)
{
	/* the filter is a superset: the executor tests the conditions */
	scan->xs_recheck = scan->numberOfKeys > 0;
	if (scan->numberOfOrderBys == 0)
		return;
	scan->xs_recheckorderby = bound != NULL;
	scan->xs_orderbyvals[0] = bound != NULL ? Float8GetDatum(*bound) : (Datum) 0;
	scan->xs_orderbynulls[0] = bound == NULL;
}

bool
dense_gettuple(IndexScanDesc scan, ScanDirection dir)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;

	if (dir != ForwardScanDirection)
		elog(ERROR, "dense_flat supports only forward scans");
	if (!so->started)
	{
		so->started = true;
		pgstat_count_index_scan(scan->indexRelation);
		for (int i = 0; i < scan->numberOfKeys; i++)
			if (scan->keyData[i].sk_flags & SK_ISNULL)
				return false;	/* every filter operator is strict */
		score_all(scan);
	}
	if (so->n == 0)
		return false;
	scan->xs_heaptid = so->heap[0].tid;
	set_order_value(scan, so->queryNull || so->heap[0].isnull ? NULL : &so->heap[0].bound);
	so->heap[0] = so->heap[--so->n];
	sift_down(so->heap, so->n, 0);
	return true;
}

void
dense_endscan(IndexScanDesc scan)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;

	MemoryContextDelete(so->cxt);
	pfree(so);
	scan->opaque = NULL;
}
