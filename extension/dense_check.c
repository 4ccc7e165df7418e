/*
 * dense_check.c: dense_flat_check(index), an amcheck-style comparison of a
 * dense_flat index with its table.
 *
 * Reads the row chain (each page a row page, no loop, as many rows as the
 * metapage counts, no TID twice, each live row's codes where it says, of
 * the index's dimensions). Then it scans the table under an MVCC snapshot:
 * every visible row must be indexed, with codes within their stated error
 * of its vector and its norm the vector's, or as NULL if it has no vector.
 * An indexed row the snapshot does not see must point at a used line
 * pointer (dead, not yet vacuumed, or not committed). VACUUM is kept out
 * (CheckOpen); writes go on. On a hot standby line pointers are not tested.
 */
#include "postgres.h"

#include <math.h>

#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xlog.h"
#include "catalog/index.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "dense_flat.h"
#include "sparse_index.h"

typedef struct CheckRow
{
	uint64		key;			/* hash key: TID */
	DenseCodes *codes;			/* NULL: unreadable (reported), or a NULL vector */
	bool		isnull;			/* indexed as a NULL vector */
	bool		seen;
} CheckRow;

typedef struct CheckState
{
	Relation	index;
	HTAB	   *rows;
	int32		dims;
	int			degree;
	CheckProblems problems;
	int64		visible;
} CheckState;

/* whether a node's link names the codes of a node */
static bool
link_valid(CheckState *cs, const DenseRef *link, BlockNumber nblocks)
{
	BlockNumber blk = DenseRefBlock(link);
	Buffer		buf;
	Page		page;
	bool		valid;

	if (blk == DENSE_METAPAGE_BLKNO || blk >= nblocks)
		return false;
	buf = ReadBuffer(cs->index, blk);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	valid = !PageIsNew(page) && PageGetSpecialSize(page) == MAXALIGN(sizeof(DensePageOpaqueData)) &&
		DensePageGetOpaque(page)->type == DENSE_PAGE_CODES &&
		DensePageCodes(page, link->at, cs->dims, cs->degree) != NULL;
	UnlockReleaseBuffer(buf);
	return valid;
}

/*
 * A graph node's links: it names its row where the row lies, has no more
 * links than the degree, and each names a node.
 */
static void
check_links(CheckState *cs, const DenseCodes *item, BlockNumber rowBlk, int rowIndex, uint64 key,
			BlockNumber nblocks)
{
	const DenseLinks *links = DenseCodesLinks(item, cs->dims);

	if (links->rowBlk != rowBlk || DenseLinksRowIndex(links) != rowIndex)
		CheckProblem(&cs->problems, "row " TIDFMT ": its node names row %d of page %u, not %d of page %u",
				TIDARGS(key), DenseLinksRowIndex(links), links->rowBlk, rowIndex, rowBlk);
	if (links->rowIndex & DENSE_ROW_DEAD)
		CheckProblem(&cs->problems, "row " TIDFMT " is live, its node marked dead", TIDARGS(key));
	if (links->nlinks > cs->degree)
	{
		CheckProblem(&cs->problems, "row " TIDFMT ": its node has %d links, more than the degree %d",
				TIDARGS(key), links->nlinks, cs->degree);
		return;
	}
	for (int l = 0; l < links->nlinks; l++)
		if (!link_valid(cs, &links->links[l], nblocks))
			CheckProblem(&cs->problems, "row " TIDFMT ": its node links to byte %u of page %u, where no node starts",
					TIDARGS(key), links->links[l].at, DenseRefBlock(&links->links[l]));
}

/* a copy of the codes a row (row rowIndex of page rowBlk) names, or NULL (a problem) */
static DenseCodes *
read_codes(CheckState *cs, const DenseRow *row, BlockNumber rowBlk, int rowIndex, BlockNumber nblocks)
{
	Relation	index = cs->index;
	Buffer		buf;
	Page		page;
	const DenseCodes *codes;
	DenseCodes *copy = NULL;
	uint64		key = SparseTidKey((ItemPointer) &row->tid);

	if (row->codesBlk == DENSE_METAPAGE_BLKNO || row->codesBlk >= nblocks)
	{
		CheckProblem(&cs->problems, "row " TIDFMT " names codes on page %u, not the index's", TIDARGS(key), row->codesBlk);
		return NULL;
	}
	buf = ReadBuffer(index, row->codesBlk);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (PageIsNew(page) || PageGetSpecialSize(page) != MAXALIGN(sizeof(DensePageOpaqueData)) ||
		DensePageGetOpaque(page)->type != DENSE_PAGE_CODES)
		CheckProblem(&cs->problems, "row " TIDFMT " names codes on page %u, not a code page", TIDARGS(key), row->codesBlk);
	else if ((codes = DensePageCodes(page, row->codesAt, cs->dims, cs->degree)) == NULL)
		CheckProblem(&cs->problems, "row " TIDFMT " names byte %u of page %u, where no codes of %d dimensions start",
				TIDARGS(key), row->codesAt, row->codesBlk, cs->dims);
	else
	{
		copy = palloc(DENSE_ITEM_SIZE(cs->dims, cs->degree));
		memcpy(copy, codes, DENSE_ITEM_SIZE(cs->dims, cs->degree));
	}
	UnlockReleaseBuffer(buf);
	if (copy != NULL && cs->degree > 0)
		check_links(cs, copy, rowBlk, rowIndex, key, nblocks);
	return copy;
}

