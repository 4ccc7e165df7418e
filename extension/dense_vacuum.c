/*
 * dense_vacuum.c: VACUUM marks the dead rows of the row chain (their TID
 * made invalid), a page at a time, so that no scan scores them again. Their
 * codes stay where they are until REINDEX.
 */
#include "postgres.h"

#include "access/genam.h"
#include "commands/vacuum.h"

#include "dense_flat.h"

static void
fill_stats(Relation index, IndexBulkDeleteResult *stats)
{
	DenseMetaPageData meta;

	DenseReadMeta(index, &meta);
	stats->num_pages = RelationGetNumberOfBlocks(index);
	stats->num_index_tuples = (double) (meta.rows - meta.deadRows);
	stats->estimated_count = false;
}

IndexBulkDeleteResult *
dense_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
				 IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation	index = info->index;
	DenseMetaPageData meta;
	BlockNumber blk;
	int64		removed = 0;

	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
	DenseReadMeta(index, &meta);
	for (blk = meta.rowsHead; BlockNumberIsValid(blk);)
	{
		Buffer		buf = ReadBufferExtended(index, MAIN_FORKNUM, blk, RBM_NORMAL, info->strategy);
		Page		page;
		DenseRow   *rows;
		int			n;
		int			dead = 0;

		vacuum_delay_point();
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		page = DensePage(index, buf, DENSE_PAGE_ROWS);
		rows = DensePageRows(page);
		n = DensePageNRows(page);
		for (int i = 0; i < n && dead == 0; i++)
			if (ItemPointerIsValid(&rows[i].tid) && callback(&rows[i].tid, callback_state))
				dead++;
		if (dead > 0)
		{
			GenericXLogState *state = GenericXLogStart(index);

			page = GenericXLogRegisterBuffer(state, buf, 0);
			rows = DensePageRows(page);
			dead = 0;
			for (int i = 0; i < n; i++)
				if (ItemPointerIsValid(&rows[i].tid) && callback(&rows[i].tid, callback_state))
				{
					ItemPointerSetInvalid(&rows[i].tid);
					dead++;
				}
			GenericXLogFinish(state);
			removed += dead;
		}
		blk = DensePageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
	}
	if (removed > 0)
	{
		Buffer		buf = ReadBuffer(index, DENSE_METAPAGE_BLKNO);
		GenericXLogState *state;
		Page		page;

		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		(void) DensePage(index, buf, DENSE_PAGE_META);
		state = GenericXLogStart(index);
		page = GenericXLogRegisterBuffer(state, buf, 0);
		DensePageGetMeta(page)->deadRows += removed;
		GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
	}
	stats->tuples_removed += removed;
	fill_stats(index, stats);
	return stats;
}

IndexBulkDeleteResult *
dense_vacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	if (info->analyze_only)
		return stats;
	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
	fill_stats(info->index, stats);
	return stats;
}
