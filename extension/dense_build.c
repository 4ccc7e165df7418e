/*
 * dense_build.c: CREATE INDEX for dense_flat, and the quantization every
 * row goes through.
 *
 * The build appends each row's codes to code pages as the table scan meets
 * it and keeps its DenseRow in memory; then it writes the row chain and the
 * metapage, and WAL-logs every page whole (the build writes no other WAL).
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "access/tableam.h"
#include "access/xloginsert.h"
#include "catalog/index.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/memutils.h"

#include "dense_flat.h"

void
DenseInitPage(Page page, uint16 type)
{
	DensePageOpaque opaque;

	PageInit(page, BLCKSZ, sizeof(DensePageOpaqueData));
	opaque = DensePageGetOpaque(page);
	opaque->next = InvalidBlockNumber;
	opaque->type = type;
	opaque->page_id = DENSE_PAGE_ID;
}

static void
init_metapage(Page page)
{
	DenseMetaPage meta;

	DenseInitPage(page, DENSE_PAGE_META);
	meta = DensePageGetMeta(page);
	memset(meta, 0, sizeof(DenseMetaPageData));
	meta->magic = DENSE_MAGIC;
	meta->version = DENSE_VERSION;
	meta->rowsHead = InvalidBlockNumber;
	meta->rowsTail = InvalidBlockNumber;
	meta->codesTail = InvalidBlockNumber;
	meta->graphEndBlk = InvalidBlockNumber;
	((PageHeader) page)->pd_lower = ((char *) meta + sizeof(DenseMetaPageData)) - (char *) page;
}

/*
 * a row's dimensions must be the index's (set by its first row), and its
 * codes, with links for a graph of degree, must fit on a page
 */
void
DenseCheckDims(Relation index, int32 indexDims, int32 rowDims, int degree)
{
	int			maxDims = DENSE_MAX_DIMS;

	if (degree > 0)
		maxDims = (int) (MAXALIGN_DOWN(DENSE_MAX_ITEM_SIZE - DENSE_LINKS_SIZE(degree)) -
						 offsetof(DenseCodes, codes));
	if (rowDims < 1 || rowDims > maxDims)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("dense_flat index \"%s\" takes vectors of 1 to %d dimensions, not %d",
						RelationGetRelationName(index), maxDims, rowDims),
				 degree > 0 ? errdetail("Its graph's links take room on the page: graph_degree is %d.", degree) : 0));
	if (indexDims != 0 && rowDims != indexDims)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("dense_flat index \"%s\" holds vectors of %d dimensions, not %d",
						RelationGetRelationName(index), indexDims, rowDims)));
}

/*
 * v's codes: scale = max |x_i| / 127, codes[i] = x_i / scale rounded. The
 * error's norm and |x| are computed in double and stored rounded up, so
 * that |x - scale * codes| <= error holds for the float values.
 */
DenseCodes *
DenseQuantize(Relation index, const DenseVector *v, int degree)
{
	int			dims = v->dim;
	DenseCodes *c;
	double		maxabs = 0,
				err2 = 0,
				norm2 = 0;

	DenseCheckDims(index, 0, dims, degree);
	/* with room for links (none yet) where the index has a graph */
	c = palloc0(DENSE_ITEM_SIZE(dims, degree));
	for (int i = 0; i < dims; i++)
	{
		maxabs = Max(maxabs, fabs((double) v->x[i]));
		norm2 += (double) v->x[i] * v->x[i];
	}
	c->scale = (float4) (maxabs / 127.0);
	for (int i = 0; i < dims; i++)
	{
		double		code = c->scale > 0 ? rint(v->x[i] / (double) c->scale) : 0;
		double		diff;

		code = Max(-127.0, Min(127.0, code));
		c->codes[i] = (int8) code;
		diff = (double) v->x[i] - (double) c->scale * code;
		err2 += diff * diff;
	}
	c->error = nextafterf((float4) (sqrt(err2) * (1 + 1e-9)), FLT_MAX);
	c->norm = (float4) sqrt(norm2);
	return c;
}