/* the row chain; returns the rows it holds and counts the dead ones */
static int64
check_chain(CheckState *cs, const DenseMetaPageData *meta, int64 *dead)
{
	Relation	index = cs->index;
	BlockNumber nblocks = RelationGetNumberOfBlocks(index);
	BlockNumber blk = meta->rowsHead;
	BlockNumber pages = 0;
	int64		rows = 0;

	*dead = 0;
	while (BlockNumberIsValid(blk))
	{
		Buffer		buf;
		Page		page;
		DenseRow   *copy;
		BlockNumber rowBlk;
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (blk == DENSE_METAPAGE_BLKNO || blk >= nblocks || ++pages > nblocks)
		{
			CheckProblem(&cs->problems, "the row chain leads to page %u, past the index's end or around a loop", blk);
			break;
		}
		buf = ReadBuffer(index, blk);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (PageIsNew(page) || PageGetSpecialSize(page) != MAXALIGN(sizeof(DensePageOpaqueData)) ||
			DensePageGetOpaque(page)->type != DENSE_PAGE_ROWS ||
			((PageHeader) page)->pd_lower < MAXALIGN(SizeOfPageHeaderData) ||
			DensePageNRows(page) > DENSE_ROWS_PER_PAGE)
		{
			CheckProblem(&cs->problems, "page %u of the row chain is not a row page", blk);
			UnlockReleaseBuffer(buf);
			break;
		}
		n = DensePageNRows(page);
		copy = palloc(sizeof(DenseRow) * Max(n, 1));
		memcpy(copy, DensePageRows(page), sizeof(DenseRow) * n);
		rowBlk = blk;
		blk = DensePageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
		for (int i = 0; i < n; i++)
		{
			uint64		key;
			bool		found;
			CheckRow   *r;

			rows++;
			if (!ItemPointerIsValid(&copy[i].tid))
			{
				(*dead)++;
				continue;
			}
			key = SparseTidKey(&copy[i].tid);
			r = hash_search(cs->rows, &key, HASH_ENTER, &found);
			if (found)
			{
				CheckProblem(&cs->problems, "row " TIDFMT " is indexed twice", TIDARGS(key));
				continue;
			}
			r->seen = false;
			r->isnull = !BlockNumberIsValid(copy[i].codesBlk);
			r->codes = r->isnull ? NULL : read_codes(cs, &copy[i], rowBlk, i, nblocks);
		}
		pfree(copy);
	}
	return rows;
}

static void
heap_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
			  bool tupleIsAlive, void *state)
{
	CheckState *cs = (CheckState *) state;
	uint64		key = SparseTidKey(tid);
	CheckRow   *r = hash_search(cs->rows, &key, HASH_FIND, NULL);
	DenseVector *v;
	double		err2 = 0,
				norm2 = 0;

	cs->visible++;
	if (r == NULL)
	{
		CheckProblem(&cs->problems, "row " TIDFMT " is not in the index", TIDARGS(key));
		return;
	}
	r->seen = true;
	if (isnull[0] != r->isnull)
	{
		CheckProblem(&cs->problems, "row " TIDFMT " %s a vector but is indexed %s", TIDARGS(key),
				isnull[0] ? "has no" : "has", isnull[0] ? "with codes" : "as NULL");
		return;
	}
	if (isnull[0] || r->codes == NULL)
		return;					/* nothing to compare, or reported */
	v = DatumGetDenseVector(values[0]);
	if (v->dim != cs->dims)
	{
		CheckProblem(&cs->problems, "row " TIDFMT " has %d dimensions, the index %d", TIDARGS(key), v->dim, cs->dims);
		return;
	}
	for (int i = 0; i < v->dim; i++)
	{
		double		diff = (double) v->x[i] - (double) r->codes->scale * r->codes->codes[i];

		err2 += diff * diff;
		norm2 += (double) v->x[i] * v->x[i];
	}
	if (!(sqrt(err2) <= r->codes->error))
		CheckProblem(&cs->problems, "row " TIDFMT ": its codes are %g from its vector, beyond their bound %g",
				TIDARGS(key), sqrt(err2), r->codes->error);
	if (!(fabs(sqrt(norm2) - r->codes->norm) <= 1e-6 * sqrt(norm2)))
		CheckProblem(&cs->problems, "row " TIDFMT ": the index gives its norm as %g, its vector's is %g",
				TIDARGS(key), r->codes->norm, sqrt(norm2));
}

