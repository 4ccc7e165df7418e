/*
 * dense_merge.c: VACUUM links the graph's tail (the rows inserted since the
 * build, which every walk scores one by one) into the graph.
 *
 * Each live row of the tail, in chain order, is linked as the build links
 * a node: a walk of width graph_build_ef for its codes (the rows merged
 * before it included), its links chosen by dense_graph.c's rule among the
 * nodes the walk found and expanded, and a link back from each neighbour,
 * whose links are chosen again by the rule when it has no room. Then the
 * metapage moves the graph's end past the rows merged, and takes some of
 * them as entries while it has room (an index built on an empty table gets
 * its entries so). Rows inserted meanwhile stay in the tail.
 *
 * Only a merge changes links, and VACUUM runs one at a time on a table, so
 * a merge reads links under a share lock and writes them under an
 * exclusive one without their changing in between; each page it changes is
 * one generic WAL record. A crash midway leaves nodes linked whose rows are
 * still in the tail: walks pass through them without returning them, and
 * the next merge links them again.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "commands/vacuum.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/memutils.h"

#include "dense_flat.h"

/* a candidate link: a node, its codes once read, and its distance */
typedef struct Candidate
{
	float4		dist;
	DenseRef	ref;
	DenseCodes *codes;
} Candidate;

typedef struct MergeState
{
	Relation	index;
	DenseMetaPageData meta;
	DenseRef   *entries;
	int			dims;
	int			degree;
	int			ef;
	Size		itemSize;
	BlockNumber nblocks;
	Candidate  *cand;
	DenseRef   *links;
	MemoryContext nodeCxt;		/* reset after each node */
} MergeState;

static inline bool
ref_equal(const DenseRef *a, const DenseRef *b)
{
	return DenseRefBlock(a) == DenseRefBlock(b) && a->at == b->at;
}

/* the item of node ref in its page, which buf pins */
static DenseCodes *
node_item(MergeState *ms, Buffer buf, const DenseRef *ref)
{
	DenseCodes *item = (DenseCodes *) DenseItemAt(BufferGetPage(buf), ref->at, ms->itemSize);

	if (item == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" names a node that page %u does not hold",
						RelationGetRelationName(ms->index), DenseRefBlock(ref)),
				 errhint("REINDEX it.")));
	return item;
}

static Buffer
pin_node(MergeState *ms, const DenseRef *ref)
{
	DenseCheckBlock(ms->index, &ms->nblocks, DenseRefBlock(ref), 0);
	return DensePinCodes(ms->index, DenseRefBlock(ref), ms->nblocks);
}

/* a copy of node ref's codes (never changed once written: no lock) */
static DenseCodes *
read_codes(MergeState *ms, const DenseRef *ref)
{
	Buffer		buf = pin_node(ms, ref);
	DenseCodes *copy = palloc(DENSE_CODES_SIZE(ms->dims));

	memcpy(copy, node_item(ms, buf, ref), DENSE_CODES_SIZE(ms->dims));
	ReleaseBuffer(buf);
	return copy;
}

/* node ref's links, into ms->links; returns how many */
static int
read_links(MergeState *ms, const DenseRef *ref)
{
	Buffer		buf = pin_node(ms, ref);
	const DenseLinks *links;
	int			n;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	links = DenseCodesLinks(node_item(ms, buf, ref), ms->dims);
	n = Min(links->nlinks, ms->degree);
	memcpy(ms->links, links->links, sizeof(DenseRef) * n);
	UnlockReleaseBuffer(buf);
	return n;
}