typedef struct BuildState
{
	Relation	index;
	int32		dims;
	int			degree;			/* of the graph, 0: none */
	int			buildEf;
	Buffer		codesBuf;		/* the code page being filled */
	DenseRow   *rows;
	int64		nrows;
	int64		maxRows;
	BlockNumber *rowBlocks;		/* the row chain's pages, in order */
	/* with a graph: its nodes, the rows with a vector, in order */
	DenseGraph *graph;
	DenseRef   *nodeRefs;		/* each node's codes */
	int64	   *nodeRows;		/* its row's place in bs->rows */
	int64		maxNodes;
	int64		graphEndRow;	/* the rows up to the last node */
	bool		graphFull;		/* the rows after it are the tail */
	Buffer		metaBuf;
	MemoryContext tmpCtx;
} BuildState;

static Buffer
new_page(Relation index, uint16 type)
{
	Buffer		buf = ReadBuffer(index, P_NEW);

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	DenseInitPage(BufferGetPage(buf), type);
	MarkBufferDirty(buf);
	return buf;
}

static void
append_row(BuildState *bs, ItemPointer tid, BlockNumber codesBlk, uint16 codesAt)
{
	if (bs->nrows == bs->maxRows)
	{
		bs->maxRows *= 2;
		bs->rows = repalloc_huge(bs->rows, sizeof(DenseRow) * bs->maxRows);
	}
	bs->rows[bs->nrows].tid = *tid;
	bs->rows[bs->nrows].codesBlk = codesBlk;
	bs->rows[bs->nrows].codesAt = codesAt;
	bs->nrows++;
}

/* the row about to be appended, with a vector, as the graph's next node */
static void
add_node(BuildState *bs, const DenseCodes *c, BlockNumber blk, uint16 at)
{
	DenseGraph *g;

	if (bs->graph == NULL)
		bs->graph = DenseGraphCreate(bs->index, bs->dims, bs->degree, bs->buildEf);
	g = bs->graph;
	if (bs->graphFull || !DenseGraphAdd(g, c))
	{
		if (!bs->graphFull)
			ereport(NOTICE,
					(errmsg("dense_flat graph no longer fits into maintenance_work_mem after " INT64_FORMAT " rows",
							bs->nrows),
					 errdetail("The rest are linked into it one by one at the build's end, which takes significantly more time."),
					 errhint("Increase maintenance_work_mem to build faster.")));
		bs->graphFull = true;
		return;
	}
	bs->graphEndRow = bs->nrows + 1;
	if (g->n > bs->maxNodes)
	{
		bs->maxNodes = Max(bs->maxNodes * 2, 1024);
		bs->nodeRefs = bs->nodeRefs == NULL ?
			palloc_extended(sizeof(DenseRef) * bs->maxNodes, MCXT_ALLOC_HUGE) :
			repalloc_huge(bs->nodeRefs, sizeof(DenseRef) * bs->maxNodes);
		bs->nodeRows = bs->nodeRows == NULL ?
			palloc_extended(sizeof(int64) * bs->maxNodes, MCXT_ALLOC_HUGE) :
			repalloc_huge(bs->nodeRows, sizeof(int64) * bs->maxNodes);
	}
	DenseRefSet(&bs->nodeRefs[g->n - 1], blk, at);
	bs->nodeRows[g->n - 1] = bs->nrows;
}

static void
build_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
			   bool tupleIsAlive, void *state)
{
	BuildState *bs = (BuildState *) state;
	MemoryContext oldcxt;
	DenseVector *v;
	DenseCodes *c;
	Size		size;
	uint16		at;
	Page		page;

	if (isnull[0])
	{
		append_row(bs, tid, InvalidBlockNumber, 0);
		return;
	}
	oldcxt = MemoryContextSwitchTo(bs->tmpCtx);
	v = DatumGetDenseVector(values[0]);
	DenseCheckDims(index, bs->dims, v->dim, bs->degree);
	bs->dims = v->dim;
	c = DenseQuantize(index, v, bs->degree);
	size = DENSE_ITEM_SIZE(v->dim, bs->degree);
	page = BufferGetPage(bs->codesBuf);
	if (PageGetFreeSpace(page) < size)
	{
		UnlockReleaseBuffer(bs->codesBuf);
		bs->codesBuf = new_page(index, DENSE_PAGE_CODES);
		page = BufferGetPage(bs->codesBuf);
	}
	at = DensePageAddCodes(index, page, c, size);
	MarkBufferDirty(bs->codesBuf);
	MemoryContextSwitchTo(oldcxt);
	if (bs->degree > 0)
		add_node(bs, c, BufferGetBlockNumber(bs->codesBuf), at);
	MemoryContextReset(bs->tmpCtx);

	append_row(bs, tid, BufferGetBlockNumber(bs->codesBuf), at);
}

