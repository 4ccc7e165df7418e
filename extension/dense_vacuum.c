/*
 * dense_vacuum.c: VACUUM marks the dead rows of the row chain (their TID
 * made invalid), a page at a time, so that no scan scores them again. Their
 * codes stay where they are until REINDEX.
 */
#include "postgres.h"

#include "access/genam.h"
#include "commands/vacuum.h"

#include "dense_flat.h"


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

	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
	DenseReadMeta(index, &meta);
	dead = palloc(sizeof(int) * DENSE_ROWS_PER_PAGE);
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
		if (ndead > 0)
		{
			GenericXLogState *state = GenericXLogStart(index);

			rows = DensePageRows(GenericXLogRegisterBuffer(state, buf, 0));
			for (int i = 0; i < ndead; i++)
				ItemPointerSetInvalid(&rows[dead[i]].tid);
			GenericXLogFinish(state);
			removed += ndead;
		}
		blk = DensePageGetOpaque(BufferGetPage(buf))->next;
		UnlockReleaseBuffer(buf);
	}
	pfree(dead);
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
	if (stats == NULL)
	{
		DenseMetaPageData meta;

		/* no bulk delete ran: the rows appended, dead ones included */
		DenseReadMeta(info->index, &meta);
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
		stats->num_pages = RelationGetNumberOfBlocks(info->index);
		stats->num_index_tuples = (double) meta.rows;
		stats->estimated_count = true;
	}
	return stats;
}
