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
 * That is done in memory when the graph and its tail fit the merge's
 * memory (maintenance_work_mem; autovacuum_work_mem in autovacuum, as GIN's
 * pending list cleanup takes): every node's codes and links are read, the
 * tail's nodes linked by dense_graph.c as the build links them (a node
 * gathers links back up to 1.5x the degree before it chooses again), and
 * the links that changed written, a page at a time. Otherwise on the pages,
 * node by node, as above, with the links back held in that memory: a
 * neighbour gathers them (walks meet them as its own) up to half the
 * degree, then writes them with its links, choosing by the rule when they
 * are more than the degree. Choosing once for many links back, and one WAL
 * record for them, halved its time and made a better graph (session 43;
 * written one by one, a link back to a full node chose again at once). When
 * the held links fill the memory, all are written; then a node of the tail
 * no neighbour kept a link to is taken by its nearest in place of its
 * farthest.
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
#include "postmaster/autovacuum.h"
#include "storage/bufmgr.h"
#include "utils/hsearch.h"
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
	DenseRef   *links;
	MemoryContext nodeCxt;		/* reset after each node */
	/* on the pages: links back held, and the tail's nodes linked since they were written */
	HTAB	   *held;			/* HeldLinks by node */
	HTAB	   *tail;			/* TailNode by node */
	int			slack;			/* links back a node holds before it writes them */
	Size		memory;			/* bytes the two may take */
} MergeState;

/* the links back a neighbour holds, not yet on its page */
typedef struct HeldLinks
{
	uint64		key;			/* hash key: ref_key(ref) */
	DenseRef	ref;
	int			n;
	DenseRef	links[DENSE_MAX_DEGREE / 2];
} HeldLinks;

/* a node of the tail: how many neighbours link to it, and its nearest */
typedef struct TailNode
{
	uint64		key;			/* hash key: ref_key(ref) */
	DenseRef	ref;
	DenseRef	nearest;
	bool		hasNearest;
	int32		linksIn;
} TailNode;

/* a node's place as one number, blocks first */
static inline uint64
ref_key(const DenseRef *ref)
{
	return ((uint64) DenseRefBlock(ref) << 16) | ref->at;
}

static inline bool
ref_equal(const DenseRef *a, const DenseRef *b)
{
	return DenseRefBlock(a) == DenseRefBlock(b) && a->at == b->at;
}

/* whether ref is one of refs[0 .. n - 1] */
static bool
ref_in(const DenseRef *refs, int n, const DenseRef *ref)
{
	for (int i = 0; i < n; i++)
		if (ref_equal(&refs[i], ref))
			return true;
	return false;
}

/* the item of node ref, of itemSize bytes, in its page */
static DenseCodes *
item_at(Relation index, Page page, const DenseRef *ref, Size itemSize)
{
	DenseCodes *item = (DenseCodes *) DenseItemAt(page, ref->at, itemSize);

	if (item == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" names a node that page %u does not hold",
						RelationGetRelationName(index), DenseRefBlock(ref)),
				 errhint("REINDEX it.")));
	return item;
}