/* the row chain of bs->rows; sets the metapage's head and tail */
static void
write_rows(BuildState *bs, DenseMetaPage meta)
{
	Buffer		prev = InvalidBuffer;

	bs->rowBlocks = palloc_extended(sizeof(BlockNumber) * (bs->nrows / DENSE_ROWS_PER_PAGE + 1),
									MCXT_ALLOC_HUGE);
	for (int64 done = 0; done < bs->nrows;)
	{
		Buffer		buf = new_page(bs->index, DENSE_PAGE_ROWS);
		Page		page = BufferGetPage(buf);
		int			n = (int) Min(bs->nrows - done, (int64) DENSE_ROWS_PER_PAGE);

		bs->rowBlocks[done / DENSE_ROWS_PER_PAGE] = BufferGetBlockNumber(buf);
		memcpy(DensePageRows(page), &bs->rows[done], sizeof(DenseRow) * n);
		((PageHeader) page)->pd_lower += sizeof(DenseRow) * n;
		done += n;
		if (BufferIsValid(prev))
		{
			DensePageGetOpaque(BufferGetPage(prev))->next = BufferGetBlockNumber(buf);
			UnlockReleaseBuffer(prev);
		}
		else
			meta->rowsHead = BufferGetBlockNumber(buf);
		meta->rowsTail = BufferGetBlockNumber(buf);
		prev = buf;
	}
	if (BufferIsValid(prev))
		UnlockReleaseBuffer(prev);
}

/*
 * Make the graph of the nodes and write each node's links after its codes
 * (the code pages are still the build's alone, and are WAL-logged whole
 * afterwards); the metapage gets the entries and the graph's end, the chain's.
 */
static void
write_graph(BuildState *bs, DenseMetaPage meta)
{
	DenseGraph *g = bs->graph;
	Buffer		buf = InvalidBuffer;

	meta->degree = (uint16) bs->degree;
	meta->nentries = 0;
	if (!bs->graphFull)
	{
		/* every row: the graph ends with the chain */
		meta->graphEndBlk = meta->rowsTail;
		meta->graphEndIndex = (uint16) (bs->nrows - (bs->nrows - 1) / DENSE_ROWS_PER_PAGE * DENSE_ROWS_PER_PAGE);
		meta->graphRows = bs->nrows;
	}
	else
	{
		/* up to the row after the last node: that row is the tail's first */
		meta->graphEndBlk = bs->rowBlocks[bs->graphEndRow / DENSE_ROWS_PER_PAGE];
		meta->graphEndIndex = (uint16) (bs->graphEndRow % DENSE_ROWS_PER_PAGE);
		meta->graphRows = bs->graphEndRow;
	}
	if (g == NULL)
		return;
	DenseGraphBuild(g);
	meta->nentries = (uint16) g->nentries;
	for (int e = 0; e < g->nentries; e++)
		DenseMetaEntries(meta)[e] = bs->nodeRefs[g->entries[e]];
	((PageHeader) BufferGetPage(bs->metaBuf))->pd_lower =
		(char *) &DenseMetaEntries(meta)[g->nentries] - (char *) BufferGetPage(bs->metaBuf);

	/* every row with codes names its row; the nodes get their links */
	for (int64 row = 0, node = 0; row < bs->nrows; row++)
	{
		BlockNumber blk = bs->rows[row].codesBlk;
		DenseLinks *links;

		if (!BlockNumberIsValid(blk))
			continue;
		if (!BufferIsValid(buf) || BufferGetBlockNumber(buf) != blk)
		{
			if (BufferIsValid(buf))
			{
				MarkBufferDirty(buf);
				UnlockReleaseBuffer(buf);
			}
			buf = ReadBuffer(bs->index, blk);
			LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		}
		links = DenseCodesLinks(BufferGetPage(buf) + bs->rows[row].codesAt, g->dims);
		links->rowBlk = bs->rowBlocks[row / DENSE_ROWS_PER_PAGE];
		links->rowIndex = (uint16) (row % DENSE_ROWS_PER_PAGE);
		if (node < g->n && bs->nodeRows[node] == row)
		{
			const int32 *ids = g->links + (Size) node * g->capacity;

			links->nlinks = g->nlinks[node];
			for (int l = 0; l < g->nlinks[node]; l++)
				links->links[l] = bs->nodeRefs[ids[l]];
			node++;
		}
	}
	if (BufferIsValid(buf))
	{
		MarkBufferDirty(buf);
		UnlockReleaseBuffer(buf);
	}
}

