/*
 * dense_walk.c: a scan's walk of a dense_flat index's graph, for an ORDER
 * BY without a condition or under one that allows many rows (dense_scan.c).
 *
 * Best first from the entries, as a search of HNSW's bottom layer: the walk
 * expands the nearest node met and not yet expanded (by the estimate of
 * its distance from the codes) until that node is farther than the width
 * nearest met (hybrid_search.dense_ef_search), then returns those nodes as
 * a batch in the order of their bounds, which the executor's recheck turns
 * into exact order. Asked for more, it doubles its width and goes on from
 * where it stopped, so a filter the executor applies above the scan keeps
 * getting rows; a batch's rows may then come after a nearer row of an
 * earlier batch (the walk is approximate, as HNSW's). Once every node the
 * entries reach has been returned, the scan scores the rest (dense_scan.c).
 *
 * A node's links are read under its page's share lock (a merge may change
 * them); its codes and its row's place are never changed once written. A
 * node whose row lies at or past the graph's end as the scan read it is the
 * tail's, which the scan scores itself, and a node VACUUM marked dead is no
 * row's: the walk passes through both and keeps no room for them. A returned
 * node's TID is read from its row, where VACUUM marked it dead first.
 */
#include "postgres.h"

#include <float.h>
#include <math.h>

#include "miscadmin.h"
#include "storage/bufmgr.h"

#include "dense_flat.h"

/* a node met and not yet expanded, by estimate */
typedef struct FrontierEntry
{
	float4		estimate;
	uint16		at;
	bool		dead;			/* a dead row's: a merge never links to it */
	BlockNumber blk;
} FrontierEntry;

struct DenseWalk
{
	Relation	index;
	const DenseQuery *query;
	int			dims;
	int			degree;
	Size		itemSize;
	DenseRef   *entries;
	int			nentries;
	BlockNumber endBlk;			/* the graph's end as the scan read it */
	uint16		endIndex;
	BlockNumber nblocks;
	/* the nodes met: a set of their places, open addressing */
	uint64	   *met;
	uint32		metMask;
	uint32		metCount;
	/* the nodes met, not expanded: a min-heap by estimate */
	FrontierEntry *frontier;
	int			nfrontier;
	int			maxFrontier;
	/* the width nearest estimates met: a max-heap */
	float4	   *best;
	int			nbest;
	int			width;
	/* the nodes met that no batch took yet, and the estimates of those taken */
	DenseWalkNode *pool;
	int			npool;
	int			maxPool;
	float4	   *taken;
	int			ntaken;
	int			maxTaken;
	/* the nodes expanded, kept where expandedNodes is not NULL (a merge's candidates) */
	DenseWalkNode *expandedNodes;
	int			nexpanded;
	int			maxExpanded;
	int			step;			/* the first batch's width */
	/* links a merge holds back, met after a node's own (DenseWalkHoldLinks) */
	DenseHeldLinks heldLinks;
	void	   *heldArg;
	/* the batch being returned, by bound */
	DenseWalkNode *batch;
	int			nbatch;
	int			next;
	bool		started;
	bool		exhausted;		/* every node reached has been met and expanded */
	DenseRef   *links;			/* a node's links, copied */
};

static inline uint64
place_key(BlockNumber blk, uint16 at)
{
	return ((uint64) blk << 16 | at) + 1;
}

static inline uint32
place_hash(uint64 key)
{
	key *= UINT64CONST(0x9E3779B97F4A7C15);
	return (uint32) (key >> 32);
}

/* add a place to the set; false if it was there */
static bool
met_add(DenseWalk *w, BlockNumber blk, uint16 at)
{
	uint64		key = place_key(blk, at);
	uint32		i;

	if ((w->metCount + 1) * 2 > w->metMask + 1)
	{
		uint64	   *old = w->met;
		uint32		oldSize = w->metMask + 1;

		w->metMask = oldSize * 2 - 1;
		w->met = palloc0(sizeof(uint64) * (w->metMask + 1));
		for (uint32 j = 0; j < oldSize; j++)
			if (old[j] != 0)
			{
				for (i = place_hash(old[j]) & w->metMask; w->met[i] != 0; i = (i + 1) & w->metMask)
					;
				w->met[i] = old[j];
			}
		pfree(old);
	}
	for (i = place_hash(key) & w->metMask; w->met[i] != 0; i = (i + 1) & w->metMask)
		if (w->met[i] == key)
			return false;
	w->met[i] = key;
	w->metCount++;
	return true;
}

