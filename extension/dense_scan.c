/*
 * dense_scan.c: ORDER BY col <=> q, exactly, through the executor's
 * reordering.
 *
 * Without conditions, or under conditions that allow many rows
 * (walk_filtered), an index with a graph walks it instead (dense_walk.c)
 * and scores only the graph's tail here; what follows is the scoring both
 * share. The first call scores every row the scan's filter conditions allow
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
	DenseQuery	query;
	DenseMetaPageData meta;		/* as the scan began */
	DenseWalk  *walk;			/* a graph's: without conditions, or under a wide filter */
	/* under conditions (walk_filtered): the rows a walk may return (NULL: the executor tests them) */
	SparseFilter *walkFilter;
	SparseFilterCursor walkCursor;
	int64		walkBudget;		/* rows it may take before the scan scores the filter's rows instead */
	int64		walkTaken;
	uint64	   *returned;		/* the TID keys of the rows it returned, sorted once it stops */
	int64		nreturned;
	bool		restScored;		/* the rows the walk did not reach, once it is done */
	Candidate  *heap;			/* a min-heap by (isnull, bound) */
	int64		n;
	int64		max;
	SparseFilterCursor cursor;	/* where the last row's key was found */
	BlockNumber nblocks;		/* the index's size when last asked */
	/* score_rows' arrays, a row page's worth */
	DenseRow   *rows;
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
	memset(&so->query, 0, sizeof(so->query));
	so->walk = NULL;
	so->walkFilter = NULL;
	memset(&so->walkCursor, 0, sizeof(so->walkCursor));
	so->walkBudget = so->walkTaken = so->nreturned = 0;
	so->returned = NULL;
	so->restScored = false;
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
#endif

static inline int64
dot(const int16 *q, const int8 *codes, int dims)
{
#ifdef DENSE_HAVE_AVX512
	if (DenseSimd())
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

/*
 * The lower bound of the row's cosine distance (the file's comment), and
 * where estimate is not NULL the distance of the codes themselves, which a
 * graph walk follows (1 for a zero vector).
 */
double
DenseQueryBound(const DenseQuery *q, const DenseCodes *c, float4 *estimate)
{
	int			dims = q->vector->dim;
	double		rowError,
				est,
				sim;

	if (c->norm == 0 || q->norm == 0)
	{
		if (estimate != NULL)
			*estimate = 1;
		return get_float8_infinity();
	}
	if (!norm_in_range(c->norm) || !norm_in_range(q->norm))
	{
		if (estimate != NULL)
			*estimate = 1;
		return 0;
	}
	est = q->step * c->scale * dot(q->codes, c->codes, dims) / (q->norm * c->norm);
	if (estimate != NULL)
		*estimate = (float4) (1 - est);
	rowError = c->error / c->norm;
	sim = est + rowError +
		q->error / q->norm * (1 + rowError) +
		2.0 * (dims + 4) * FLT_EPSILON * (1 + rowError);
	return sim >= 1 ? 0 : 1 - sim;
}

/* the query's norm, and its int16 codes with their step and error */
void
DenseQueryEncode(DenseQuery *q, const DenseVector *v)
{
	double		max = 0,
				error = 0,
				norm = 0;

	q->vector = v;
	q->codes = palloc(sizeof(int16) * v->dim);
	for (int i = 0; i < v->dim; i++)
	{
		norm += (double) v->x[i] * v->x[i];
		max = Max(max, fabs((double) v->x[i]));
	}
	q->norm = sqrt(norm);
	q->step = max / DENSE_QUERY_MAX;
	for (int i = 0; i < v->dim; i++)
	{
		double		code = q->step > 0 ? rint(v->x[i] / q->step) : 0;
		double		diff = v->x[i] - q->step * code;

		q->codes[i] = (int16) code;
		error += diff * diff;
	}
	q->error = sqrt(error);
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

/* pin code page blk of an index of nblocks pages (blk is below) */
Buffer
DensePinCodes(Relation index, BlockNumber blk, BlockNumber nblocks)
{
	recent_buffers(index, nblocks);
	return pin_codes(index, blk);
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
 * Score rows from .. n - 1 of one row page (copied out), reading their
 * codes, except those a walk met: the rows whose codes share a page form a
 * group, and the memory of the groups ahead of the one scored is asked
 * for, so that the cache misses of many pages overlap (a filter's rows lie
 * one in a page or so: the scan waits on memory, not on the sums).
 */
static void
score_rows(IndexScanDesc scan, const DenseRow *rows, int from, int n, const SparseFilter *filter,
		   const DenseWalk *walk)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	int			dims = so->meta.dims;
	int		   *need = so->need;
	int		   *groupStart = so->groupStart;
	int			nlive = 0,
				nneed = 0,
				ngroups = 0;

	for (int i = from; i < n; i++)
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
		else if (walk == NULL || !DenseWalkMet(walk, row->codesBlk, row->codesAt))
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

			add_candidate(so, DenseQueryBound(&so->query, row_codes(index, buf, page, row->codesAt, dims), NULL),
						  &tid, false);
		}
		ReleaseBuffer(buf);
	}
}