/* the item of node ref in its page, which buf pins */
static DenseCodes *
node_item(MergeState *ms, Buffer buf, const DenseRef *ref)
{
	return item_at(ms->index, BufferGetPage(buf), ref, ms->itemSize);
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

/* the links back node ref holds, or NULL; with create, an entry for it */
static HeldLinks *
held_find(MergeState *ms, const DenseRef *ref, bool create)
{
	uint64		key = ref_key(ref);
	bool		found;
	HeldLinks  *h = hash_search(ms->held, &key, create ? HASH_ENTER : HASH_FIND, &found);

	if (create && !found)
	{
		h->ref = *ref;
		h->n = 0;
	}
	return h;
}

/* a walk's DenseHeldLinks: what the merge holds for node (blk, at) */
static int
held_links(void *arg, BlockNumber blk, uint16 at, const DenseRef **links)
{
	DenseRef	ref;
	HeldLinks  *h;

	DenseRefSet(&ref, blk, at);
	h = held_find((MergeState *) arg, &ref, false);
	if (h == NULL)
		return 0;
	*links = h->links;
	return h->n;
}

/* count a link into node ref more (delta 1) or less (-1), if it is the tail's */
static void
count_link_in(MergeState *ms, const DenseRef *ref, int delta)
{
	uint64		key = ref_key(ref);
	TailNode   *t = hash_search(ms->tail, &key, HASH_FIND, NULL);

	if (t != NULL)
		t->linksIn += delta;
}

/*
 * Write the links back node h holds with its links, choosing among them by
 * the rule when they are more than the degree.
 */
static void
write_held(MergeState *ms, HeldLinks *h)
{
	int			n = read_links(ms, &h->ref);
	DenseRef	all[DENSE_MAX_DEGREE + DENSE_MAX_DEGREE / 2];
	Candidate	cand[DENSE_MAX_DEGREE + DENSE_MAX_DEGREE / 2];
	DenseRef	chosen[DENSE_MAX_DEGREE];
	DenseCodes *hc;
	int			nchosen;

	memcpy(all, ms->links, sizeof(DenseRef) * n);
	/* a node linked before a crash may have been given links of its own since */
	for (int i = 0, linked = n; i < h->n; i++)
		if (!ref_in(all, linked, &h->links[i]))
			all[n++] = h->links[i];
	h->n = 0;
	if (n <= ms->degree)
	{
		write_links(ms, &h->ref, all, n);
		return;
	}
	hc = read_codes(ms, &h->ref);
	for (int i = 0; i < n; i++)
	{
		cand[i].ref = all[i];
		cand[i].codes = read_codes(ms, &all[i]);
		cand[i].dist = DenseCodesDistance(hc, cand[i].codes, ms->dims);
	}
	qsort(cand, n, sizeof(Candidate), candidate_cmp);
	nchosen = choose_links(ms, cand, n, chosen);
	write_links(ms, &h->ref, chosen, nchosen);
	for (int i = 0; i < n; i++)
		if (!ref_in(chosen, nchosen, &cand[i].ref))
			count_link_in(ms, &cand[i].ref, -1);
}

/* a link from neighbour q back to node p, held until q holds slack of them */
static void
link_back(MergeState *ms, const DenseRef *q, const DenseRef *p)
{
	HeldLinks  *h;

	if (ref_in(ms->links, read_links(ms, q), p))
		return;
	h = held_find(ms, q, true);
	if (ref_in(h->links, h->n, p))
		return;
	h->links[h->n++] = *p;
	count_link_in(ms, p, 1);
	if (h->n == ms->slack)
		write_held(ms, h);
}

/*
 * Write every link back held; then a node of the tail that no neighbour
 * links to is taken by its nearest in place of its farthest.
 */
static void
write_all_held(MergeState *ms)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "dense_flat merge writes", ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	HASH_SEQ_STATUS status;
	HeldLinks  *h;
	TailNode   *t;

	hash_seq_init(&status, ms->held);
	while ((h = hash_seq_search(&status)) != NULL)
	{
		if (h->n > 0)
			write_held(ms, h);
		MemoryContextReset(cxt);
	}
	hash_seq_init(&status, ms->tail);
	while ((t = hash_seq_search(&status)) != NULL)
	{
		int			n;

		if (t->linksIn > 0 || !t->hasNearest || (n = read_links(ms, &t->nearest)) == 0)
			continue;
		ms->links[n - 1] = t->ref;
		write_links(ms, &t->nearest, ms->links, n);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	hash_destroy(ms->held);
	hash_destroy(ms->tail);
	ms->held = ms->tail = NULL;
}

/* the two tables of a merge on the pages, empty */
static void
hold_begin(MergeState *ms)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(HeldLinks);
	ctl.hcxt = CurrentMemoryContext;
	ms->held = hash_create("dense_flat merge: links back held", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.entrysize = sizeof(TailNode);
	ms->tail = hash_create("dense_flat merge: tail nodes", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
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
	Candidate  *cand;
	int			nnodes,
				ncand = 0,
				nchosen;
	uint64		key;
	TailNode   *t;

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
	DenseWalkHoldLinks(walk, held_links, ms);
	nnodes = DenseWalkNearest(walk, ms->ef, &nodes);

	cand = palloc(sizeof(Candidate) * Max(nnodes, 1));
	for (int i = 0; i < nnodes; i++)
	{
		if (ref_equal(&nodes[i].ref, p))
			continue;
		cand[ncand].ref = nodes[i].ref;
		cand[ncand].dist = nodes[i].estimate;
		cand[ncand].codes = NULL;
		ncand++;
	}
	/* a node found and expanded is there twice: the rule drops the second */
	qsort(cand, ncand, sizeof(Candidate), candidate_cmp);
	nchosen = choose_links(ms, cand, ncand, chosen);
	write_links(ms, p, chosen, nchosen);
	/* a node is linked once in a merge: its entry is new */
	key = ref_key(p);
	t = hash_search(ms->tail, &key, HASH_ENTER, NULL);
	t->ref = *p;
	t->linksIn = 0;
	t->hasNearest = nchosen > 0;
	if (nchosen > 0)
		t->nearest = chosen[0];
	for (int i = 0; i < nchosen; i++)
		link_back(ms, &chosen[i], p);
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

/* the metapage: the graph's end moved past rows more, to (endBlk, endIndex), and its entries */
static void
write_meta(Relation index, const DenseRef *entries, int nentries, BlockNumber endBlk, uint16 endIndex,
		   uint64 rows)
{
	Buffer		buf = ReadBuffer(index, DENSE_METAPAGE_BLKNO);
	GenericXLogState *state;
	Page		page;
	DenseMetaPage meta;

	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	(void) DensePage(index, buf, DENSE_PAGE_META);
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, 0);
	meta = DensePageGetMeta(page);
	meta->graphEndBlk = endBlk;
	meta->graphEndIndex = endIndex;
	meta->graphRows += rows;
	meta->nentries = (uint16) nentries;
	memcpy(DenseMetaEntries(meta), entries, sizeof(DenseRef) * nentries);
	((PageHeader) page)->pd_lower = (char *) &DenseMetaEntries(meta)[meta->nentries] - (char *) page;
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

/* a node of a merge in memory: its place, and its number in the graph */
typedef struct NodeKey
{
	uint64		key;
	int32		id;
} NodeKey;

static int
node_key_cmp(const void *a, const void *b)
{
	uint64		x = ((const NodeKey *) a)->key,
				y = ((const NodeKey *) b)->key;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* the number of the node at ref, or -1 if the merge did not read one there */
static int32
node_id(const NodeKey *keys, int64 n, const DenseRef *ref)
{
	NodeKey		probe = {ref_key(ref), 0};
	const NodeKey *found = bsearch(&probe, keys, n, sizeof(NodeKey), node_key_cmp);

	return found != NULL ? found->id : -1;
}

/* the memory a merge may take: GIN's choice for its pending list cleanup */
static int
merge_work_mem(void)
{
	return IsAutoVacuumWorkerProcess() && autovacuum_work_mem != -1 ? autovacuum_work_mem : maintenance_work_mem;
}

/*
 * Link the tail, up to (endBlk, endIndex), in memory (the file's comment).
 * Returns false, having written nothing, when the graph and the tail do not
 * fit the merge's memory; else sets how many rows it linked, how many rows
 * of the chain it passed (the tail's, dead ones included), and the entries.
 */
static bool
merge_in_memory(Relation index, const DenseMetaPageData *meta, DenseRef *entries, int *nentries,
				BlockNumber endBlk, uint16 endIndex, int64 *merged, uint64 *passed)
{
	DenseGraph *g = DenseGraphCreate(index, meta->dims, meta->degree, DenseGraphBuildEf(index));
	Size		itemSize = DENSE_ITEM_SIZE(meta->dims, meta->degree);
	DenseRow   *rows = palloc(sizeof(DenseRow) * DENSE_ROWS_PER_PAGE);
	DenseRef   *refs;
	bool	   *dead;
	NodeKey    *keys;
	int32	   *ids = palloc(sizeof(int32) * meta->degree);
	int64		firstTail = -1,
				maxNodes;
	BlockNumber blk,
				nblocks = 0,
				pages = 0;
	bool		inTail = !BlockNumberIsValid(meta->graphEndBlk);
	Buffer		buf = InvalidBuffer;

	g->memoryLimit = (Size) merge_work_mem() * 1024;
	if ((double) meta->rows * DenseGraphNodeSize(g) > (double) g->memoryLimit)
		return false;
	maxNodes = (int64) meta->rows;
	refs = palloc_extended(sizeof(DenseRef) * (maxNodes + 1), MCXT_ALLOC_HUGE);
	dead = palloc_extended(sizeof(bool) * (maxNodes + 1), MCXT_ALLOC_HUGE);

	/* every node's codes, the graph's and then the tail's live rows' */
	*passed = 0;
	for (blk = meta->rowsHead; BlockNumberIsValid(blk); pages++)
	{
		BlockNumber next;
		int			n;

		vacuum_delay_point();
		DenseCheckBlock(index, &nblocks, blk, pages);
		n = DenseCopyRowPage(index, blk, rows, &next);
		if (blk == endBlk)
			n = Min(n, endIndex);
		for (int i = 0; i < n; i++)
		{
			DenseRef	ref;
			Buffer		codesBuf;
			bool		added;

			if (!inTail && blk == meta->graphEndBlk && i >= meta->graphEndIndex)
				inTail = true;
			if (inTail)
				(*passed)++;
			if (!BlockNumberIsValid(rows[i].codesBlk) || (inTail && !ItemPointerIsValid(&rows[i].tid)))
				continue;
			/* rows appended since the metapage was read may not fit: on the pages, then */
			if (g->n == maxNodes)
				return false;
			DenseRefSet(&ref, rows[i].codesBlk, rows[i].codesAt);
			DenseCheckBlock(index, &nblocks, rows[i].codesBlk, 0);
			codesBuf = DensePinCodes(index, rows[i].codesBlk, nblocks);
			added = DenseGraphAdd(g, item_at(index, BufferGetPage(codesBuf), &ref, itemSize));
			ReleaseBuffer(codesBuf);
			if (!added)
				return false;
			if (inTail && firstTail < 0)
				firstTail = g->n - 1;
			refs[g->n - 1] = ref;
			dead[g->n - 1] = !ItemPointerIsValid(&rows[i].tid);
		}
		if (blk == meta->graphEndBlk)
			inTail = true;		/* the graph ended at this page's end */
		if (blk == endBlk)
			break;
		blk = next;
	}
	if (firstTail < 0)
		return true;			/* no live row in the tail: the graph's end moves past it */

	DenseGraphPrepareMerge(g, dead);
	keys = palloc_extended(sizeof(NodeKey) * g->n, MCXT_ALLOC_HUGE);
	for (int64 i = 0; i < g->n; i++)
	{
		keys[i].key = ref_key(&refs[i]);
		keys[i].id = (int32) i;
	}
	qsort(keys, g->n, sizeof(NodeKey), node_key_cmp);

	/* the graph's links, as numbers (a link to no node read here is dropped) */
	for (int64 i = 0; i < firstTail; i++)
	{
		const DenseLinks *links;
		int			n = 0;

		if (!BufferIsValid(buf) || BufferGetBlockNumber(buf) != DenseRefBlock(&refs[i]))
		{
			if (BufferIsValid(buf))
				UnlockReleaseBuffer(buf);
			buf = DensePinCodes(index, DenseRefBlock(&refs[i]), nblocks);
			LockBuffer(buf, BUFFER_LOCK_SHARE);
		}
		links = DenseCodesLinks(item_at(index, BufferGetPage(buf), &refs[i], itemSize), meta->dims);
		for (int l = 0; l < Min(links->nlinks, meta->degree); l++)
		{
			int32		id = node_id(keys, g->n, &links->links[l]);

			if (id >= 0)
				ids[n++] = id;
		}
		DenseGraphSetLinks(g, (int32) i, ids, n);
	}
	if (BufferIsValid(buf))
		UnlockReleaseBuffer(buf);
	for (int e = 0; e < *nentries; e++)
	{
		int32		id = node_id(keys, g->n, &entries[e]);

		if (id >= 0)
			g->entries[g->nentries++] = id;
	}

	*merged = DenseGraphMerge(g, firstTail);

	/* the links that changed, a page at a time, in the pages' order */
	for (int64 i = 0; i < g->n; i++)
	{
		int64		end;
		GenericXLogState *state;
		Page		page;
		BlockNumber codesBlk = DenseRefBlock(&refs[keys[i].id]);

		if (!g->dirty[keys[i].id])
			continue;
		vacuum_delay_point();
		buf = DensePinCodes(index, codesBlk, nblocks);
		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		(void) DensePage(index, buf, DENSE_PAGE_CODES);
		state = GenericXLogStart(index);
		page = GenericXLogRegisterBuffer(state, buf, 0);
		for (end = i; end < g->n && DenseRefBlock(&refs[keys[end].id]) == codesBlk; end++)
		{
			int32		p = keys[end].id;
			DenseLinks *links;

			if (!g->dirty[p])
				continue;
			if (g->nlinks[p] > meta->degree)
				elog(ERROR, "dense_flat merge chose %d links for a node of %d", g->nlinks[p], meta->degree);
			links = DenseCodesLinks(item_at(index, page, &refs[p], itemSize), meta->dims);
			links->nlinks = g->nlinks[p];
			for (int l = 0; l < g->nlinks[p]; l++)
				links->links[l] = refs[g->links[(Size) p * g->capacity + l]];
		}
		GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
		i = end - 1;
	}
	*nentries = g->nentries;
	for (int e = 0; e < g->nentries; e++)
		entries[e] = refs[g->entries[e]];
	return true;
}

/*
 * Link the tail's live rows on the pages, node by node, from (blk, from)
 * up to (endBlk, endIndex); returns how many, and sets how many rows of the
 * chain it passed and the entries.
 */
static int64
merge_on_pages(MergeState *ms, BlockNumber blk, uint16 from, BlockNumber endBlk, uint16 endIndex,
			   uint64 *passed)
{
	Relation	index = ms->index;
	BlockNumber pages = 0;
	int64		merged = 0;
	DenseRow   *rows = palloc(sizeof(DenseRow) * DENSE_ROWS_PER_PAGE);
	MemoryContext oldcxt;

	ms->links = palloc(sizeof(DenseRef) * DENSE_MAX_DEGREE);
	ms->nodeCxt = AllocSetContextCreate(CurrentMemoryContext, "dense_flat merge", ALLOCSET_DEFAULT_SIZES);
	ms->slack = Max(ms->degree / 2, 1);
	ms->memory = (Size) merge_work_mem() * 1024;
	hold_begin(ms);
	*passed = 0;
	for (bool first = true; BlockNumberIsValid(blk); pages++, first = false)
	{
		int			n;
		BlockNumber next;

		DenseCheckBlock(index, &ms->nblocks, blk, pages);
		n = DenseCopyRowPage(index, blk, rows, &next);
		if (blk == endBlk)
			n = Min(n, endIndex);
		for (int i = first ? from : 0; i < n; i++)
		{
			DenseRef	p;

			(*passed)++;
			if (!ItemPointerIsValid(&rows[i].tid) || !BlockNumberIsValid(rows[i].codesBlk))
				continue;
			vacuum_delay_point();
			DenseRefSet(&p, rows[i].codesBlk, rows[i].codesAt);
			oldcxt = MemoryContextSwitchTo(ms->nodeCxt);
			merge_node(ms, &p, blk, (uint16) i);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(ms->nodeCxt);
			if (ms->meta.nentries < DENSE_MAX_ENTRIES && merged % DENSE_MERGE_ENTRY_EVERY == 0)
				ms->entries[ms->meta.nentries++] = p;
			merged++;
			/* dynahash's own share of an entry: about a pointer and a hash */
			if (hash_get_num_entries(ms->held) * (sizeof(HeldLinks) + 16) +
				hash_get_num_entries(ms->tail) * (sizeof(TailNode) + 16) > ms->memory)
			{
				write_all_held(ms);
				hold_begin(ms);
			}
		}
		if (blk == endBlk)
			break;
		blk = next;
	}
	write_all_held(ms);
	MemoryContextDelete(ms->nodeCxt);
	return merged;
}

/*
 * Link the tail's live rows into the graph; returns how many. Nothing for
 * an index without a graph.
 */
int64
DenseMergeTail(Relation index)
{
	MergeState	ms;
	BlockNumber endBlk,
				blk;
	uint16		endIndex;
	int64		merged = 0;
	uint64		passed = 0;
	int			nentries;
	MemoryContext cxt,
				oldcxt;

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

	cxt = AllocSetContextCreate(CurrentMemoryContext, "dense_flat merge in memory", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	nentries = ms.meta.nentries;
	if (merge_in_memory(index, &ms.meta, ms.entries, &nentries, endBlk, endIndex, &merged, &passed))
		ms.meta.nentries = (uint16) nentries;
	else
	{
		elog(DEBUG1, "dense_flat index \"%s\" links its tail on its pages: the graph does not fit the merge's memory",
			 RelationGetRelationName(index));
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(cxt);
		merged = merge_on_pages(&ms, blk, BlockNumberIsValid(ms.meta.graphEndBlk) ? ms.meta.graphEndIndex : 0,
								endBlk, endIndex, &passed);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	write_meta(index, ms.entries, ms.meta.nentries, endBlk, endIndex, passed);
	return merged;
}
