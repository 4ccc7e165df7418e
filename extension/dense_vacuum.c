/*
 * dense_vacuum.c: VACUUM marks the dead rows of the row chain (their TID
 * made invalid), a page at a time, so that no scan scores them again. Their
 * codes stay where they are until REINDEX; a graph marks their nodes dead
 * too, which walks pass through and keep no room for. Then it links the graph's tail into the graph
 * (dense_merge.c).
 */
#include "postgres.h"

#include "access/genam.h"
#include "commands/vacuum.h"

#include "dense_flat.h"


/* mark a dead row's graph node, so that walks keep no room for it */
static void
mark_node_dead(Relation index, const DenseRef *node, const DenseMetaPageData *meta,
			   BlockNumber *nblocks, BufferAccessStrategy strategy)
{
	Buffer		buf;
	GenericXLogState *state;
	Page		page;
	DenseCodes *item;

	DenseCheckBlock(index, nblocks, DenseRefBlock(node), 0);
	buf = ReadBufferExtended(index, MAIN_FORKNUM, DenseRefBlock(node), RBM_NORMAL, strategy);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	(void) DensePage(index, buf, DENSE_PAGE_CODES);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	item = (DenseCodes *) DenseItemAt(page, node->at, DENSE_ITEM_SIZE(meta->dims, meta->degree));
	if (item == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" names codes that page %u does not hold",
						RelationGetRelationName(index), DenseRefBlock(node)),
				 errhint("REINDEX it.")));
	DenseCodesLinks(item, meta->dims)->rowIndex |= DENSE_ROW_DEAD;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

IndexBulkDeleteResult *
dense_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
				 IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation	index = info->index;
	DenseMetaPageData meta;
	BlockNumber blk,
				pages = 0,
				nblocks = 0;
	int64		removed = 0,
				live = 0;
	int		   *dead;
	DenseRef   *deadNodes;
	int			ndeadNodes;

	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
	DenseReadMeta(index, &meta, NULL);
	dead = palloc(sizeof(int) * DENSE_ROWS_PER_PAGE);
	deadNodes = palloc(sizeof(DenseRef) * DENSE_ROWS_PER_PAGE);
	for (blk = meta.rowsHead; BlockNumberIsValid(blk); pages++)
	{
		Buffer		buf;
		Page		page;
		DenseRow   *rows;
		int			n,
					ndead = 0;

		vacuum_delay_point();
		DenseCheckBlock(index, &nblocks, blk, pages);
		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = DensePage(index, buf, DENSE_PAGE_ROWS);
		rows = DensePageRows(page);
		n = DensePageNRows(page);
		for (int i = 0; i < n; i++)
		{
			if (!ItemPointerIsValid(&rows[i].tid))
				continue;
			if (callback(&rows[i].tid, callback_state))
				dead[ndead++] = i;
			else
				live++;
		}
		ndeadNodes = 0;
		if (ndead > 0)
		{
			GenericXLogState *state = GenericXLogStart(index);

			rows = DensePageRows(GenericXLogRegisterBuffer(state, buf, 0));
			for (int i = 0; i < ndead; i++)
			{
				ItemPointerSetInvalid(&rows[dead[i]].tid);
				if (meta.degree > 0 && BlockNumberIsValid(rows[dead[i]].codesBlk))
					DenseRefSet(&deadNodes[ndeadNodes++], rows[dead[i]].codesBlk, rows[dead[i]].codesAt);
			}
			GenericXLogFinish(state);
			removed += ndead;
		}
		blk = DensePageGetOpaque(BufferGetPage(buf))->next;
		UnlockReleaseBuffer(buf);
		/* no code page is locked while a row page is (an insert locks them the other way) */
		for (int i = 0; i < ndeadNodes; i++)
			mark_node_dead(index, &deadNodes[i], &meta, &nblocks, info->strategy);
	}
	pfree(dead);
	pfree(deadNodes);
	stats->tuples_removed += removed;
	stats->num_pages = RelationGetNumberOfBlocks(index);
	stats->num_index_tuples = live;
	stats->estimated_count = false;
	return stats;
}

IndexBulkDeleteResult *
dense_vacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	if (info->analyze_only)
		return stats;
	DenseMergeTail(info->index);
	if (stats == NULL)
	{
		DenseMetaPageData meta;

		/* no bulk delete ran: the rows appended, dead ones included */
		DenseReadMeta(info->index, &meta, NULL);
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
		stats->num_pages = RelationGetNumberOfBlocks(info->index);
		stats->num_index_tuples = (double) meta.rows;
		stats->estimated_count = true;
	}
	return stats;
}
