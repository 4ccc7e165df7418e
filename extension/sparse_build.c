/*
 * sparse_build.c: CREATE INDEX and the merge that writes a segment.
 *
 * A merge streams the old segment term by term, merges in the new rows'
 * postings (sorted in memory), drops the rows a VACUUM callback calls dead,
 * and writes a new segment into fresh pages; then it switches the metapage
 * to it in one WAL record and frees the old pages. CREATE INDEX collects
 * rows up to maintenance_work_mem and merges them in, batch by batch.
 */
#include "postgres.h"

#include "access/generic_xlog.h"
#include "access/tableam.h"
#include "access/xloginsert.h"
#include "catalog/index.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/memutils.h"

#include "sparse_index.h"

void
SparseMergeInputInit(SparseMergeInput *in, bool bm25)
{
	memset(in, 0, sizeof(*in));
	in->bm25 = bm25;
	in->maxpostings = 1024;
	in->postings = palloc(in->maxpostings * sizeof(SparsePosting));
	in->maxdocs = 256;
	in->docs = palloc(in->maxdocs * sizeof(SparseDoc));
}

void
SparseMergeInputFree(SparseMergeInput *in)
{
	if (in->postings)
		pfree(in->postings);
	if (in->docs)
		pfree(in->docs);
	memset(in, 0, sizeof(*in));
}

/*
 * Add a row (newdoc) or more postings of the row added last. In a BM25
 * index every posting of a row carries the row's length, the sum of its
 * weights (tf), known once its last part is added.
 */
void
SparseMergeInputAdd(SparseMergeInput *in, ItemPointer tid, bool newdoc, bool isnull,
					int32 nnz, const int32 *indices, const float4 *values)
{
	uint64		key = SparseTidKey(tid);

	if (newdoc)
	{
		if (in->ndocs == in->maxdocs)
		{
			in->maxdocs *= 2;
			in->docs = repalloc_huge(in->docs, in->maxdocs * sizeof(SparseDoc));
		}
		in->docs[in->ndocs].key = key;
		in->docs[in->ndocs].flags = isnull ? SPARSE_DOC_NULL : 0;
		in->docs[in->ndocs].length = 0;
		in->ndocs++;
		in->memUsed += sizeof(SparseDoc);
		in->docStart = in->npostings;
		in->docLength = 0;
	}
	if (isnull)
		return;
	while (in->npostings + nnz > in->maxpostings)
	{
		in->maxpostings *= 2;
		in->postings = repalloc_huge(in->postings, in->maxpostings * sizeof(SparsePosting));
	}
	for (int i = 0; i < nnz; i++)
	{
		SparsePosting *p = &in->postings[in->npostings++];

		p->term = indices[i];
		p->weight = values[i];
		p->key = key;
		p->length = 0;
		in->docLength += values[i];
	}
	in->memUsed += nnz * sizeof(SparsePosting);
	if (in->bm25)
	{
		for (int64 i = in->docStart; i < in->npostings; i++)
			in->postings[i].length = (float4) in->docLength;
		in->docs[in->ndocs - 1].length = (float4) in->docLength;
	}
}

static int
posting_cmp(const void *a, const void *b, void *arg)
{
	const SparsePosting *pa = a;
	const SparsePosting *pb = b;

	if (pa->term != pb->term)
		return pa->term < pb->term ? -1 : 1;
	if (pa->key != pb->key)
		return pa->key < pb->key ? -1 : 1;
	return 0;
}

/*
 * The 16-bit digits sort_postings orders by, least significant first: three
 * of the TID key (48 bits), then two of the term with its sign bit flipped,
 * so that unsigned digits order terms as posting_cmp does.
 */
#define POSTING_DIGITS 5
#define POSTING_KEY_DIGITS 3
#define POSTING_RADIX 65536

static inline uint32
posting_digit(const SparsePosting *p, int digit)
{
	if (digit < POSTING_KEY_DIGITS)
		return (uint32) (p->key >> (16 * digit)) & 0xFFFF;
	return (((uint32) p->term ^ 0x80000000U) >> (16 * (digit - POSTING_KEY_DIGITS))) & 0xFFFF;
}

/*
 * Sort postings in posting_cmp's order (term, then key). From 65,536
 * postings, by a stable radix sort: a merge's postings come by row, and a
 * qsort of them took a third of a merge, which a load pays every
 * max(sparse_pending_limit, rows / 16) inserts. A digit every posting shares
 * costs no pass, nor do the key's when the rows come in TID order already
 * (a load's, appended; a build's). It needs a second array of n postings,
 * as large as the input (which a build keeps under half of
 * maintenance_work_mem).
 */