/*
 * Add the candidates of the row chain from row (startBlk, startIndex) to
 * row (endBlk, endIndex), that one excluded (InvalidBlockNumber: the
 * chain's end), then make them all a heap.
 */
static void
score_chain(IndexScanDesc scan, BlockNumber startBlk, int startIndex, BlockNumber endBlk, int endIndex,
			const SparseFilter *filter, const DenseWalk *walk)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	DenseRow   *rows = so->rows;
	MemoryContext oldcxt = MemoryContextSwitchTo(so->cxt);

	for (BlockNumber blk = startBlk, pages = 0; BlockNumberIsValid(blk); pages++)
	{
		int			from = blk == startBlk ? startIndex : 0,
					n;
		bool		last = blk == endBlk;

		CHECK_FOR_INTERRUPTS();
		DenseCheckBlock(index, &so->nblocks, blk, pages);
		n = DenseCopyRowPage(index, blk, rows, &blk);
		if (last)
			n = Min(n, endIndex);
		/* no code page is locked while a row page is */
		score_rows(scan, rows, from, n, filter, walk);
		if (last)
			break;
	}
	for (int64 i = so->n / 2 - 1; i >= 0; i--)
		sift_down(so->heap, so->n, i);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * Under conditions, a graph's walk that returns only the rows they allow
 * can cost less than scoring every one of them. Scoring A allowed rows costs
 * about A x 0.7 us (their codes). A walk's first batch is 2 ef / s wide
 * (ef: hybrid_search.dense_ef_search, which a search raises to its k; s = A
 * / rows, the share of the nodes it meets that the conditions allow), twice
 * what holds ef rows they allow: a batch's last nodes are the ones a walk
 * is least sure of (at ef / s, 100 rows under a 25% filter had a recall of
 * 0.89, at 2 ef / s 0.95). It costs about 10 us a node of that width (ad
 * hoc, 50,000 rows of 1024 dimensions, session 41). So the walk wins once
 * A^2 > 29 ef rows, which DENSE_WALK_RATIO rounds up (there, at 100 rows
 * under a 25% filter, just past that bound, scoring took 3.7 ms and the
 * walk 3.9; under 50%, 8.0 and 2.0-2.6); below DENSE_WALK_MIN_ROWS allowed
 * rows (a few ms of scoring) the scan stays exact.
 */
#define DENSE_WALK_RATIO 32
#define DENSE_WALK_MIN_ROWS 10000
/* a set of rows is read in TID order (6 ns a row) up to this many times walk_from */
#define DENSE_WALK_READ 4

/* the allowed rows from which a walk costs less */
static double
walk_from(const DenseMetaPageData *meta)
{
	return Max(DENSE_WALK_MIN_ROWS, sqrt((double) DENSE_WALK_RATIO * dense_ef_search * meta->rows));
}

/*
 * Under conditions, on an index with a graph: whether to walk it anyway,
 * with *share the share of its nodes they allow, and in *filter the rows
 * they allow where it read them (none in an index of fewer rows than
 * walk_from, which begin reads as without a graph). A set of rows is read in TID order up to DENSE_WALK_READ x
 * walk_from rows, and estimated (SparseFilterRows). A longer one, or one
 * only a bitmap scan finds (a GIN query with no required entry, such as
 * metadata @> '{}', reads every entry), is not read: the walk leaves the
 * conditions to the executor and takes the least share such a set allows.
 * Either way the walk may take twice its first batch's rows (at most about
 * twice what scoring walk_from rows costs); past that the conditions reject
 * more than the share said, and the scan scores the rows they allow instead
 * (leave_walk).
 */