PG_FUNCTION_INFO_V1(dense_flat_check);
Datum
dense_flat_check(PG_FUNCTION_ARGS)
{
	Oid			indexoid = PG_GETARG_OID(0);
	Relation	heap,
				index;
	CheckState	cs;
	HASHCTL		ctl;
	DenseMetaPageData meta;
	DenseRef   *entries;
	IndexInfo  *indexInfo;
	Snapshot	snapshot;
	TableScanDesc scan;
	HASH_SEQ_STATUS seq;
	CheckRow   *r;
	int64		rows,
				dead,
				invisible = 0;
	StringInfoData out;
	bool		standby;
	LOCKMODE	lockmode;

	standby = CheckOpen(indexoid, dense_build, "dense_flat", &heap, &index, &lockmode);

	memset(&cs, 0, sizeof(cs));
	cs.index = index;
	initStringInfo(&cs.problems.text);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(CheckRow);
	ctl.hcxt = CurrentMemoryContext;
	cs.rows = hash_create("dense_flat check", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	entries = palloc(sizeof(DenseRef) * DENSE_MAX_ENTRIES);
	DenseReadMeta(index, &meta, entries);
	cs.dims = meta.dims;
	cs.degree = meta.degree;
	for (int e = 0; e < meta.nentries; e++)
		if (!link_valid(&cs, &entries[e], RelationGetNumberOfBlocks(index)))
			CheckProblem(&cs.problems, "the graph's entry %d names byte %u of page %u, where no node starts",
					e, entries[e].at, DenseRefBlock(&entries[e]));
	rows = check_chain(&cs, &meta, &dead);
	/* inserts go on (more rows than the metapage counted); VACUUM does not */
	if (rows < (int64) meta.rows)
		CheckProblem(&cs.problems, "the metapage counts %llu rows, the row chain holds %lld",
				(unsigned long long) meta.rows, (long long) rows);

	indexInfo = BuildIndexInfo(index);
	indexInfo->ii_Concurrent = true;
	snapshot = RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
	scan = table_beginscan_strat(heap, snapshot, 0, NULL, true, false);
	table_index_build_scan(heap, index, indexInfo, true, false, heap_callback, (void *) &cs, scan);
	UnregisterSnapshot(snapshot);

	hash_seq_init(&seq, cs.rows);
	while ((r = hash_seq_search(&seq)) != NULL)
	{
		ItemPointerData tid;
		Buffer		buf;
		Page		page;
		OffsetNumber off;

		if (r->seen)
			continue;
		invisible++;
		if (standby)
			continue;
		SparseKeyTid(r->key, &tid);
		if (ItemPointerGetBlockNumber(&tid) >= RelationGetNumberOfBlocks(heap))
		{
			CheckProblem(&cs.problems, "indexed row " TIDFMT " is beyond the table's end", TIDARGS(r->key));
			continue;
		}
		buf = ReadBuffer(heap, ItemPointerGetBlockNumber(&tid));
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		off = ItemPointerGetOffsetNumber(&tid);
		if (off < FirstOffsetNumber || off > PageGetMaxOffsetNumber(page) ||
			!ItemIdIsUsed(PageGetItemId(page, off)))
			CheckProblem(&cs.problems, "indexed row " TIDFMT " points at an unused line pointer", TIDARGS(r->key));
		UnlockReleaseBuffer(buf);
	}

	initStringInfo(&out);
	appendStringInfo(&out,
					 "{\"consistent\": %s, \"visible_rows\": %lld, \"rows\": %lld, \"dead_rows\": %lld, "
					 "\"rows_not_visible\": %lld, \"dimensions\": %d, \"graph_degree\": %d, "
					 "\"graph_tail_rows\": %lld, \"problem_count\": %lld, \"problems\": [%s]}",
					 cs.problems.count == 0 ? "true" : "false",
					 (long long) cs.visible, (long long) rows, (long long) dead,
					 (long long) invisible, meta.dims, meta.degree,
					 (long long) (meta.degree > 0 ? rows - (int64) meta.graphRows : 0),
					 (long long) cs.problems.count, cs.problems.text.data);
	index_close(index, AccessShareLock);
	table_close(heap, lockmode);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