static void
write_links(MergeState *ms, const DenseRef *ref, const DenseRef *refs, int n)
{
	Buffer		buf = pin_node(ms, ref);
	GenericXLogState *state;
	DenseLinks *links;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	(void) node_item(ms, buf, ref);
	state = GenericXLogStart(ms->index);
	links = DenseCodesLinks(GenericXLogRegisterBuffer(state, buf, 0) + ref->at, ms->dims);
	links->nlinks = (uint16) n;
	memcpy(links->links, refs, sizeof(DenseRef) * n);
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

static int
candidate_cmp(const void *a, const void *b)
{
	float4		x = ((const Candidate *) a)->dist,
				y = ((const Candidate *) b)->dist;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The links of a node from candidates cand (sorted by distance to it) by
 * dense_graph.c's rule, into out; returns how many. Reads the codes of the
 * candidates it weighs.
 */
static int
choose_links(MergeState *ms, Candidate *cand, int n, DenseRef *out)
{
	int			kept[DENSE_MAX_DEGREE];
	int			nkept = 0;

	for (int i = 0; i < n && nkept < ms->degree; i++)
	{
		bool		keep = true;

		if (cand[i].codes == NULL)
			cand[i].codes = read_codes(ms, &cand[i].ref);
		for (int k = 0; k < nkept && keep; k++)
			keep = DENSE_GRAPH_ALPHA * DenseCodesDistance(cand[kept[k]].codes, cand[i].codes, ms->dims) >
				cand[i].dist;
		if (keep)
			kept[nkept++] = i;
	}
	for (int k = 0; k < nkept; k++)
		out[k] = cand[kept[k]].ref;
	return nkept;
}

/*
 * A link from neighbour q back to node p (its codes pc); returns whether q
 * keeps it.
 */
static bool
link_back(MergeState *ms, const DenseRef *q, const DenseRef *p, const DenseCodes *pc)
{
	int			n = read_links(ms, q);
	DenseCodes *qc;
	DenseRef	chosen[DENSE_MAX_DEGREE];

	for (int l = 0; l < n; l++)
		if (ref_equal(&ms->links[l], p))
			return true;
	if (n < ms->degree)
	{
		ms->links[n++] = *p;
		write_links(ms, q, ms->links, n);
		return true;
	}
	qc = read_codes(ms, q);
	for (int l = 0; l < n; l++)
	{
		ms->cand[l].ref = ms->links[l];
		ms->cand[l].codes = read_codes(ms, &ms->links[l]);
		ms->cand[l].dist = DenseCodesDistance(qc, ms->cand[l].codes, ms->dims);
	}
	ms->cand[n].ref = *p;
	ms->cand[n].codes = (DenseCodes *) pc;
	ms->cand[n].dist = DenseCodesDistance(qc, pc, ms->dims);
	n++;
	qsort(ms->cand, n, sizeof(Candidate), candidate_cmp);
	n = choose_links(ms, ms->cand, n, chosen);
	write_links(ms, q, chosen, n);
	for (int l = 0; l < n; l++)
		if (ref_equal(&chosen[l], p))
			return true;
	return false;
}

/* link node p, whose row is (rowBlk, rowIndex), into the graph */
static void
merge_node(MergeState *ms, const DenseRef *p, BlockNumber rowBlk, uint16 rowIndex)
{
	DenseCodes *pc = read_codes(ms, p);
	DenseVector *v;
	DenseQuery	query;
	DenseMetaPageData before = ms->meta;
	DenseWalk  *walk;
	DenseWalkNode *nodes;
	DenseRef	chosen[DENSE_MAX_DEGREE];
	int			nnodes,
				ncand = 0,
				nchosen;
	bool		linked = false;

	if (ms->meta.nentries == 0)
		return;					/* the first node: nothing to link to */

	/* a walk for p's own codes, over the nodes before it */
	v = palloc(offsetof(DenseVector, x) + sizeof(float4) * ms->dims);
	SET_VARSIZE(v, offsetof(DenseVector, x) + sizeof(float4) * ms->dims);
	v->dim = (int16) ms->dims;
	v->unused = 0;
	for (int i = 0; i < ms->dims; i++)
		v->x[i] = pc->scale * pc->codes[i];
	DenseQueryEncode(&query, v);
	before.graphEndBlk = rowBlk;
	before.graphEndIndex = rowIndex;
	walk = DenseWalkBegin(ms->index, &before, ms->entries, &query, ms->ef);
	nnodes = DenseWalkNearest(walk, ms->ef, &nodes);

	ms->cand = repalloc(ms->cand, sizeof(Candidate) * (nnodes + DENSE_MAX_DEGREE + 1));
	for (int i = 0; i < nnodes; i++)
	{
		if (ref_equal(&nodes[i].ref, p))
			continue;
		ms->cand[ncand].ref = nodes[i].ref;
		ms->cand[ncand].dist = nodes[i].estimate;
		ms->cand[ncand].codes = NULL;
		ncand++;
	}
	/* a node found and expanded is there twice: the rule drops the second */
	qsort(ms->cand, ncand, sizeof(Candidate), candidate_cmp);
	nchosen = choose_links(ms, ms->cand, ncand, chosen);
	write_links(ms, p, chosen, nchosen);
	for (int i = 0; i < nchosen; i++)
		linked |= link_back(ms, &chosen[i], p, pc);
	if (!linked && nchosen > 0)
	{
		/* no neighbour kept p: its nearest takes it in place of its farthest */
		int			n = read_links(ms, &chosen[0]);

		if (n > 0)
		{
			ms->links[n - 1] = *p;
			write_links(ms, &chosen[0], ms->links, n);
		}
	}
}

/* the row chain's end now: its tail page and the rows it holds */
static void
chain_end(Relation index, BlockNumber *blk, uint16 *index_)
{
	DenseMetaPageData meta;
	Buffer		buf;

	DenseReadMeta(index, &meta, NULL);
	*blk = meta.rowsTail;
	*index_ = 0;
	if (!BlockNumberIsValid(meta.rowsTail))
		return;
	buf = ReadBuffer(index, meta.rowsTail);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	*index_ = (uint16) DensePageNRows(DensePage(index, buf, DENSE_PAGE_ROWS));
	UnlockReleaseBuffer(buf);
}

/* the metapage: the graph's end moved to (endBlk, endIndex), and its entries */
static void
write_meta(MergeState *ms, BlockNumber endBlk, uint16 endIndex, uint64 rows)
{
	Buffer		buf = ReadBuffer(ms->index, DENSE_METAPAGE_BLKNO);
	GenericXLogState *state;
	Page		page;
	DenseMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	(void) DensePage(ms->index, buf, DENSE_PAGE_META);
	state = GenericXLogStart(ms->index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	meta = DensePageGetMeta(page);
	meta->graphEndBlk = endBlk;
	meta->graphEndIndex = endIndex;
	meta->graphRows += rows;
	meta->nentries = ms->meta.nentries;
	memcpy(DenseMetaEntries(meta), ms->entries, sizeof(DenseRef) * ms->meta.nentries);
	((PageHeader) page)->pd_lower = (char *) &DenseMetaEntries(meta)[meta->nentries] - (char *) page;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

/* one node in this many merged becomes an entry, while there is room */
#define DENSE_MERGE_ENTRY_EVERY 64

/*
 * Link the tail's live rows into the graph; returns how many. Nothing for
 * an index without a graph.
 */
int64
DenseMergeTail(Relation index)
{
	MergeState	ms;
	BlockNumber endBlk,
				blk,
				pages = 0;
	uint16		endIndex;
	int64		merged = 0;
	uint64		passed = 0;
	DenseRow   *rows = palloc(sizeof(DenseRow) * DENSE_ROWS_PER_PAGE);
	MemoryContext oldcxt;

	memset(&ms, 0, sizeof(ms));
	ms.index = index;
	ms.entries = palloc(sizeof(DenseRef) * DENSE_MAX_ENTRIES);
	DenseReadMeta(index, &ms.meta, ms.entries);
	if (ms.meta.degree == 0)
		return 0;
	chain_end(index, &endBlk, &endIndex);
	blk = BlockNumberIsValid(ms.meta.graphEndBlk) ? ms.meta.graphEndBlk : ms.meta.rowsHead;
	if (!BlockNumberIsValid(blk) || (blk == endBlk && ms.meta.graphEndIndex >= endIndex))
		return 0;
	ms.dims = ms.meta.dims;
	ms.degree = ms.meta.degree;
	ms.ef = DenseGraphBuildEf(index);
	ms.itemSize = DENSE_ITEM_SIZE(ms.meta.dims, ms.meta.degree);
	ms.cand = palloc(sizeof(Candidate) * (DENSE_MAX_DEGREE + 1));
	ms.links = palloc(sizeof(DenseRef) * DENSE_MAX_DEGREE);
	ms.nodeCxt = AllocSetContextCreate(CurrentMemoryContext, "dense_flat merge", ALLOCSET_DEFAULT_SIZES);

	for (bool first = true; BlockNumberIsValid(blk); pages++, first = false)
	{
		int			from = first && BlockNumberIsValid(ms.meta.graphEndBlk) ? ms.meta.graphEndIndex : 0,
					n;
		BlockNumber next;

		DenseCheckBlock(index, &ms.nblocks, blk, pages);
		n = DenseCopyRowPage(index, blk, rows, &next);
		if (blk == endBlk)
			n = Min(n, endIndex);
		for (int i = from; i < n; i++)
		{
			DenseRef	p;

			passed++;
			if (!ItemPointerIsValid(&rows[i].tid) || !BlockNumberIsValid(rows[i].codesBlk))
				continue;
			vacuum_delay_point();
			DenseRefSet(&p, rows[i].codesBlk, rows[i].codesAt);
			oldcxt = MemoryContextSwitchTo(ms.nodeCxt);
			ms.cand = palloc(sizeof(Candidate) * (DENSE_MAX_DEGREE + 1));
			merge_node(&ms, &p, blk, (uint16) i);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(ms.nodeCxt);
			if (ms.meta.nentries < DENSE_MAX_ENTRIES && merged % DENSE_MERGE_ENTRY_EVERY == 0)
				ms.entries[ms.meta.nentries++] = p;
			merged++;
		}
		if (blk == endBlk)
			break;
		blk = next;
	}
	write_meta(&ms, endBlk, endIndex, passed);
	MemoryContextDelete(ms.nodeCxt);
	return merged;
}
