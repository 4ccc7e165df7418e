/*
 * sparse_insert.c: aminsert appends the row to the pending list, where the
 * next scan already finds it; past hybrid_search.sparse_pending_limit rows
 * (or 1/16 of the merged rows, if more) the inserting backend merges the
 * pending list into the segment, unless another merge is running.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"

#include "sparse_index.h"

/* append one item to the pending list; the caller holds the metapage lock */
static void
append_item(Relation index, Buffer metabuf, SparsePendingItem *item, Size size,
			bool newdoc, int32 nnz, uint64 length)
{
	SparseMetaPage m = SparsePageGetMeta(BufferGetPage(metabuf));
	Buffer		tailbuf = InvalidBuffer;
	Buffer		newbuf = InvalidBuffer;
	GenericXLogState *state;
	Page		metapage;
	Page		tailpage = NULL;
	Page		newpage = NULL;

	if (BlockNumberIsValid(m->pendingTail))
	{
		tailbuf = ReadBuffer(index, m->pendingTail);
		LockBuffer(tailbuf, BUFFER_LOCK_EXCLUSIVE);
		if (!SparsePageOk(BufferGetPage(tailbuf), SPARSE_PAGE_PENDING, PG_UINT32_MAX))
			elog(ERROR, "sparse_inverted index \"%s\": the pending list's last page %u is not a pending page",
				 RelationGetRelationName(index), m->pendingTail);
		if (PageGetFreeSpace(BufferGetPage(tailbuf)) < MAXALIGN(size))
			newbuf = SparseNewBuffer(index);
	}
	else
		newbuf = SparseNewBuffer(index);

	state = GenericXLogStart(index);
	metapage = GenericXLogRegisterBuffer(state, metabuf, 0);
	m = SparsePageGetMeta(metapage);
	if (BufferIsValid(tailbuf))
		tailpage = GenericXLogRegisterBuffer(state, tailbuf, 0);
	if (BufferIsValid(newbuf))
	{
		newpage = GenericXLogRegisterBuffer(state, newbuf, GENERIC_XLOG_FULL_IMAGE);
		SparseInitPage(newbuf, newpage, SPARSE_PAGE_PENDING, m->generation);
		if (tailpage)
			SparsePageGetOpaque(tailpage)->next = BufferGetBlockNumber(newbuf);
		else
		{
			m->pendingHead = BufferGetBlockNumber(newbuf);
			m->pendingHeadOff = FirstOffsetNumber;
		}
		m->pendingTail = BufferGetBlockNumber(newbuf);
		if (PageAddItem(newpage, (Item) item, size, InvalidOffsetNumber, false, false) == InvalidOffsetNumber)
			elog(ERROR, "could not add a pending item of %zu bytes", size);
	}
	else if (PageAddItem(tailpage, (Item) item, size, InvalidOffsetNumber, false, false) == InvalidOffsetNumber)
		elog(ERROR, "could not add a pending item of %zu bytes", size);
	if (newdoc)
		m->pendingDocs++;
	if (newdoc && !(item->flags & SPARSE_DOC_NULL))
		m->pendingRows++;
	m->pendingEntries += nnz;
	m->pendingLength += length;
	GenericXLogFinish(state);
	if (BufferIsValid(tailbuf))
		UnlockReleaseBuffer(tailbuf);
	if (BufferIsValid(newbuf))
		UnlockReleaseBuffer(newbuf);
}

/*
 * Append a row to the pending list: one item, or consecutive chunks for a
 * row too large for a page. metaOut gets the metapage as left.
 */
void
SparseAppendPending(Relation index, SparseMetaPageData *metaOut, ItemPointer tid,
					bool isnull, int32 nnz, const int32 *indices, const float4 *values)
{
	Buffer		metabuf = SparseLockMeta(index, BUFFER_LOCK_EXCLUSIVE, NULL);
	int32		done = 0;
	SparsePendingItem *item = palloc(SPARSE_MAX_ITEM_SIZE);

	do
	{
		int32		n = isnull ? 0 : Min(nnz - done, SPARSE_PENDING_MAX_NNZ);
		double		length = 0;

		memset(item, 0, offsetof(SparsePendingItem, data));
		item->tid = *tid;
		item->flags = (isnull ? SPARSE_DOC_NULL : 0) | (done == 0 ? SPARSE_PENDING_FIRST : 0);
		item->nnz = n;
		if (n > 0)
		{
			memcpy(SPARSE_PENDING_INDICES(item), indices + done, n * sizeof(int32));
			memcpy(SPARSE_PENDING_VALUES(item), values + done, n * sizeof(float4));
			if (SparseIsBM25(index))
				for (int32 i = 0; i < n; i++)
					length += values[done + i];
		}
		append_item(index, metabuf, item, SPARSE_PENDING_SIZE(n), done == 0, n, (uint64) length);
		done += n;
	} while (done < nnz && !isnull);
	memcpy(metaOut, SparsePageGetMeta(BufferGetPage(metabuf)), sizeof(SparseMetaPageData));
	UnlockReleaseBuffer(metabuf);
	pfree(item);
}

bool
sparse_insert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
			  Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
			  IndexInfo *indexInfo)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "sparse_inverted insert",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	SparseMetaPageData meta;
	uint64		limit;

	if (isnull[0])
		SparseAppendPending(index, &meta, heap_tid, true, 0, NULL, NULL);
	else
	{
		int32		nnz;
		int32	   *indices;
		float4	   *vals;

		SparseRowEntries(index, values[0], &nnz, &indices, &vals);
		SparseAppendPending(index, &meta, heap_tid, false, nnz, indices, vals);
	}

	limit = Max((uint64) sparse_pending_limit, meta.segDocs / 16);
	if (meta.pendingDocs >= limit &&
		ConditionalLockPage(index, SPARSE_MERGE_LOCK_BLKNO, ExclusiveLock))
	{
		int64		removed;

		PG_TRY();
		{
			SparseMerge(index, true, NULL, NULL, NULL, &removed);
		}
		PG_FINALLY();
		{
			UnlockPage(index, SPARSE_MERGE_LOCK_BLKNO, ExclusiveLock);
		}
		PG_END_TRY();
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	return false;
}