static void
sort_postings(SparsePosting *postings, int64 n)
{
	int64	   *counts;
	SparsePosting *from = postings,
			   *to,
			   *scratch;
	bool		keyOrdered = true;

	if (n < POSTING_RADIX)
	{
		if (n > 1)
			qsort_arg(postings, n, sizeof(SparsePosting), posting_cmp, NULL);
		return;
	}
	counts = palloc0(sizeof(int64) * POSTING_DIGITS * POSTING_RADIX);
	for (int64 i = 0; i < n; i++)
	{
		for (int d = 0; d < POSTING_DIGITS; d++)
			counts[d * POSTING_RADIX + posting_digit(&postings[i], d)]++;
		if (i > 0 && postings[i].key < postings[i - 1].key)
			keyOrdered = false;
	}
	scratch = to = palloc_extended(sizeof(SparsePosting) * n, MCXT_ALLOC_HUGE);
	for (int d = keyOrdered ? POSTING_KEY_DIGITS : 0; d < POSTING_DIGITS; d++)
	{
		int64	   *c = counts + d * POSTING_RADIX;
		int64		sum = 0;
		SparsePosting *swap;

		if (c[posting_digit(&from[0], d)] == n)
			continue;
		for (int v = 0; v < POSTING_RADIX; v++)
		{
			int64		count = c[v];

			c[v] = sum;
			sum += count;
		}
		for (int64 i = 0; i < n; i++)
			to[c[posting_digit(&from[i], d)]++] = from[i];
		swap = from;
		from = to;
		to = swap;
	}
	if (from != postings)
		memcpy(postings, from, sizeof(SparsePosting) * n);
	pfree(scratch);
	pfree(counts);
}

static int
doc_cmp(const void *a, const void *b)
{
	const SparseDoc *da = a;
	const SparseDoc *db = b;

	if (da->key != db->key)
		return da->key < db->key ? -1 : 1;
	return 0;
}

/*
 * Writes items into a chain of new pages, each WAL-logged as a full image
 * when it is done.
 */
typedef struct SparseWriter
{
	Relation	index;
	uint32		generation;
	uint16		type;
	BlockNumber head;
	BlockNumber blkno;
	Buffer		buf;
	GenericXLogState *state;
	Page		page;
	int64		npages;
} SparseWriter;

static void
writer_init(SparseWriter *w, Relation index, uint16 type, uint32 generation)
{
	memset(w, 0, sizeof(*w));
	w->index = index;
	w->type = type;
	w->generation = generation;
	w->head = InvalidBlockNumber;
	w->blkno = InvalidBlockNumber;
	w->buf = InvalidBuffer;
}

static void
writer_new_page(SparseWriter *w)
{
	Buffer		buf = SparseNewBuffer(w->index);
	BlockNumber blkno = BufferGetBlockNumber(buf);

	if (BufferIsValid(w->buf))
	{
		SparsePageGetOpaque(w->page)->next = blkno;
		GenericXLogFinish(w->state);
		UnlockReleaseBuffer(w->buf);
	}
	else
		w->head = blkno;
	w->buf = buf;
	w->blkno = blkno;
	w->state = GenericXLogStart(w->index);
	w->page = GenericXLogRegisterBuffer(w->state, buf, GENERIC_XLOG_FULL_IMAGE);
	SparseInitPage(buf, w->page, w->type, w->generation);
	w->npages++;
}

/* add an item; returns where it went */
static void
writer_add(SparseWriter *w, const void *item, Size size, BlockNumber *blkno, OffsetNumber *off)
{
	OffsetNumber result;

	Assert(size <= SPARSE_MAX_ITEM_SIZE);
	if (!BufferIsValid(w->buf) || PageGetFreeSpace(w->page) < MAXALIGN(size))
		writer_new_page(w);
	result = PageAddItem(w->page, (Item) item, size, InvalidOffsetNumber, false, false);
	if (result == InvalidOffsetNumber)
		elog(ERROR, "could not add an item of %zu bytes to a sparse_inverted page", size);
	if (blkno)
		*blkno = w->blkno;
	if (off)
		*off = result;
}

static void
writer_finish(SparseWriter *w)
{
	if (BufferIsValid(w->buf))
	{
		GenericXLogFinish(w->state);
		UnlockReleaseBuffer(w->buf);
		w->buf = InvalidBuffer;
	}
}

/* the posting blocks of one term being written */
typedef struct TermWriter
{
	SparseWriter *w;
	bool		bm25;
	SparseDirEntry entry;
	SparsePostingBlock *block;
	uint32		slotOffsets;	/* the new segment's segMaxOffset */
	uint64		slots[SPARSE_BLOCK_POSTINGS];
	uint64		lastKey;		/* TID key of the last posting added */
	float4		weights[SPARSE_BLOCK_POSTINGS];
	float4		lengths[SPARSE_BLOCK_POSTINGS];
	int			n;
	double		sumWeights;		/* of every posting written */
	/* the term's skip array so far, written to sw after its last block */
	SparseWriter *sw;
	SparseSkipEntry *skip;
	uint32		maxskip;
} TermWriter;

/* write a posting block of the term, and note it in its skip array and directory entry */
static void
term_write_block(TermWriter *tw, const SparsePostingBlock *b, Size size)
{
	BlockNumber blkno;
	OffsetNumber off;

	writer_add(tw->w, b, size, &blkno, &off);
	if (tw->entry.nblocks == tw->maxskip)
	{
		tw->maxskip = tw->maxskip ? tw->maxskip * 2 : 64;
		tw->skip = tw->skip ? repalloc_huge(tw->skip, tw->maxskip * sizeof(SparseSkipEntry)) :
			palloc(tw->maxskip * sizeof(SparseSkipEntry));
	}
	tw->skip[tw->entry.nblocks].firstSlot = b->firstSlot;
	tw->skip[tw->entry.nblocks].blk = blkno;
	tw->skip[tw->entry.nblocks].off = off;
	tw->skip[tw->entry.nblocks].unused = 0;
	if (tw->entry.nblocks == 0)
	{
		tw->entry.firstBlk = blkno;
		tw->entry.firstOff = off;
		tw->entry.maxw = b->maxw;
		tw->entry.minw = b->minw;
	}
	else
	{
		tw->entry.maxw = Max(tw->entry.maxw, b->maxw);
		tw->entry.minw = Min(tw->entry.minw, b->minw);
	}
	tw->entry.nblocks++;
}