static bool
walk_filtered(IndexScanDesc scan, const DenseMetaPageData *meta, SparseFilter **filter, double *share)
{
	double		rows = (double) meta->rows;
	double		from = walk_from(meta);
	double		read = DENSE_WALK_READ * from;
	BlockNumber heapBlocks;

	if (rows < from)
		return false;
	*filter = SparseFilterBegin(scan, SPARSE_FILTER_ORDERED, (int64) read);
	if (*filter == NULL)
	{
		*share = Min(1.0, read / rows);
		elog(DEBUG1, "dense_flat index \"%s\" walks its graph under conditions whose rows it did not read",
			 RelationGetRelationName(scan->indexRelation));
		return true;
	}
	heapBlocks = scan->heapRelation != NULL ? RelationGetNumberOfBlocks(scan->heapRelation) : 0;
	*share = SparseFilterRows(*filter, rows, heapBlocks) / rows;
	if (*share * rows < from)
		return false;
	elog(DEBUG1, "dense_flat index \"%s\" walks its graph under conditions allowing about %.0f%% of its rows",
		 RelationGetRelationName(scan->indexRelation), *share * 100);
	return true;
}

/*
 * Begin: on an index with a graph, without conditions or under conditions
 * that allow many rows (walk_filtered), walk it and score the graph's tail
 * (the rows inserted since the build); else score every row the conditions
 * allow.
 */
static void
begin(IndexScanDesc scan)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;
	Relation	index = scan->indexRelation;
	DenseMetaPageData *meta = &so->meta;
	SparseFilter *filter = NULL;
	double		share = 1;
	bool		walk;
	MemoryContext oldcxt = MemoryContextSwitchTo(so->cxt);
	DenseRef   *entries = palloc(sizeof(DenseRef) * DENSE_MAX_ENTRIES);

	DenseReadMeta(index, meta, entries);
	if (!so->queryNull)
	{
		const DenseVector *v = DatumGetDenseVector(scan->orderByData[0].sk_argument);

		if (meta->dims != 0 && v->dim != meta->dims)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("different vector dimensions %d and %d", meta->dims, v->dim)));
		DenseQueryEncode(&so->query, v);
	}
	so->rows = palloc(sizeof(DenseRow) * DENSE_ROWS_PER_PAGE);
	so->live = palloc(sizeof(int) * DENSE_ROWS_PER_PAGE);
	so->liveKeys = palloc(sizeof(uint64) * DENSE_ROWS_PER_PAGE);
	so->allowed = palloc(sizeof(bool) * DENSE_ROWS_PER_PAGE);
	so->need = palloc(sizeof(int) * DENSE_ROWS_PER_PAGE);
	so->groupStart = palloc(sizeof(int) * (DENSE_ROWS_PER_PAGE + 1));
	walk = meta->degree > 0 && !so->queryNull &&
		(scan->numberOfKeys == 0 || walk_filtered(scan, meta, &filter, &share));
	/* a set walk_filtered read is whole; else the rows are read now */
	if (!walk && scan->numberOfKeys > 0 && filter == NULL)
		filter = SparseFilterBegin(scan, SPARSE_FILTER_ANY, 0);
	if (walk)
	{
		int			width = (int) Min(2 * dense_ef_search / share, (double) meta->rows + 1);

		so->walk = DenseWalkBegin(index, meta, entries, &so->query, width);
		if (scan->numberOfKeys > 0)
		{
			so->walkFilter = filter;
			so->walkBudget = 2 * (int64) width;
			so->returned = palloc(sizeof(uint64) * so->walkBudget);
		}
		if (BlockNumberIsValid(meta->graphEndBlk))
			score_chain(scan, meta->graphEndBlk, meta->graphEndIndex, InvalidBlockNumber, 0, filter, NULL);
		else
			score_chain(scan, meta->rowsHead, 0, InvalidBlockNumber, 0, filter, NULL);
	}
	else
		score_chain(scan, meta->rowsHead, 0, InvalidBlockNumber, 0, filter, NULL);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * A walk under conditions that took its bound of rows: they reject more
 * than walk_filtered expected. Score every row they allow, as an index
 * without a graph does, and pass over the rows the walk returned.
 */