bool
DenseWalkMet(const DenseWalk *w, BlockNumber blk, uint16 at)
{
	uint64		key = place_key(blk, at);

	for (uint32 i = place_hash(key) & w->metMask; w->met[i] != 0; i = (i + 1) & w->metMask)
		if (w->met[i] == key)
			return true;
	return false;
}

static void
frontier_push(DenseWalk *w, FrontierEntry x)
{
	int			i;

	if (w->nfrontier == w->maxFrontier)
	{
		w->maxFrontier *= 2;
		w->frontier = repalloc(w->frontier, sizeof(FrontierEntry) * w->maxFrontier);
	}
	for (i = w->nfrontier++; i > 0 && x.estimate < w->frontier[(i - 1) / 2].estimate; i = (i - 1) / 2)
		w->frontier[i] = w->frontier[(i - 1) / 2];
	w->frontier[i] = x;
}

static FrontierEntry
frontier_pop(DenseWalk *w)
{
	FrontierEntry top = w->frontier[0],
				x = w->frontier[--w->nfrontier];
	int			i = 0;

	for (;;)
	{
		int			c = 2 * i + 1;

		if (c >= w->nfrontier)
			break;
		if (c + 1 < w->nfrontier && w->frontier[c + 1].estimate < w->frontier[c].estimate)
			c++;
		if (!(w->frontier[c].estimate < x.estimate))
			break;
		w->frontier[i] = w->frontier[c];
		i = c;
	}
	if (w->nfrontier > 0)
		w->frontier[i] = x;
	return top;
}

/* offer an estimate to the width nearest */
static void
best_offer(DenseWalk *w, float4 estimate)
{
	float4	   *h = w->best;
	int			i;

	if (w->nbest == w->width)
	{
		if (!(estimate < h[0]))
			return;
		/* replace the farthest */
		i = 0;
		for (;;)
		{
			int			c = 2 * i + 1;

			if (c >= w->nbest)
				break;
			if (c + 1 < w->nbest && h[c + 1] > h[c])
				c++;
			if (!(h[c] > estimate))
				break;
			h[i] = h[c];
			i = c;
		}
		h[i] = estimate;
		return;
	}
	for (i = w->nbest++; i > 0 && estimate > h[(i - 1) / 2]; i = (i - 1) / 2)
		h[i] = h[(i - 1) / 2];
	h[i] = estimate;
}

/* the item of the node at (blk, at), in a pinned page */
static const DenseCodes *
node_item(DenseWalk *w, Buffer buf, uint16 at)
{
	const DenseCodes *item = DenseItemAt(BufferGetPage(buf), at, w->itemSize);

	if (item == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" links to a node that page %u does not hold",
						RelationGetRelationName(w->index), BufferGetBlockNumber(buf)),
				 errhint("REINDEX it.")));
	return item;
}

/* whether a row's place is at or past the graph's end as the scan read it */
static inline bool
in_tail(const DenseWalk *w, BlockNumber rowBlk, uint16 rowIndex)
{
	return !BlockNumberIsValid(w->endBlk) || rowBlk > w->endBlk ||
		(rowBlk == w->endBlk && rowIndex >= w->endIndex);
}

/* score a node the first time it is met */
static void
meet(DenseWalk *w, BlockNumber blk, uint16 at)
{
	Buffer		buf;
	const DenseCodes *item;
	const DenseLinks *links;
	DenseWalkNode node;
	bool		dead;

	if (!met_add(w, blk, at))
		return;
	buf = DensePinCodes(w->index, blk, w->nblocks);
	item = node_item(w, buf, at);
	node.bound = DenseQueryBound(w->query, item, &node.estimate);
	links = DenseCodesLinks(item, w->dims);
	node.rowBlk = links->rowBlk;
	node.rowIndex = DenseLinksRowIndex(links);
	dead = (links->rowIndex & DENSE_ROW_DEAD) != 0;
	DenseRefSet(&node.ref, blk, at);
	ReleaseBuffer(buf);

	frontier_push(w, (FrontierEntry) {node.estimate, at, dead, blk});
	if (dead || in_tail(w, node.rowBlk, node.rowIndex))
		return;
	best_offer(w, node.estimate);
	if (w->npool == w->maxPool)
	{
		w->maxPool *= 2;
		w->pool = repalloc(w->pool, sizeof(DenseWalkNode) * w->maxPool);
	}
	w->pool[w->npool++] = node;
}

