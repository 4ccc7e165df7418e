/*
 * sparse_vacuum.c: VACUUM merges the pending list into the segment and
 * leaves out the dead rows, in one pass over the index.
 */
#include "postgres.h"

#include "access/genam.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"

#include "sparse_index.h"

static void
fill_stats(Relation index, IndexBulkDeleteResult *stats)
{
	SparseMetaPageData meta;

	SparseReadMeta(index, &meta);
	stats->num_pages = RelationGetNumberOfBlocks(index);
	stats->num_index_tuples = (double) (meta.segDocs + meta.pendingDocs);
	stats->estimated_count = false;
}

IndexBulkDeleteResult *
sparse_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
				  IndexBulkDeleteCallback callback, void *callback_state)
{
	Relation	index = info->index;
	int64		removed = 0;

	if (stats == NULL)
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
	LockPage(index, SPARSE_MERGE_LOCK_BLKNO, ExclusiveLock);
	SparseMerge(index, true, callback, callback_state, NULL, &removed);
	UnlockPage(index, SPARSE_MERGE_LOCK_BLKNO, ExclusiveLock);
	stats->tuples_removed += removed;
	fill_stats(index, stats);
	return stats;
}

IndexBulkDeleteResult *
sparse_vacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats)
{
	Relation	index = info->index;

	if (info->analyze_only)
		return stats;
	if (stats == NULL)
	{
		SparseMetaPageData meta;

		/* no dead rows: still merge what is pending */
		stats = (IndexBulkDeleteResult *) palloc0(sizeof(IndexBulkDeleteResult));
		SparseReadMeta(index, &meta);
		if (meta.pendingDocs > 0)
		{
			int64		removed;

			LockPage(index, SPARSE_MERGE_LOCK_BLKNO, ExclusiveLock);
			SparseMerge(index, true, NULL, NULL, NULL, &removed);
			UnlockPage(index, SPARSE_MERGE_LOCK_BLKNO, ExclusiveLock);
		}
	}
	fill_stats(index, stats);
	return stats;
}