static void
term_flush_block(TermWriter *tw)
{
	SparsePostingBlock *b = tw->block;
	float4	   *weights;
	uint16		flags;
	Size		size;
	uint64		firstSlot;
	/* BM25: minw is the smallest row length */
	const float4 *mins = tw->bm25 ? tw->lengths : tw->weights;

	if (tw->n == 0)
		return;
	firstSlot = tw->slots[0];
	flags = (tw->bm25 ? SPARSE_BLOCK_LENGTHS : 0) |
		(tw->slots[tw->n - 1] - firstSlot > PG_UINT16_MAX ? SPARSE_BLOCK_WIDE : 0);
	size = SPARSE_BLOCK_SIZE_FLAGS(tw->n, flags);
	memset(b, 0, size);
	b->n = tw->n;
	b->flags = flags;
	b->maxw = tw->weights[0];
	b->minw = mins[0];
	b->firstSlot = firstSlot;
	weights = SPARSE_BLOCK_WEIGHTS(b);
	for (int i = 0; i < tw->n; i++)
	{
		uint64		delta = tw->slots[i] - firstSlot;

		if (flags & SPARSE_BLOCK_WIDE)
			((uint32 *) b->data)[i] = (uint32) delta;
		else
			((uint16 *) b->data)[i] = (uint16) delta;
		weights[i] = tw->weights[i];
		b->maxw = Max(b->maxw, tw->weights[i]);
		b->minw = Min(b->minw, mins[i]);
		tw->sumWeights += tw->weights[i];
	}
	if (tw->bm25)
		memcpy(SPARSE_BLOCK_LENGTHS_OF(b), tw->lengths, tw->n * sizeof(float4));
	b->lastKey = tw->lastKey;
	term_write_block(tw, b, size);
	tw->n = 0;
}

/*
 * Copy an old segment's block as it is (a merge's blocks that no new or
 * dead row changes, where the slots are numbered as before): no posting is
 * decoded and encoded again.
 */
static void
term_copy_block(TermWriter *tw, const SparsePostingBlock *b)
{
	const float4 *weights = SPARSE_BLOCK_WEIGHTS(b);

	Assert(tw->n == 0);
	for (int i = 0; i < b->n; i++)
		tw->sumWeights += weights[i];
	tw->entry.df += b->n;
	tw->lastKey = b->lastKey;
	term_write_block(tw, b, SPARSE_BLOCK_SIZE_FLAGS(b->n, b->flags));
}

/* the term's skip array, if its list is long enough to have one */
static void
term_write_skip(TermWriter *tw)
{
	SparseSkipChunk *c;

	StaticAssertStmt(SPARSE_SKIPCHUNK_SIZE(SPARSE_SKIP_CHUNK) <= SPARSE_MAX_ITEM_SIZE,
					 "a skip chunk fits a page");
	tw->entry.skipBlk = InvalidBlockNumber;
	tw->entry.skipOff = InvalidOffsetNumber;
	if (tw->entry.nblocks < SPARSE_SKIP_MIN_BLOCKS)
		return;
	c = palloc0(SPARSE_SKIPCHUNK_SIZE(SPARSE_SKIP_CHUNK));
	for (uint32 from = 0; from < tw->entry.nblocks; from += SPARSE_SKIP_CHUNK)
	{
		BlockNumber blkno;
		OffsetNumber off;

		c->n = Min(SPARSE_SKIP_CHUNK, tw->entry.nblocks - from);
		memcpy(c->entries, &tw->skip[from], c->n * sizeof(SparseSkipEntry));
		writer_add(tw->sw, c, SPARSE_SKIPCHUNK_SIZE(c->n), &blkno, &off);
		if (from == 0)
		{
			tw->entry.skipBlk = blkno;
			tw->entry.skipOff = off;
		}
	}
	pfree(c);
}

static inline void
term_add(TermWriter *tw, uint64 key, float4 weight, float4 length)
{
	uint64		slot = SparseKeySlot(key, tw->slotOffsets);

	/* a block's slot deltas fit a uint32 */
	if (tw->n > 0 && slot - tw->slots[0] > PG_UINT32_MAX)
		term_flush_block(tw);
	tw->slots[tw->n] = slot;
	tw->lastKey = key;
	tw->weights[tw->n] = weight;
	tw->lengths[tw->n] = length;
	tw->n++;
	tw->entry.df++;
	if (tw->n == SPARSE_BLOCK_POSTINGS)
		term_flush_block(tw);
}

static inline bool
key_is_dead(uint64 key, const uint64 *dead, int64 ndead)
{
	return ndead > 0 &&
		bsearch(&key, dead, ndead, sizeof(uint64), SparseKeyCmp) != NULL;
}

/*
 * Whether a merge may copy an old block of term as it is, the new postings
 * from pi on: none of them goes into it (they come after its last row), and
 * it is full or they are not of this term (else it is written again with
 * them, so that a list appended to at every merge does not end in ever more
 * part-filled blocks).
 */
static bool
block_unchanged(const SparsePostingBlock *b, const SparseMergeInput *in, int64 pi, int32 term)
{
	bool		newOfTerm = pi < in->npostings && in->postings[pi].term == term;

	if (newOfTerm && in->postings[pi].key <= b->lastKey)
		return false;
	if ((b->flags & SPARSE_BLOCK_LENGTHS) != (in->bm25 ? SPARSE_BLOCK_LENGTHS : 0))
		return false;			/* not as term_flush_block writes them */
	return b->n == SPARSE_BLOCK_POSTINGS || !newOfTerm;
}