IndexBuildResult *
dense_build(Relation heap, Relation index, IndexInfo *indexInfo)
{
	IndexBuildResult *result;
	BuildState	bs;
	Buffer		metaBuf;
	DenseMetaPage meta;
	double		reltuples;

	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));
	DenseCheckColumns(index);
	metaBuf = new_page(index, DENSE_PAGE_META);
	init_metapage(BufferGetPage(metaBuf));
	LockBuffer(metaBuf, BUFFER_LOCK_UNLOCK);

	memset(&bs, 0, sizeof(bs));
	bs.index = index;
	bs.metaBuf = metaBuf;
	bs.degree = DenseGraphDegree(index);
	bs.buildEf = DenseGraphBuildEf(index);
	bs.maxRows = 1024;
	bs.rows = palloc(sizeof(DenseRow) * bs.maxRows);
	bs.codesBuf = new_page(index, DENSE_PAGE_CODES);
	bs.tmpCtx = AllocSetContextCreate(CurrentMemoryContext, "dense_flat build", ALLOCSET_DEFAULT_SIZES);
	reltuples = table_index_build_scan(heap, index, indexInfo, true, true,
									   build_callback, (void *) &bs, NULL);
	LockBuffer(metaBuf, BUFFER_LOCK_EXCLUSIVE);
	meta = DensePageGetMeta(BufferGetPage(metaBuf));
	meta->codesTail = BufferGetBlockNumber(bs.codesBuf);
	UnlockReleaseBuffer(bs.codesBuf);
	write_rows(&bs, meta);
	if (bs.degree > 0)
		write_graph(&bs, meta);
	meta->dims = bs.dims;
	meta->rows = bs.nrows;
	MarkBufferDirty(metaBuf);
	UnlockReleaseBuffer(metaBuf);
	MemoryContextDelete(bs.tmpCtx);
	pfree(bs.rows);

	if (RelationNeedsWAL(index))
		log_newpage_range(index, MAIN_FORKNUM, 0, RelationGetNumberOfBlocks(index), true);
	/* the rows past maintenance_work_mem, linked as VACUUM links a tail: generic WAL */
	if (bs.graphFull)
		DenseMergeTail(index);

	result = (IndexBuildResult *) palloc(sizeof(IndexBuildResult));
	result->heap_tuples = reltuples;
	result->index_tuples = bs.nrows;
	return result;
}

void
dense_buildempty(Relation index)
{
	Buffer		buf;
	Page		page;

	/* the init fork of an unlogged index: its metapage, logged as a full page */
	buf = ReadBufferExtended(index, INIT_FORKNUM, P_NEW, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	START_CRIT_SECTION();
	page = BufferGetPage(buf);
	init_metapage(page);
	/* an empty graph: rows inserted after a reset get room for links, VACUUM links them */
	DensePageGetMeta(page)->degree = (uint16) DenseGraphDegree(index);
	MarkBufferDirty(buf);
	log_newpage_buffer(buf, true);
	END_CRIT_SECTION();
	UnlockReleaseBuffer(buf);
}