static void
leave_walk(IndexScanDesc scan)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;

	elog(DEBUG1, "dense_flat index \"%s\" leaves its walk after %lld rows: the conditions reject more than expected",
		 RelationGetRelationName(scan->indexRelation), (long long) so->walkTaken);
	so->walk = NULL;
	if (so->walkFilter == NULL)
		so->walkFilter = SparseFilterBegin(scan, SPARSE_FILTER_ANY, 0);
	qsort(so->returned, so->nreturned, sizeof(uint64), SparseKeyCmp);
	so->n = 0;					/* the tail's candidates, scored again below */
	score_chain(scan, so->meta.rowsHead, 0, InvalidBlockNumber, 0, so->walkFilter, NULL);
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

/* whether a walk under conditions returned the row at TID key before it stopped */
static bool
walk_returned(DenseScanOpaque so, uint64 key)
{
	return so->nreturned > 0 && so->walk == NULL &&
		bsearch(&key, so->returned, so->nreturned, sizeof(uint64), SparseKeyCmp) != NULL;
}

/* return the heap's first candidate that a walk did not return */
static bool
return_candidate(IndexScanDesc scan)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;

	while (so->n > 0)
	{
		Candidate	c = so->heap[0];

		so->heap[0] = so->heap[--so->n];
		sift_down(so->heap, so->n, 0);
		if (walk_returned(so, SparseTidKey(&c.tid)))
			continue;
		scan->xs_heaptid = c.tid;
		set_order_value(scan, so->queryNull || c.isnull ? NULL : &c.bound);
		return true;
	}
	return false;
}

/*
 * A walk under conditions counts the rows it takes (returns, or passes over
 * as the filter rejects them) against its bound, and notes those it returns.
 */
static inline void
walk_count(DenseScanOpaque so, ItemPointer tid, bool returned)
{
	if (so->walkBudget == 0)
		return;
	so->walkTaken++;
	if (returned)
		so->returned[so->nreturned++] = SparseTidKey(tid);
}

/*
 * With a walk: its nodes and the tail's candidates, merged by bound; once
 * the walk has met every node it reaches, also the rows of the graph it did
 * not reach (and those without a vector), scored as a flat scan scores them.
 */
static bool
walk_gettuple(IndexScanDesc scan)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;

	for (;;)
	{
		const DenseWalkNode *node;
		ItemPointerData tid;

		if (so->walkBudget > 0 && so->walkTaken >= so->walkBudget)
		{
			leave_walk(scan);
			return return_candidate(scan);
		}
		node = DenseWalkPeek(so->walk);

		/*
		 * Once the walk has met all it reaches, the rest join its last batch
		 * by bound: a walk met whole in its first batch is a flat scan's order.
		 */
		if (DenseWalkExhausted(so->walk) && !so->restScored)
		{
			so->restScored = true;
			if (BlockNumberIsValid(so->meta.graphEndBlk))
				score_chain(scan, so->meta.rowsHead, 0, so->meta.graphEndBlk, so->meta.graphEndIndex,
							so->walkFilter, so->walk);
		}
		if (so->n > 0 && (node == NULL || (!so->heap[0].isnull && so->heap[0].bound <= node->bound)))
		{
			return_candidate(scan);
			walk_count(so, &scan->xs_heaptid, true);
			return true;
		}
		if (node == NULL)
			return false;
		if (DenseWalkTake(so->walk, &tid))
		{
			if (so->walkFilter != NULL)
			{
				uint64		key = SparseTidKey(&tid);
				bool		allowed;

				SparseFilterTidsFrom(so->walkFilter, &so->walkCursor, &key, 1, &allowed);
				if (!allowed)
				{
					walk_count(so, &tid, false);
					continue;
				}
			}
			walk_count(so, &tid, true);
			scan->xs_heaptid = tid;
			set_order_value(scan, &node->bound);
			return true;
		}
	}
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
		begin(scan);
	}
	if (so->walk != NULL)
	{
		/* the walk grows its arrays as it goes */
		MemoryContext oldcxt = MemoryContextSwitchTo(so->cxt);
		bool		found = walk_gettuple(scan);

		MemoryContextSwitchTo(oldcxt);
		return found;
	}
	return return_candidate(scan);
}

void
dense_endscan(IndexScanDesc scan)
{
	DenseScanOpaque so = (DenseScanOpaque) scan->opaque;

	MemoryContextDelete(so->cxt);
	pfree(so);
	scan->opaque = NULL;
}