/* the directory entries of the old segment, read in term order */
typedef struct DirReader
{
	SparseReader *r;
	BlockNumber blk;
	SparseDirEntry *entries;
	int			n;
	int			pos;
} DirReader;

static bool
dir_next(DirReader *d, SparseDirEntry *out)
{
	while (d->pos >= d->n)
	{
		Buffer		buf;
		Page		page;
		OffsetNumber maxoff;

		if (!BlockNumberIsValid(d->blk))
			return false;
		buf = ReadBuffer(d->r->index, d->blk);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!SparsePageOk(page, SPARSE_PAGE_DIR, d->r->generation))
			elog(ERROR, "sparse_inverted index \"%s\" changed during a merge",
				 RelationGetRelationName(d->r->index));
		maxoff = PageGetMaxOffsetNumber(page);
		if (d->entries == NULL)
			d->entries = palloc(sizeof(SparseDirEntry) * (BLCKSZ / sizeof(SparseDirEntry) + 1));
		d->n = 0;
		d->pos = 0;
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
			memcpy(&d->entries[d->n++], PageGetItem(page, PageGetItemId(page, off)),
				   sizeof(SparseDirEntry));
		d->blk = SparsePageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
	}
	*out = d->entries[d->pos++];
	return true;
}

/* collect the pages of a chain */
static void
chain_pages(Relation index, BlockNumber blk, uint16 type, uint32 generation,
			BlockNumber **pages, int *npages, int *maxpages)
{
	while (BlockNumberIsValid(blk))
	{
		Buffer		buf = ReadBuffer(index, blk);
		Page		page;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!SparsePageOk(page, type, generation))
			elog(ERROR, "sparse_inverted index \"%s\": unexpected page %u in a chain",
				 RelationGetRelationName(index), blk);
		if (*npages == *maxpages)
		{
			*maxpages = *maxpages ? *maxpages * 2 : 64;
			*pages = *pages ? repalloc_huge(*pages, *maxpages * sizeof(BlockNumber))
				: palloc(*maxpages * sizeof(BlockNumber));
		}
		(*pages)[(*npages)++] = blk;
		blk = SparsePageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
	}
}

/* read_pending's input and counters */
typedef struct PendingRead
{
	Relation	index;
	SparseMergeInput *in;
	bool		started;
	BlockNumber **pages;
	int		   *npages;
	int		   *maxpages;
	int64	   *ndocs;
	int64	   *nentries;
	int64	   *nrows;
	double	   *length;
} PendingRead;

static void
read_pending_item(SparsePendingItem *item, BlockNumber blk, OffsetNumber off, void *arg)
{
	PendingRead *pr = arg;
	bool		newdoc = (item->flags & SPARSE_PENDING_FIRST) != 0;

	if (!newdoc && !pr->started)
		elog(ERROR, "sparse_inverted index \"%s\": malformed pending item (%u,%u)",
			 RelationGetRelationName(pr->index), blk, off);
	pr->started = true;
	SparseMergeInputAdd(pr->in, &item->tid, newdoc, (item->flags & SPARSE_DOC_NULL) != 0,
						item->nnz, SPARSE_PENDING_INDICES(item), SPARSE_PENDING_VALUES(item));
	if (newdoc)
		(*pr->ndocs)++;
	if (newdoc && !(item->flags & SPARSE_DOC_NULL))
		(*pr->nrows)++;
	*pr->nentries += item->nnz;
	if (pr->in->bm25)
		for (int j = 0; j < item->nnz; j++)
			*pr->length += SPARSE_PENDING_VALUES(item)[j];
}

/* a page read wholly: freed after the switch */
static void
read_pending_page(BlockNumber blk, void *arg)
{
	PendingRead *pr = arg;

	if (*pr->npages == *pr->maxpages)
	{
		*pr->maxpages = *pr->maxpages ? *pr->maxpages * 2 : 64;
		*pr->pages = *pr->pages ? repalloc_huge(*pr->pages, *pr->maxpages * sizeof(BlockNumber))
			: palloc(*pr->maxpages * sizeof(BlockNumber));
	}
	(*pr->pages)[(*pr->npages)++] = blk;
}

/*
 * Read the pending list from the metapage's head up to its current end into
 * in; returns the pages wholly read (to free) and where the list will start
 * afterwards. Called with the merge lock held.
 */
static void
read_pending(Relation index, SparseMergeInput *in, const SparseMetaPageData *meta,
			 BlockNumber lastBlk, OffsetNumber lastOff,
			 BlockNumber **pages, int *npages, int *maxpages,
			 int64 *ndocs, int64 *nentries, int64 *nrows, double *length)
{
	PendingRead pr = {index, in, false, pages, npages, maxpages, ndocs, nentries, nrows, length};

	*ndocs = 0;
	*nentries = 0;
	*nrows = 0;
	*length = 0;
	SparseWalkPending(index, meta, lastBlk, lastOff, read_pending_item, read_pending_page, &pr);
}

/*
 * Merge the segment with extra (may be NULL) and, if withPending, the
 * pending list, leaving out rows callback calls dead. The caller holds the
 * merge lock (or builds the index). Returns the rows in the new segment;
 * *removed gets the rows left out.
 */