static void
expand(DenseWalk *w, BlockNumber blk, uint16 at)
{
	Buffer		buf = DensePinCodes(w->index, blk, w->nblocks);
	const DenseLinks *links;
	int			n;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	links = DenseCodesLinks(node_item(w, buf, at), w->dims);
	n = links->nlinks;
	if (n > w->degree)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" has a node with %d links, more than its degree %d",
						RelationGetRelationName(w->index), n, w->degree),
				 errhint("REINDEX it.")));
	memcpy(w->links, links->links, sizeof(DenseRef) * n);
	UnlockReleaseBuffer(buf);
	for (int i = 0; i < n; i++)
	{
		BlockNumber target = DenseRefBlock(&w->links[i]);

		DenseCheckBlock(w->index, &w->nblocks, target, 0);
		meet(w, target, w->links[i].at);
	}
	if (w->heldLinks != NULL)
	{
		const DenseRef *held;
		int			nheld = w->heldLinks(w->heldArg, blk, at, &held);

		for (int i = 0; i < nheld; i++)
		{
			DenseCheckBlock(w->index, &w->nblocks, DenseRefBlock(&held[i]), 0);
			meet(w, DenseRefBlock(&held[i]), held[i].at);
		}
	}
}

static int
node_cmp(const void *a, const void *b)
{
	double		x = ((const DenseWalkNode *) a)->bound,
				y = ((const DenseWalkNode *) b)->bound;

	return x < y ? -1 : x > y ? 1 : 0;
}

static void
array_add(float4 **a, int *n, int *max, float4 x)
{
	if (*n == *max)
	{
		*max *= 2;
		*a = repalloc(*a, sizeof(float4) * *max);
	}
	(*a)[(*n)++] = x;
}

/* widen the walk and take its next batch; false when nothing is left */
static bool
next_batch(DenseWalk *w)
{
	float4		limit;
	int			kept = 0;

	if (!w->started)
	{
		w->started = true;
		for (int e = 0; e < w->nentries; e++)
		{
			DenseCheckBlock(w->index, &w->nblocks, DenseRefBlock(&w->entries[e]), 0);
			meet(w, DenseRefBlock(&w->entries[e]), w->entries[e].at);
		}
	}
	if (w->exhausted && w->npool == 0)
		return false;

	/* the first batch's width, then twice the last: as many batches as doublings */
	w->width = w->width == 0 ? w->step : 2 * w->width;
	w->best = repalloc(w->best, sizeof(float4) * w->width);
	w->nbest = 0;
	for (int i = 0; i < w->ntaken; i++)
		best_offer(w, w->taken[i]);
	for (int i = 0; i < w->npool; i++)
		best_offer(w, w->pool[i].estimate);

	while (w->nfrontier > 0)
	{
		FrontierEntry near;

		if (w->nbest == w->width && w->frontier[0].estimate > w->best[0])
			break;
		CHECK_FOR_INTERRUPTS();
		near = frontier_pop(w);
		if (w->expandedNodes != NULL && !near.dead)
		{
			if (w->nexpanded == w->maxExpanded)
			{
				w->maxExpanded *= 2;
				w->expandedNodes = repalloc(w->expandedNodes, sizeof(DenseWalkNode) * w->maxExpanded);
			}
			w->expandedNodes[w->nexpanded].estimate = near.estimate;
			DenseRefSet(&w->expandedNodes[w->nexpanded++].ref, near.blk, near.at);
		}
		expand(w, near.blk, near.at);
	}
	w->exhausted = w->nfrontier == 0;

	/* the batch: the pool's nodes among the width nearest (all, once exhausted) */
	limit = w->exhausted || w->nbest < w->width ? FLT_MAX : w->best[0];
	w->nbatch = w->next = 0;
	w->batch = repalloc(w->batch, sizeof(DenseWalkNode) * Max(w->npool, 1));
	for (int i = 0; i < w->npool; i++)
	{
		if (w->pool[i].bound <= limit || w->exhausted)
		{
			w->batch[w->nbatch++] = w->pool[i];
			array_add(&w->taken, &w->ntaken, &w->maxTaken, w->pool[i].estimate);
		}
		else
			w->pool[kept++] = w->pool[i];
	}
	w->npool = kept;
	qsort(w->batch, w->nbatch, sizeof(DenseWalkNode), node_cmp);
	return w->nbatch > 0 || !w->exhausted || w->npool > 0;
}

