/*
 * dense_insert.c: aminsert appends the row's codes and its DenseRow, in one
 * generic WAL record, under the metapage's lock (inserts are serialised;
 * each is a few hundred bytes).
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

bool
dense_insert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
			 Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
			 IndexInfo *indexInfo)
{
	DenseVector *v;
	DenseCodes *c;
	Size		size;
	Buffer		metaBuf,
				codesBuf,
				rowsBuf,
				newRowsBuf = InvalidBuffer;
	Page		metaPage,
				codesPage,
				rowsPage;
	DenseMetaPage meta;
	GenericXLogState *state;
	OffsetNumber off;
	DenseRow   *row;

	if (isnull[0])
		return false;
	v = DatumGetDenseVector(values[0]);
	c = DenseQuantize(index, v);
	size = DENSE_CODES_SIZE(v->dim);

	metaBuf = ReadBuffer(index, DENSE_METAPAGE_BLKNO);
	LockBuffer(metaBuf, BUFFER_LOCK_EXCLUSIVE);
	(void) DensePage(index, metaBuf, DENSE_PAGE_META);
	DenseCheckDims(index, DensePageGetMeta(BufferGetPage(metaBuf))->dims, v->dim);

	/* the code page with room, or a new one */
	codesBuf = InvalidBuffer;
	{
		BlockNumber tail = DensePageGetMeta(BufferGetPage(metaBuf))->codesTail;

		if (BlockNumberIsValid(tail))
		{
			codesBuf = ReadBuffer(index, tail);
			LockBuffer(codesBuf, BUFFER_LOCK_EXCLUSIVE);
			if (PageGetFreeSpace(DensePage(index, codesBuf, DENSE_PAGE_CODES)) < size)
			{
				UnlockReleaseBuffer(codesBuf);
				codesBuf = InvalidBuffer;
			}
		}
	}
	state = GenericXLogStart(index);
	metaPage = GenericXLogRegisterBuffer(state, metaBuf, 0);
	meta = DensePageGetMeta(metaPage);
	if (BufferIsValid(codesBuf))
		codesPage = GenericXLogRegisterBuffer(state, codesBuf, 0);
	else
	{
		codesBuf = extend(index);
		codesPage = GenericXLogRegisterBuffer(state, codesBuf, GENERIC_XLOG_FULL_IMAGE);
		DenseInitPage(codesPage, DENSE_PAGE_CODES);
		meta->codesTail = BufferGetBlockNumber(codesBuf);
	}
	off = PageAddItem(codesPage, (Item) c, size, InvalidOffsetNumber, false, false);
	if (off == InvalidOffsetNumber)
		elog(ERROR, "could not add codes to dense_flat index \"%s\"", RelationGetRelationName(index));

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
	row->codesBlk = BufferGetBlockNumber(codesBuf);
	row->codesOff = off;
	((PageHeader) rowsPage)->pd_lower += sizeof(DenseRow);
	meta->dims = v->dim;
	meta->rows++;
	GenericXLogFinish(state);

	if (BufferIsValid(newRowsBuf))
		UnlockReleaseBuffer(newRowsBuf);
	UnlockReleaseBuffer(rowsBuf);
	UnlockReleaseBuffer(codesBuf);
	UnlockReleaseBuffer(metaBuf);
	return false;
}
