/*
 * dense_insert.c: aminsert appends the row's codes (none for a NULL vector)
 * and its DenseRow, in one generic WAL record, under the metapage's lock
 * (inserts are serialised; each writes about a kilobyte). With a graph the
 * codes have room for links, and none: the row is in the graph's tail,
 * which every walk scores.
 */
#include "postgres.h"

#include "storage/lmgr.h"

#include "dense_flat.h"

/* a new page at the end of the index, locked */
static Buffer
extend(Relation index)
{
	Buffer		buf;

	LockRelationForExtension(index, ExclusiveLock);
	buf = ReadBuffer(index, P_NEW);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	UnlockRelationForExtension(index, ExclusiveLock);
	return buf;
}

/*
 * The code page with room for size bytes, locked and registered in state
 * (a new one the metapage then names), its image, and the byte offset of
 * codes added there.
 */
static Buffer
add_codes(Relation index, GenericXLogState *state, DenseMetaPage meta, const DenseCodes *c,
		  Size size, Page *image, uint16 *at)
{
	Buffer		buf = InvalidBuffer;
	Page		page;

	if (BlockNumberIsValid(meta->codesTail))
	{
		buf = ReadBuffer(index, meta->codesTail);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		if (PageGetFreeSpace(DensePage(index, buf, DENSE_PAGE_CODES)) < size)
		{
			UnlockReleaseBuffer(buf);
			buf = InvalidBuffer;
		}
	}
	if (BufferIsValid(buf))
		page = GenericXLogRegisterBuffer(state, buf, 0);
	else
	{
		buf = extend(index);
		page = GenericXLogRegisterBuffer(state, buf, GENERIC_XLOG_FULL_IMAGE);
		DenseInitPage(page, DENSE_PAGE_CODES);
		meta->codesTail = BufferGetBlockNumber(buf);
	}
	*at = DensePageAddCodes(index, page, c, size);
	*image = page;
	return buf;
}

bool
dense_insert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
			 Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
			 IndexInfo *indexInfo)
{
	DenseVector *v = NULL;
	DenseCodes *c = NULL;
	Buffer		metaBuf,
				codesBuf = InvalidBuffer,
				rowsBuf,
				newRowsBuf = InvalidBuffer;
	Page		rowsPage,
				codesPage = NULL;
	DenseMetaPage meta;
	GenericXLogState *state;
	uint16		at = 0;
	DenseRow   *row;

	if (!isnull[0])
	{
		v = DatumGetDenseVector(values[0]);
		c = DenseQuantize(index, v, 0);
	}

	metaBuf = ReadBuffer(index, DENSE_METAPAGE_BLKNO);
	LockBuffer(metaBuf, BUFFER_LOCK_EXCLUSIVE);
	(void) DensePage(index, metaBuf, DENSE_PAGE_META);
	if (v != NULL)
		DenseCheckDims(index, DensePageGetMeta(BufferGetPage(metaBuf))->dims, v->dim,
					   DensePageGetMeta(BufferGetPage(metaBuf))->degree);
	state = GenericXLogStart(index);
	meta = DensePageGetMeta(GenericXLogRegisterBuffer(state, metaBuf, 0));
	if (c != NULL)
	{
		Size		size = DENSE_ITEM_SIZE(v->dim, meta->degree);

		if (meta->degree > 0)
		{
			/* room for its links, which its row's place starts (it is the graph's tail) */
			DenseCodes *item = palloc0(size);

			memcpy(item, c, DENSE_CODES_SIZE(v->dim));
			c = item;
		}
		codesBuf = add_codes(index, state, meta, c, size, &codesPage, &at);
		meta->dims = v->dim;
	}

	/* the row chain's tail with room, or a new tail */
	if (BlockNumberIsValid(meta->rowsTail))
	{
		rowsBuf = ReadBuffer(index, meta->rowsTail);
		LockBuffer(rowsBuf, BUFFER_LOCK_EXCLUSIVE);
		(void) DensePage(index, rowsBuf, DENSE_PAGE_ROWS);
		rowsPage = GenericXLogRegisterBuffer(state, rowsBuf, 0);
		if (DensePageNRows(rowsPage) >= DENSE_ROWS_PER_PAGE)
		{
			newRowsBuf = extend(index);
			DensePageGetOpaque(rowsPage)->next = BufferGetBlockNumber(newRowsBuf);
			rowsPage = GenericXLogRegisterBuffer(state, newRowsBuf, GENERIC_XLOG_FULL_IMAGE);
			DenseInitPage(rowsPage, DENSE_PAGE_ROWS);
			meta->rowsTail = BufferGetBlockNumber(newRowsBuf);
		}
	}
	else
	{
		rowsBuf = extend(index);
		rowsPage = GenericXLogRegisterBuffer(state, rowsBuf, GENERIC_XLOG_FULL_IMAGE);
		DenseInitPage(rowsPage, DENSE_PAGE_ROWS);
		meta->rowsHead = meta->rowsTail = BufferGetBlockNumber(rowsBuf);
	}
	row = &DensePageRows(rowsPage)[DensePageNRows(rowsPage)];
	row->tid = *heap_tid;
	row->codesBlk = BufferIsValid(codesBuf) ? BufferGetBlockNumber(codesBuf) : InvalidBlockNumber;
	row->codesAt = at;
	if (BufferIsValid(codesBuf) && meta->degree > 0)
	{
		DenseLinks *links = DenseCodesLinks(codesPage + at, v->dim);

		links->rowBlk = BufferGetBlockNumber(BufferIsValid(newRowsBuf) ? newRowsBuf : rowsBuf);
		links->rowIndex = (uint16) DensePageNRows(rowsPage);
	}
	((PageHeader) rowsPage)->pd_lower += sizeof(DenseRow);
	meta->rows++;
	GenericXLogFinish(state);

	if (BufferIsValid(newRowsBuf))
		UnlockReleaseBuffer(newRowsBuf);
	UnlockReleaseBuffer(rowsBuf);
	if (BufferIsValid(codesBuf))
		UnlockReleaseBuffer(codesBuf);
	UnlockReleaseBuffer(metaBuf);
	return false;
}