int64
SparseMerge(Relation index, bool withPending, IndexBulkDeleteCallback callback,
			void *callback_state, SparseMergeInput *extra, int64 *removed)
{
	SparseMetaPageData meta;
	SparseMergeInput local;
	SparseMergeInput *in;
	BlockNumber lastBlk = InvalidBlockNumber;
	OffsetNumber lastOff = InvalidOffsetNumber;
	BlockNumber *freePages = NULL;
	int			nfree = 0,
				maxfree = 0;
	int64		pendDocs = 0,
				pendEntries = 0,
				pendRows = 0;
	double		pendLength = 0;
	int64		segRows = 0;
	uint64	   *dead = NULL;
	int64		ndead = 0,
				maxdead = 0;
	uint32		newgen;
	SparseReader reader;
	SparseWriter pw,
				sw,
				dw,
				diw,
				lw;
	SparseDirEntry *dir = NULL;
	int64		ndir = 0,
				maxdir = 0;
	DirReader dr;
	SparseDirEntry old;
	bool		haveOld;
	int64		pi;
	TermWriter tw;
	int64		segDocs = 0,
				segPostings = 0;
	BlockNumber segMaxBlock = 0;
	OffsetNumber segMaxOffset = 0;
	bool		withLengths;
	bool		copyBlocks;
	MemoryContext mcxt,
				oldcxt;

	mcxt = AllocSetContextCreate(CurrentMemoryContext, "sparse_inverted merge", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(mcxt);

	/* the metapage, and the end of the pending list as of now */
	{
		Buffer		metabuf = SparseLockMeta(index, BUFFER_LOCK_SHARE, &meta);

		if (withPending && BlockNumberIsValid(meta.pendingTail))
		{
			Buffer		tailbuf = ReadBuffer(index, meta.pendingTail);

			LockBuffer(tailbuf, BUFFER_LOCK_SHARE);
			lastBlk = meta.pendingTail;
			lastOff = PageGetMaxOffsetNumber(BufferGetPage(tailbuf));
			UnlockReleaseBuffer(tailbuf);
		}
		UnlockReleaseBuffer(metabuf);
	}
	newgen = meta.generation + 1;
	SparseReaderInit(&reader, index, &meta);

	if (extra)
		in = extra;
	else
	{
		SparseMergeInputInit(&local, SparseIsBM25(index));
		in = &local;
	}
	if (withPending && BlockNumberIsValid(lastBlk))
		read_pending(index, in, &meta, lastBlk, lastOff, &freePages, &nfree, &maxfree,
					 &pendDocs, &pendEntries, &pendRows, &pendLength);

	qsort(in->docs, in->ndocs, sizeof(SparseDoc), doc_cmp);
	sort_postings(in->postings, in->npostings);

	/*
	 * The dead rows: ask the callback once per row, then filter postings by
	 * binary search.
	 */
	if (callback)
	{
		BlockNumber blk = meta.docListHead;

		for (int64 i = 0; i < in->ndocs; i++)
		{
			ItemPointerData tid;

			SparseKeyTid(in->docs[i].key, &tid);
			if (callback(&tid, callback_state))
			{
				if (ndead == maxdead)
				{
					maxdead = maxdead ? maxdead * 2 : 1024;
					dead = dead ? repalloc_huge(dead, maxdead * sizeof(uint64)) : palloc(maxdead * sizeof(uint64));
				}
				dead[ndead++] = in->docs[i].key;
			}
		}
		while (BlockNumberIsValid(blk))
		{
			Buffer		buf = ReadBuffer(index, blk);
			Page		page;
			OffsetNumber maxoff;

			LockBuffer(buf, BUFFER_LOCK_SHARE);
			page = BufferGetPage(buf);
			if (!SparsePageOk(page, SPARSE_PAGE_DOCLIST, meta.generation))
				elog(ERROR, "sparse_inverted index \"%s\": unexpected page %u in the row list",
					 RelationGetRelationName(index), blk);
			maxoff = PageGetMaxOffsetNumber(page);
			for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
			{
				SparseDocChunk *c = (SparseDocChunk *) PageGetItem(page, PageGetItemId(page, off));

				for (int j = 0; j < c->n; j++)
				{
					if (callback(&SPARSE_DOCCHUNK_TIDS(c)[j], callback_state))
					{
						if (ndead == maxdead)
						{
							maxdead = maxdead ? maxdead * 2 : 1024;
							dead = dead ? repalloc_huge(dead, maxdead * sizeof(uint64)) : palloc(maxdead * sizeof(uint64));
						}
						dead[ndead++] = SparseTidKey(&SPARSE_DOCCHUNK_TIDS(c)[j]);
					}
				}
			}
			blk = SparsePageGetOpaque(page)->next;
			UnlockReleaseBuffer(buf);
		}
		if (ndead > 0)
			qsort(dead, ndead, sizeof(uint64), SparseKeyCmp);
	}
	*removed = ndead;

	/*
	 * The row list, first: its largest offset numbers the postings' slots.
	 * A BM25 index's rows carry their lengths unless the old segment has rows
	 * without them (written before lengths were kept: REINDEX adds them).
	 */
	withLengths = in->bm25 && (meta.segDocs == 0 || (meta.flags & SPARSE_META_DOC_LENGTHS));
	writer_init(&lw, index, SPARSE_PAGE_DOCLIST, newgen);
	{
		SparseDocChunk *out = palloc(SPARSE_DOCCHUNK_SIZE_LENGTHS(SPARSE_DOCLIST_CHUNK));
		ItemPointerData otids[SPARSE_DOCLIST_CHUNK];
		uint8		oflags[SPARSE_DOCLIST_CHUNK];
		float4		olengths[SPARSE_DOCLIST_CHUNK];
		int			on = 0;
		BlockNumber blk = meta.docListHead;
		SparseDocChunk *c = NULL;
		int			cpos = 0;
		Page		copy = palloc(BLCKSZ);
		OffsetNumber coff = InvalidOffsetNumber,
					cmax = InvalidOffsetNumber;
		int64		ni = 0;

#define FLUSH_DOCS() \
		do { \
			if (on > 0) { \
				out->n = on; \
				out->unused = 0; \
				memcpy(SPARSE_DOCCHUNK_TIDS(out), otids, on * sizeof(ItemPointerData)); \
				memcpy(SPARSE_DOCCHUNK_FLAGS(out), oflags, on); \
				if (withLengths) \
					memcpy(SPARSE_DOCCHUNK_LENGTHS(out), olengths, on * sizeof(float4)); \
				writer_add(&lw, out, withLengths ? SPARSE_DOCCHUNK_SIZE_LENGTHS(on) : SPARSE_DOCCHUNK_SIZE(on), \
						   NULL, NULL); \
				on = 0; \
			} \
		} while (0)

		for (;;)
		{
			uint64		okey = 0;
			uint8		oflag = 0;
			float4		olength = 0;
			bool		haveO = false;
			bool		haveN = ni < in->ndocs;

			/* next old row */
			while (c == NULL || cpos >= c->n)
			{
				if (coff != InvalidOffsetNumber && coff <= cmax)
				{
					c = (SparseDocChunk *) PageGetItem(copy, PageGetItemId(copy, coff));
					coff++;
					cpos = 0;
					continue;
				}
				c = NULL;
				if (!BlockNumberIsValid(blk))
					break;
				{
					Buffer		buf = ReadBuffer(index, blk);

					LockBuffer(buf, BUFFER_LOCK_SHARE);
					if (!SparsePageOk(BufferGetPage(buf), SPARSE_PAGE_DOCLIST, meta.generation))
						elog(ERROR, "sparse_inverted index \"%s\": unexpected page %u in the row list",
							 RelationGetRelationName(index), blk);
					memcpy(copy, BufferGetPage(buf), BLCKSZ);
					UnlockReleaseBuffer(buf);
				}
				blk = SparsePageGetOpaque(copy)->next;
				coff = FirstOffsetNumber;
				cmax = PageGetMaxOffsetNumber(copy);
			}
			if (c != NULL)
			{
				okey = SparseTidKey(&SPARSE_DOCCHUNK_TIDS(c)[cpos]);
				oflag = SPARSE_DOCCHUNK_FLAGS(c)[cpos];
				if (withLengths && meta.segDocs > 0)
					olength = SPARSE_DOCCHUNK_LENGTHS(c)[cpos];
				haveO = true;
			}
			if (!haveO && !haveN)
				break;
			if (haveO && (!haveN || okey <= in->docs[ni].key))
			{
				if (haveN && okey == in->docs[ni].key)
				{
					cpos++;
					continue;	/* the new one wins */
				}
				cpos++;
			}
			else
			{
				okey = in->docs[ni].key;
				oflag = in->docs[ni].flags;
				olength = in->docs[ni].length;
				ni++;
			}
			if (key_is_dead(okey, dead, ndead))
				continue;
			SparseKeyTid(okey, &otids[on]);
			oflags[on] = oflag;
			olengths[on] = olength;
			on++;
			segDocs++;
			segMaxBlock = Max(segMaxBlock, (BlockNumber) (okey >> 16));
			segMaxOffset = Max(segMaxOffset, (OffsetNumber) (okey & 0xFFFF));
			if (!(oflag & SPARSE_DOC_NULL))
				segRows++;
			if (on == SPARSE_DOCLIST_CHUNK)
				FLUSH_DOCS();
		}
		FLUSH_DOCS();
#undef FLUSH_DOCS
	}
	writer_finish(&lw);

	/* postings: old lists merged with the new postings, term by term */
	writer_init(&pw, index, SPARSE_PAGE_POSTING, newgen);
	writer_init(&sw, index, SPARSE_PAGE_SKIP, newgen);
	memset(&tw, 0, sizeof(tw));
	tw.w = &pw;
	tw.sw = &sw;
	tw.bm25 = in->bm25;
	tw.slotOffsets = segMaxOffset;
	tw.block = palloc(SPARSE_BLOCK_MAX_SIZE);
	memset(&dr, 0, sizeof(dr));
	dr.r = &reader;
	dr.blk = meta.dirHead;
	haveOld = dir_next(&dr, &old);
	pi = 0;
	copyBlocks = ndead == 0 && reader.slotOffsets == tw.slotOffsets;
	while (haveOld || pi < in->npostings)
	{
		int32		term;
		SparseListIter it;
		bool		useOld;
		int			opos = 0;

		CHECK_FOR_INTERRUPTS();
		if (haveOld && (pi >= in->npostings || old.term <= in->postings[pi].term))
			term = old.term;
		else
			term = in->postings[pi].term;
		useOld = haveOld && old.term == term;
		memset(&tw.entry, 0, sizeof(tw.entry));
		tw.entry.term = term;
		tw.n = 0;
		memset(&it, 0, sizeof(it));
		if (useOld)
		{
			SparseListBegin(&it, &reader, &old);
			if (!SparseListNextBlock(&it))
				it.done = true;
		}
		else
			it.done = true;
		for (;;)
		{
			uint64		okey = 0;
			bool		haveO = false;
			bool		haveN = pi < in->npostings && in->postings[pi].term == term;

			if (!it.done)
			{
				if (opos >= it.block->n)
				{
					if (!SparseListNextBlock(&it))
						it.done = true;
					opos = 0;
				}
				if (!it.done && opos == 0 && copyBlocks && tw.n == 0 &&
					block_unchanged(it.block, in, pi, term))
				{
					term_copy_block(&tw, it.block);
					opos = it.block->n;
					continue;
				}
				if (!it.done)
				{
					okey = SparseTidKey(&it.tids[opos]);
					haveO = true;
				}
			}
			if (!haveO && !haveN)
				break;
			if (haveO && haveN && okey == in->postings[pi].key)
				opos++;			/* a row in both (never expected): the new one wins */
			else if (haveO && (!haveN || okey < in->postings[pi].key))
			{
				if (!key_is_dead(okey, dead, ndead))
					term_add(&tw, okey, it.weights[opos], it.lengths ? it.lengths[opos] : 0);
				opos++;
			}
			else
			{
				if (!key_is_dead(in->postings[pi].key, dead, ndead))
					term_add(&tw, in->postings[pi].key, in->postings[pi].weight,
							 in->postings[pi].length);
				pi++;
			}
		}
		if (reader.conflict)
			elog(ERROR, "sparse_inverted index \"%s\" changed during a merge",
				 RelationGetRelationName(index));
		term_flush_block(&tw);
		term_write_skip(&tw);
		if (tw.entry.df > 0)
		{
			if (ndir == maxdir)
			{
				maxdir = maxdir ? maxdir * 2 : 1024;
				dir = dir ? repalloc_huge(dir, maxdir * sizeof(SparseDirEntry)) : palloc(maxdir * sizeof(SparseDirEntry));
			}
			dir[ndir++] = tw.entry;
			segPostings += tw.entry.df;
		}
		if (useOld)
			haveOld = dir_next(&dr, &old);
		if (it.block)
			pfree(it.block);
	}
	writer_finish(&pw);
	writer_finish(&sw);

	/* the directory and its index */
	writer_init(&dw, index, SPARSE_PAGE_DIR, newgen);
	writer_init(&diw, index, SPARSE_PAGE_DIRINDEX, newgen);
	{
		BlockNumber lastDirBlk = InvalidBlockNumber;

		for (int64 i = 0; i < ndir; i++)
		{
			BlockNumber blkno;

			writer_add(&dw, &dir[i], sizeof(SparseDirEntry), &blkno, NULL);
			if (blkno != lastDirBlk)
			{
				SparseDirIndexEntry e;

				e.firstTerm = dir[i].term;
				e.blkno = blkno;
				writer_add(&diw, &e, sizeof(e), NULL, NULL);
				lastDirBlk = blkno;
			}
		}
	}
	writer_finish(&dw);
	writer_finish(&diw);

	/* the pages of the old segment, to free once unreachable */
	chain_pages(index, meta.dirIndexHead, SPARSE_PAGE_DIRINDEX, meta.generation, &freePages, &nfree, &maxfree);
	chain_pages(index, meta.dirHead, SPARSE_PAGE_DIR, meta.generation, &freePages, &nfree, &maxfree);
	chain_pages(index, meta.postingHead, SPARSE_PAGE_POSTING, meta.generation, &freePages, &nfree, &maxfree);
	chain_pages(index, meta.skipHead, SPARSE_PAGE_SKIP, meta.generation, &freePages, &nfree, &maxfree);
	chain_pages(index, meta.docListHead, SPARSE_PAGE_DOCLIST, meta.generation, &freePages, &nfree, &maxfree);

	/* switch the metapage to the new segment */
	{
		Buffer		metabuf = ReadBuffer(index, SPARSE_METAPAGE_BLKNO);
		GenericXLogState *state;
		Page		page;
		SparseMetaPage m;

		LockBuffer(metabuf, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(index);
		page = GenericXLogRegisterBuffer(state, metabuf, 0);
		m = SparsePageGetMeta(page);
		if (m->generation != meta.generation)
			elog(ERROR, "sparse_inverted index \"%s\": concurrent merge", RelationGetRelationName(index));
		m->generation = newgen;
		m->dirIndexHead = diw.head;
		m->dirHead = dw.head;
		m->postingHead = pw.head;
		m->skipHead = sw.head;
		m->docListHead = lw.head;
		m->nterms = (uint32) ndir;
		m->segDocs = segDocs;
		m->segMaxBlock = segMaxBlock;
		m->segMaxOffset = segMaxOffset;
		m->segPostings = segPostings;
		m->segRows = segRows;
		m->segLength = in->bm25 ? (uint64) tw.sumWeights : 0;
		m->flags = withLengths ? (m->flags | SPARSE_META_DOC_LENGTHS) : (m->flags & ~SPARSE_META_DOC_LENGTHS);
		if (withPending && BlockNumberIsValid(lastBlk))
		{
			m->pendingHead = lastBlk;
			m->pendingHeadOff = OffsetNumberNext(lastOff);
			m->pendingDocs = (m->pendingDocs >= (uint64) pendDocs) ? m->pendingDocs - pendDocs : 0;
			m->pendingEntries = (m->pendingEntries >= (uint64) pendEntries) ? m->pendingEntries - pendEntries : 0;
			m->pendingRows = (m->pendingRows >= (uint64) pendRows) ? m->pendingRows - pendRows : 0;
			m->pendingLength = (m->pendingLength >= (uint64) pendLength) ? m->pendingLength - (uint64) pendLength : 0;
		}
		GenericXLogFinish(state);
		UnlockReleaseBuffer(metabuf);
	}

	SparseFreePages(index, freePages, nfree, newgen);

	MemoryContextSwitchTo(oldcxt);
	if (!extra)
		SparseMergeInputFree(&local);
	MemoryContextDelete(mcxt);
	return segDocs;
}

/*
 * The metapage of an empty index, in page (of buf).
 */
static void
init_empty_metapage(Relation index, Buffer buf, Page page)
{
	SparseMetaPage m;

	SparseInitPage(buf, page, SPARSE_PAGE_META, 1);
	m = SparsePageGetMeta(page);
	memset(m, 0, sizeof(SparseMetaPageData));
	m->magic = SPARSE_MAGIC;
	m->version = SPARSE_VERSION;
	m->generation = 1;
	m->flags = SparseIsBM25(index) ? SPARSE_META_BM25 | SPARSE_META_DOC_LENGTHS : 0;
	m->dirIndexHead = InvalidBlockNumber;
	m->dirHead = InvalidBlockNumber;
	m->postingHead = InvalidBlockNumber;
	m->skipHead = InvalidBlockNumber;
	m->docListHead = InvalidBlockNumber;
	m->pendingHead = InvalidBlockNumber;
	m->pendingTail = InvalidBlockNumber;
	m->pendingHeadOff = FirstOffsetNumber;
	((PageHeader) page)->pd_lower = ((char *) m + sizeof(SparseMetaPageData)) - (char *) page;
}

/* write an empty index's metapage */
static void
write_metapage(Relation index, ForkNumber fork)
{
	Buffer		buf;
	Page		page;
	GenericXLogState *state;

	buf = ReadBufferExtended(index, fork, P_NEW, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	if (BufferGetBlockNumber(buf) != SPARSE_METAPAGE_BLKNO)
		elog(ERROR, "sparse_inverted index \"%s\" is not empty", RelationGetRelationName(index));
	state = GenericXLogStart(index);
	page = GenericXLogRegisterBuffer(state, buf, GENERIC_XLOG_FULL_IMAGE);
	init_empty_metapage(index, buf, page);
	GenericXLogFinish(state);
	UnlockReleaseBuffer(buf);
}

typedef struct BuildState
{
	Relation	index;
	SparseMergeInput in;
	double		indtuples;
	Size		limit;
	MemoryContext tmpCtx;
} BuildState;

static void
build_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
			   bool tupleIsAlive, void *state)
{
	BuildState *bs = (BuildState *) state;
	MemoryContext oldcxt = MemoryContextSwitchTo(bs->tmpCtx);

	if (isnull[0])
		SparseMergeInputAdd(&bs->in, tid, true, true, 0, NULL, NULL);
	else
	{
		int32		nnz;
		int32	   *indices;
		float4	   *vals;

		SparseRowEntries(index, values[0], &nnz, &indices, &vals);
		SparseMergeInputAdd(&bs->in, tid, true, false, nnz, indices, vals);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(bs->tmpCtx);
	bs->indtuples += 1;
	if (bs->in.memUsed > bs->limit)
	{
		int64		removed;

		SparseMerge(index, false, NULL, NULL, &bs->in, &removed);
		bs->in.npostings = 0;
		bs->in.ndocs = 0;
		bs->in.memUsed = 0;
	}
}

IndexBuildResult *
sparse_build(Relation heap, Relation index, IndexInfo *indexInfo)
{
	IndexBuildResult *result;
	BuildState	bs;
	double		reltuples;
	int64		removed;

	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));
	SparseCheckColumns(index);
	write_metapage(index, MAIN_FORKNUM);

	memset(&bs, 0, sizeof(bs));
	bs.index = index;
	SparseMergeInputInit(&bs.in, SparseIsBM25(index));
	bs.limit = Max((Size) maintenance_work_mem * 1024L / 2, 1024 * 1024);
	bs.tmpCtx = AllocSetContextCreate(CurrentMemoryContext, "sparse_inverted build", ALLOCSET_DEFAULT_SIZES);

	reltuples = table_index_build_scan(heap, index, indexInfo, true, true,
									   build_callback, (void *) &bs, NULL);
	if (bs.in.ndocs > 0)
		SparseMerge(index, false, NULL, NULL, &bs.in, &removed);
	SparseMergeInputFree(&bs.in);
	MemoryContextDelete(bs.tmpCtx);

	result = (IndexBuildResult *) palloc(sizeof(IndexBuildResult));
	result->heap_tuples = reltuples;
	result->index_tuples = bs.indtuples;
	return result;
}

void
sparse_buildempty(Relation index)
{
	Buffer		buf;
	Page		page;

	/* the init fork of an unlogged index: its metapage, logged as a full page */
	buf = ReadBufferExtended(index, INIT_FORKNUM, P_NEW, RBM_NORMAL, NULL);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	START_CRIT_SECTION();
	page = BufferGetPage(buf);
	init_empty_metapage(index, buf, page);
	MarkBufferDirty(buf);
	log_newpage_buffer(buf, true);
	END_CRIT_SECTION();
	UnlockReleaseBuffer(buf);
}