/* a walk of the given width (of its first batch; later ones double it) */
DenseWalk *
DenseWalkBegin(Relation index, const DenseMetaPageData *meta, const DenseRef *entries,
			   const DenseQuery *query, int width)
{
	DenseWalk  *w = palloc0(sizeof(DenseWalk));

	w->index = index;
	w->query = query;
	w->dims = meta->dims;
	w->degree = meta->degree;
	w->itemSize = DENSE_ITEM_SIZE(meta->dims, meta->degree);
	w->nentries = meta->nentries;
	w->entries = palloc(sizeof(DenseRef) * Max(w->nentries, 1));
	memcpy(w->entries, entries, sizeof(DenseRef) * w->nentries);
	w->endBlk = meta->graphEndBlk;
	w->endIndex = meta->graphEndIndex;
	w->metMask = 1023;
	w->met = palloc0(sizeof(uint64) * (w->metMask + 1));
	w->maxFrontier = 1024;
	w->frontier = palloc(sizeof(FrontierEntry) * w->maxFrontier);
	w->best = palloc(sizeof(float4));
	w->maxPool = 1024;
	w->pool = palloc(sizeof(DenseWalkNode) * w->maxPool);
	w->maxTaken = 1024;
	w->taken = palloc(sizeof(float4) * w->maxTaken);
	w->batch = palloc(sizeof(DenseWalkNode));
	w->links = palloc(sizeof(DenseRef) * Max(meta->degree, 1));
	w->step = width;
	return w;
}

/* have the walk meet, after a node's links, those fn(arg, ...) says a merge holds back */
void
DenseWalkHoldLinks(DenseWalk *w, DenseHeldLinks fn, void *arg)
{
	w->heldLinks = fn;
	w->heldArg = arg;
}

/*
 * A merge's candidates for a node's links: the width nodes nearest the
 * query a walk of that width finds, and the nodes it expanded on its way
 * (among them far ones, which give links into other regions; never a dead
 * row's). Returns how many, in *nodes (a node may be there twice).
 */
int
DenseWalkNearest(DenseWalk *w, int width, DenseWalkNode **nodes)
{
	w->step = width;
	w->maxExpanded = 256;
	w->expandedNodes = palloc(sizeof(DenseWalkNode) * w->maxExpanded);
	(void) next_batch(w);
	w->batch = repalloc(w->batch, sizeof(DenseWalkNode) * (w->nbatch + w->nexpanded + 1));
	memcpy(w->batch + w->nbatch, w->expandedNodes, sizeof(DenseWalkNode) * w->nexpanded);
	*nodes = w->batch;
	return w->nbatch + w->nexpanded;
}

/* the node the walk returns next, or NULL once it has returned every node it reaches */
const DenseWalkNode *
DenseWalkPeek(DenseWalk *w)
{
	while (w->next == w->nbatch)
		if (!next_batch(w))
			return NULL;
	return &w->batch[w->next];
}

/* whether the walk has met every node the entries reach (its last batch is being returned) */
bool
DenseWalkExhausted(const DenseWalk *w)
{
	return w->exhausted;
}

/*
 * Take the node DenseWalkPeek gave: its row's TID, or false if VACUUM
 * marked the row dead.
 */
bool
DenseWalkTake(DenseWalk *w, ItemPointer tid)
{
	const DenseWalkNode *node = &w->batch[w->next++];
	Buffer		buf;
	Page		page;

	DenseCheckBlock(w->index, &w->nblocks, node->rowBlk, 0);
	buf = ReadBuffer(w->index, node->rowBlk);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = DensePage(w->index, buf, DENSE_PAGE_ROWS);
	if (node->rowIndex >= DensePageNRows(page))
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" has a node whose row page %u does not hold it",
						RelationGetRelationName(w->index), node->rowBlk),
				 errhint("REINDEX it.")));
	*tid = DensePageRows(page)[node->rowIndex].tid;
	UnlockReleaseBuffer(buf);
	return ItemPointerIsValid(tid);
}
