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
	((PageHeader) page)->pd_lower = ((char *) meta + sizeof(DenseMetaPageData)) - (char *) page;
}

/* a row's dimensions must be the index's (set by its first row) */
void
DenseCheckDims(Relation index, int32 indexDims, int32 rowDims)
{
	if (rowDims < 1 || rowDims > DENSE_MAX_DIMS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("dense_flat index \"%s\" takes vectors of 1 to %d dimensions, not %d",
						RelationGetRelationName(index), DENSE_MAX_DIMS, rowDims)));
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
DenseQuantize(Relation index, const DenseVector *v)
{
	int			dims = v->dim;
	DenseCodes *c;
	double		maxabs = 0,
				err2 = 0,
				norm2 = 0;

	DenseCheckDims(index, 0, dims);
	c = palloc0(DENSE_CODES_SIZE(dims));
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
	Buffer		codesBuf;		/* the code page being filled */
	DenseRow   *rows;
	int64		nrows;
	int64		maxRows;
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
	DenseCheckDims(index, bs->dims, v->dim);
	bs->dims = v->dim;
	c = DenseQuantize(index, v);
	size = DENSE_CODES_SIZE(v->dim);
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
	MemoryContextReset(bs->tmpCtx);

	append_row(bs, tid, BufferGetBlockNumber(bs->codesBuf), at);
}

/* the row chain of bs->rows; sets the metapage's head and tail */
static void
write_rows(BuildState *bs, DenseMetaPage meta)
{
	Buffer		prev = InvalidBuffer;

	for (int64 done = 0; done < bs->nrows;)
	{
		Buffer		buf = new_page(bs->index, DENSE_PAGE_ROWS);
		Page		page = BufferGetPage(buf);
		int			n = (int) Min(bs->nrows - done, (int64) DENSE_ROWS_PER_PAGE);

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
	meta->dims = bs.dims;
	meta->rows = bs.nrows;
	MarkBufferDirty(metaBuf);
	UnlockReleaseBuffer(metaBuf);
	MemoryContextDelete(bs.tmpCtx);
	pfree(bs.rows);

	if (RelationNeedsWAL(index))
		log_newpage_range(index, MAIN_FORKNUM, 0, RelationGetNumberOfBlocks(index), true);

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
	MarkBufferDirty(buf);
	log_newpage_buffer(buf, true);
	END_CRIT_SECTION();
	UnlockReleaseBuffer(buf);
}
