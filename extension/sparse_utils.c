/*
 * sparse_utils.c: the sparse_inverted access method's handler, settings,
 * page helpers and the readers of the segment.
 */
#include "postgres.h"

#include <math.h>

#include "access/amapi.h"
#include "access/generic_xlog.h"
#include "access/reloptions.h"
#include "utils/lsyscache.h"
#include "catalog/index.h"
#include "access/xlog.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "utils/rel.h"
#include "commands/vacuum.h"
#include "extension/vector/sparsevec.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "optimizer/optimizer.h"
#include "storage/bufmgr.h"
#include "storage/indexfsm.h"
#include "storage/lmgr.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/selfuncs.h"

#include "sparse_index.h"

int			sparse_batch_size = 100;
int			sparse_pending_limit = 4096;
bool		sparse_positive_only = false;
bool		sparse_simd = true;
int			sparse_skip_lists = SPARSE_SKIP_AUTO;

/* as a boolean setting's spellings are taken, the others hidden */
static const struct config_enum_entry skip_lists_options[] = {
	{"auto", SPARSE_SKIP_AUTO, false},
	{"on", SPARSE_SKIP_ON, false},
	{"off", SPARSE_SKIP_OFF, false},
	{"true", SPARSE_SKIP_ON, true},
	{"false", SPARSE_SKIP_OFF, true},
	{"yes", SPARSE_SKIP_ON, true},
	{"no", SPARSE_SKIP_OFF, true},
	{"1", SPARSE_SKIP_ON, true},
	{"0", SPARSE_SKIP_OFF, true},
	{NULL, 0, false}
};
int			sparse_window_slots = 65536;
int			sparse_kept_memory = 32768;
int			sparse_filter_after = 3;

void
sparse_init(void)
{
	DefineCustomIntVariable("hybrid_search.sparse_batch_size",
							"Rows a sparse_inverted scan ranks exactly in its first batch.",
							"A scan that is asked for more rows ranks four times as many after the last one it returned, "
							"until a batch would cover the whole index: then it ranks every row once.",
							&sparse_batch_size,
							100, 1, 1000000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hybrid_search.sparse_pending_limit",
							"Rows in a sparse_inverted index's pending list that make an insert merge it.",
							"Every scan scores the pending rows one by one; VACUUM merges them too. "
							"The limit is raised to 1/16 of the merged rows for large indexes.",
							&sparse_pending_limit,
							4096, 16, INT_MAX,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("hybrid_search.sparse_positive_only",
							 "Whether a sparse_inverted scan stops after the rows with a positive inner product.",
							 "On, ORDER BY col <#> q sees only rows sharing a term with q (scoring above 0): "
							 "what sparse_search wants, without a pass over every other row when fewer match.",
							 &sparse_positive_only,
							 false,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("hybrid_search.sparse_simd",
							 "Whether a sparse_inverted scan adds postings and picks rows with AVX-512 where the CPU has it.",
							 "Off, the scalar loops do the same work: the same keys, bit for bit, and the same rows.",
							 &sparse_simd,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomEnumVariable("hybrid_search.sparse_skip_lists",
							 "Whether a sparse_inverted scan's first batch may skip the postings of query terms that cannot bring a row in on their own.",
							 "It then looks those terms up only at the rows that may enter the batch; a later batch adds them. "
							 "auto: in sparsevec indexes of 524,288 row positions and more. The same keys, bit for bit, and the same rows either way.",
							 &sparse_skip_lists,
							 SPARSE_SKIP_AUTO, skip_lists_options,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("hybrid_search.sparse_window_slots",
							"Rows a sparse_inverted scan ranking every row adds every query term's postings to at a time.",
							"The scan's array of sums is filled a window of this many heap tuple positions (8 bytes each) "
							"at a time, so that the window stays in the CPU's cache; the keys are the same at any size.",
							&sparse_window_slots,
							65536, 1, 1 << 26,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hybrid_search.sparse_kept_memory",
							"Memory a backend keeps between sparse_inverted scans for their arrays of sums.",
							"A scan ranking every row needs 8 bytes per heap tuple position of the table (8.8 MB at a "
							"million rows); up to this much stays allocated for the backend's next scans instead of "
							"being allocated, faulted in and freed by every scan. 0 keeps none.",
							&sparse_kept_memory,
							32768, 0, 1024 * 1024,
							PGC_USERSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("hybrid_search.sparse_filter_after",
							"Batches a sparse_inverted scan ranks before it ranks only the rows its filter columns' "
							"conditions may match.",
							"Those rows come from a bitmap scan of another index of the table, at a cost per row it "
							"holds: it pays for a condition that has rejected nearly every row the first batches "
							"returned. A few rows read in TID order (a btree's entries, a GIN index's posting lists) "
							"narrow from the first batch whatever this is. 0 narrows from the first batch; a large "
							"value never by a bitmap.",
							&sparse_filter_after,
							3, 0, 1000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
	SparseSlotArraysInit();
}

/*
 * Initialise a page (already registered with a generic WAL record, or a
 * local copy).
 */
Page
SparseInitPage(Buffer buf, Page page, uint16 type, uint32 generation)
{
	SparsePageOpaque opaque;

	PageInit(page, BufferGetPageSize(buf), sizeof(SparsePageOpaqueData));
	opaque = SparsePageGetOpaque(page);
	opaque->generation = generation;
	opaque->next = InvalidBlockNumber;
	opaque->type = type;
	opaque->page_id = SPARSE_PAGE_ID;
	return page;
}

/*
 * Whether page is one of ours, of this type, and not newer than the
 * generation the reader started from.
 */
bool
SparsePageOk(Page page, uint16 type, uint32 generation)
{
	SparsePageOpaque opaque;

	if (PageIsNew(page) ||
		PageGetSpecialSize(page) != MAXALIGN(sizeof(SparsePageOpaqueData)))
		return false;
	opaque = SparsePageGetOpaque(page);
	return opaque->page_id == SPARSE_PAGE_ID && opaque->type == type &&
		opaque->generation <= generation;
}

/*
 * Whether b, an item of len bytes, is a well-formed posting block of an
 * index whose blocks carry flags (SPARSE_BLOCK_LENGTHS or none), in a
 * segment with offsets slots per heap block.
 */
bool
SparseBlockOk(const SparsePostingBlock *b, Size len, uint16 flags, uint32 offsets)
{
	return len >= offsetof(SparsePostingBlock, data) && offsets > 0 &&
		b->n > 0 && b->n <= SPARSE_BLOCK_POSTINGS && (b->flags & ~SPARSE_BLOCK_WIDE) == flags &&
		len == SPARSE_BLOCK_SIZE_FLAGS(b->n, b->flags);
}

/* that page is a sparse_inverted metapage of the version this library reads */
static void
check_metapage(Relation index, Page page)
{
	if (!SparsePageOk(page, SPARSE_PAGE_META, PG_UINT32_MAX) ||
		SparsePageGetMeta(page)->magic != SPARSE_MAGIC)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" is not a sparse_inverted index", RelationGetRelationName(index))));
	if (SparsePageGetMeta(page)->version != SPARSE_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("sparse_inverted index \"%s\" has version %u, this library reads %u",
						RelationGetRelationName(index), SparsePageGetMeta(page)->version, SPARSE_VERSION),
				 errhint("REINDEX it.")));
}

/*
 * A new page, exclusively locked: a free one from the free space map, or a
 * new block. The caller initialises it.
 */
Buffer
SparseNewBuffer(Relation index)
{
	Buffer		buf;

	for (;;)
	{
		BlockNumber blkno = GetFreeIndexPage(index);
		Page		page;

		if (blkno == InvalidBlockNumber)
			break;
		buf = ReadBuffer(index, blkno);
		if (ConditionalLockBuffer(buf))
		{
			page = BufferGetPage(buf);
			if (PageIsNew(page))
				return buf;
			if (PageGetSpecialSize(page) == MAXALIGN(sizeof(SparsePageOpaqueData)) &&
				SparsePageGetOpaque(page)->page_id == SPARSE_PAGE_ID &&
				SparsePageGetOpaque(page)->type == SPARSE_PAGE_FREE)
				return buf;
			LockBuffer(buf, BUFFER_LOCK_UNLOCK);
		}
		ReleaseBuffer(buf);
	}

	LockRelationForExtension(index, ExclusiveLock);
	buf = ReadBuffer(index, P_NEW);
	LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
	UnlockRelationForExtension(index, ExclusiveLock);
	return buf;
}

/*
 * Mark pages free (WAL-logged, stamped with the new generation so that a
 * scan still reading the old segment notices) and give them to the free
 * space map.
 */
void
SparseFreePages(Relation index, BlockNumber *blocks, int nblocks, uint32 generation)
{
	for (int i = 0; i < nblocks; i++)
	{
		Buffer		buf = ReadBuffer(index, blocks[i]);
		GenericXLogState *state;
		Page		page;

		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(index);
		page = GenericXLogRegisterBuffer(state, buf, GENERIC_XLOG_FULL_IMAGE);
		SparseInitPage(buf, page, SPARSE_PAGE_FREE, generation);
		GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
		RecordFreeIndexPage(index, blocks[i]);
	}
	if (nblocks > 0)
		IndexFreeSpaceMapVacuum(index);
}

/*
 * The metapage, locked in mode and checked; meta (if not NULL) gets a copy of
 * it. The caller releases the buffer.
 */
Buffer
SparseLockMeta(Relation index, int mode, SparseMetaPageData *meta)
{
	Buffer		metabuf = ReadBuffer(index, SPARSE_METAPAGE_BLKNO);

	LockBuffer(metabuf, mode);
	check_metapage(index, BufferGetPage(metabuf));
	if (meta)
		memcpy(meta, SparsePageGetMeta(BufferGetPage(metabuf)), sizeof(SparseMetaPageData));
	return metabuf;
}

/*
 * Calls item() for each item of the pending list, in order, from meta's head
 * through (lastBlk, lastOff), or to its end if lastBlk is invalid, each page
 * and item checked first; page(), if not NULL, for each page read wholly
 * before lastBlk. The caller holds what keeps the list still: the metapage's
 * lock, or the merge lock.
 */
void
SparseWalkPending(Relation index, const SparseMetaPageData *meta,
				  BlockNumber lastBlk, OffsetNumber lastOff,
				  SparsePendingItemFn item, SparsePendingPageFn page, void *arg)
{
	BlockNumber blk = meta->pendingHead;
	OffsetNumber first = meta->pendingHeadOff;

	while (BlockNumberIsValid(blk))
	{
		Buffer		buf = ReadBuffer(index, blk);
		Page		p;
		OffsetNumber maxoff;
		BlockNumber next;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		p = BufferGetPage(buf);
		if (!SparsePageOk(p, SPARSE_PAGE_PENDING, meta->generation))
			elog(ERROR, "sparse_inverted index \"%s\": unexpected page %u in the pending list",
				 RelationGetRelationName(index), blk);
		maxoff = (blk == lastBlk) ? lastOff : PageGetMaxOffsetNumber(p);
		for (OffsetNumber off = first; off <= maxoff; off++)
		{
			ItemId		iid = PageGetItemId(p, off);
			SparsePendingItem *it = (SparsePendingItem *) PageGetItem(p, iid);

			if (ItemIdGetLength(iid) < offsetof(SparsePendingItem, data) ||
				it->nnz < 0 || ItemIdGetLength(iid) != SPARSE_PENDING_SIZE(it->nnz))
				elog(ERROR, "sparse_inverted index \"%s\": malformed pending item (%u,%u)",
					 RelationGetRelationName(index), blk, off);
			item(it, blk, off, arg);
		}
		next = SparsePageGetOpaque(p)->next;
		UnlockReleaseBuffer(buf);
		if (blk == lastBlk)
			break;
		if (page)
			page(blk, arg);
		blk = next;
		first = FirstOffsetNumber;
	}
}

/* a copy of the metapage's contents */
void
SparseReadMeta(Relation index, SparseMetaPageData *meta)
{
	Buffer		buf = ReadBuffer(index, SPARSE_METAPAGE_BLKNO);
	Page		page;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	check_metapage(index, page);
	memcpy(meta, SparsePageGetMeta(page), sizeof(SparseMetaPageData));
	UnlockReleaseBuffer(buf);
	if (((meta->flags & SPARSE_META_BM25) != 0) != SparseIsBM25(index))
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("sparse_inverted index \"%s\" was built for another column type",
						RelationGetRelationName(index)),
				 errhint("REINDEX it.")));
}

/*
 * The metapage's generation after a reader's conflict. Every merge stamps a
 * new generation there before it frees a page, so if it is still *began (the
 * generation the failed attempt read the index under, when known), the
 * conflict was a damaged link, which a retry would meet again: an error.
 */
uint32
SparseGenerationAfterConflict(Relation index, const uint32 *began)
{
	SparseMetaPageData meta;

	SparseReadMeta(index, &meta);
	if (began != NULL && meta.generation == *began)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("sparse_inverted index \"%s\" links to a page outside its segment",
						RelationGetRelationName(index)),
				 errhint("sparse_inverted_check() shows where. REINDEX it.")));
	return meta.generation;
}

/*
 * The entries of a sparsevec datum (detoasted in the current context). The
 * type guarantees sorted, distinct indices and finite non-zero values; the
 * checks here keep a damaged value from reaching the index.
 */
void
SparseCheckSparsevec(Relation index, Datum value, int32 *nnz, int32 **indices, float4 **values)
{
	SparseVector *v = DatumGetSparseVector(value);

	if (VARSIZE_ANY(v) < offsetof(SparseVector, indices) ||
		v->nnz < 0 || v->nnz > SPARSEVEC_MAX_NNZ ||
		VARSIZE_ANY(v) != SPARSEVEC_SIZE(v->nnz))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("malformed sparsevec value for index \"%s\"",
						index ? RelationGetRelationName(index) : "?")));
	*nnz = v->nnz;
	*indices = v->indices;
	*values = SPARSEVEC_VALUES(v);
	for (int i = 0; i < v->nnz; i++)
	{
		if (v->indices[i] < 0 || v->indices[i] >= v->dim ||
			(i > 0 && v->indices[i] <= v->indices[i - 1]) ||
			isnan((*values)[i]) || isinf((*values)[i]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("malformed sparsevec value for index \"%s\"",
							index ? RelationGetRelationName(index) : "?"),
					 errdetail("Indices must be increasing and in range, values finite.")));
	}
}

/* whether the index is over tsvector (BM25) rather than sparsevec */
bool
SparseIsBM25(Relation index)
{
	return TupleDescAttr(RelationGetDescr(index), 0)->atttypid == TSVECTOROID;
}

/*
 * A row's entries as the index stores them: (term, weight) sorted by term,
 * from a sparsevec or, for a BM25 index, from a tsvector.
 */
void
SparseRowEntries(Relation index, Datum value, int32 *nnz, int32 **indices, float4 **values)
{
	if (SparseIsBM25(index))
		SparseTsvectorEntries(index, value, nnz, indices, values);
	else
		SparseCheckSparsevec(index, value, nnz, indices, values);
}

/*
 * Look up sorted terms in the segment's directory. found[i] tells whether
 * terms[i] has postings; entries[i] is then its directory entry. Returns
 * false on a concurrent-merge conflict (r->conflict set).
 */
bool
SparseLookupTerms(SparseReader *r, const SparseMetaPageData *meta, int nterms,
				  const int32 *terms, SparseDirEntry *entries, bool *found)
{
	SparseDirIndexEntry *dirIndex = NULL;
	int			ndir = 0;
	int			maxdir = 0;
	BlockNumber blkno = meta->dirIndexHead;
	BlockNumber cachedBlk = InvalidBlockNumber;
	SparseDirEntry *cached = NULL;
	int			ncached = 0;

	for (int i = 0; i < nterms; i++)
		found[i] = false;
	if (nterms == 0)
		return true;

	while (BlockNumberIsValid(blkno))
	{
		Buffer		buf;
		Page		page = SparseReaderPage(r, blkno, SPARSE_PAGE_DIRINDEX, &buf);
		OffsetNumber maxoff;

		if (page == NULL)
			return false;
		maxoff = PageGetMaxOffsetNumber(page);
		for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
		{
			if (ndir == maxdir)
			{
				maxdir = maxdir ? maxdir * 2 : 1024;
				dirIndex = dirIndex ? repalloc(dirIndex, maxdir * sizeof(SparseDirIndexEntry))
					: palloc(maxdir * sizeof(SparseDirIndexEntry));
			}
			memcpy(&dirIndex[ndir++], PageGetItem(page, PageGetItemId(page, off)),
				   sizeof(SparseDirIndexEntry));
		}
		blkno = SparsePageGetOpaque(page)->next;
		UnlockReleaseBuffer(buf);
	}

	for (int i = 0; i < nterms; i++)
	{
		int			lo = 0,
					hi = ndir - 1,
					page_i = -1;

		/* the last directory page whose first term <= terms[i] */
		while (lo <= hi)
		{
			int			mid = (lo + hi) / 2;

			if (dirIndex[mid].firstTerm <= terms[i])
			{
				page_i = mid;
				lo = mid + 1;
			}
			else
				hi = mid - 1;
		}
		if (page_i < 0)
			continue;
		if (dirIndex[page_i].blkno != cachedBlk)
		{
			Buffer		buf;
			Page		page = SparseReaderPage(r, dirIndex[page_i].blkno, SPARSE_PAGE_DIR, &buf);
			OffsetNumber maxoff;

			if (page == NULL)
				return false;
			maxoff = PageGetMaxOffsetNumber(page);
			if (cached == NULL)
				cached = palloc(sizeof(SparseDirEntry) * (BLCKSZ / sizeof(SparseDirEntry) + 1));
			ncached = 0;
			for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
				memcpy(&cached[ncached++], PageGetItem(page, PageGetItemId(page, off)),
					   sizeof(SparseDirEntry));
			cachedBlk = dirIndex[page_i].blkno;
			UnlockReleaseBuffer(buf);
		}
		lo = 0;
		hi = ncached - 1;
		while (lo <= hi)
		{
			int			mid = (lo + hi) / 2;

			if (cached[mid].term == terms[i])
			{
				entries[i] = cached[mid];
				found[i] = true;
				break;
			}
			else if (cached[mid].term < terms[i])
				lo = mid + 1;
			else
				hi = mid - 1;
		}
	}
	if (dirIndex)
		pfree(dirIndex);
	if (cached)
		pfree(cached);
	return true;
}

/*
 * Page blk of the reader's segment, share-locked in *buf, if it is a page of
 * that type and generation; else NULL, with r->conflict set and nothing held.
 */
Page
SparseReaderPage(SparseReader *r, BlockNumber blk, uint16 type, Buffer *buf)
{
	if (blk >= r->blockLimit)
	{
		r->conflict = true;
		return NULL;
	}
	*buf = ReadBuffer(r->index, blk);
	return SparseReaderLockPage(r, *buf, type);
}

/*
 * The page of buf, a buffer of the reader's segment the caller pinned,
 * share-locked, if it is a page of that type and generation; else NULL, with
 * r->conflict set and the pin released.
 */
Page
SparseReaderLockPage(SparseReader *r, Buffer buf, uint16 type)
{
	Page		page;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	if (!SparsePageOk(page, type, r->generation))
	{
		UnlockReleaseBuffer(buf);
		r->conflict = true;
		return NULL;
	}
	return page;
}

/*
 * The posting block at item off of page blk, which the caller holds pinned
 * and locked in buf: a well-formed block of r's segment (flags: its
 * SPARSE_BLOCK_LENGTHS), or an index-corruption error, buf released first.
 */
SparsePostingBlock *
SparseReaderBlock(SparseReader *r, Buffer buf, BlockNumber blk, OffsetNumber off, uint16 flags)
{
	ItemId		iid = PageGetItemId(BufferGetPage(buf), off);
	SparsePostingBlock *b = (SparsePostingBlock *) PageGetItem(BufferGetPage(buf), iid);

	if (!SparseBlockOk(b, ItemIdGetLength(iid), flags, r->slotOffsets))
	{
		UnlockReleaseBuffer(buf);
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("malformed posting block in sparse_inverted index \"%s\" (block %u, item %u)",
						RelationGetRelationName(r->index), blk, off)));
	}
	return b;
}

void
SparseReaderInit(SparseReader *r, Relation index, const SparseMetaPageData *meta)
{
	r->index = index;
	r->generation = meta->generation;
	r->slotOffsets = meta->segMaxOffset;
	r->conflict = false;
	r->blockLimit = InvalidBlockNumber;
}

void
SparseListBegin(SparseListIter *it, SparseReader *r, const SparseDirEntry *entry)
{
	it->reader = r;
	it->entry = *entry;
	it->blk = entry->firstBlk;
	it->off = entry->firstOff;
	it->blocksLeft = entry->nblocks;
	if (it->block == NULL)
		it->block = palloc(SPARSE_BLOCK_MAX_SIZE);
	it->weights = NULL;
	it->lengths = NULL;
	it->pos = 0;
	it->done = false;
}

/*
 * Copy the next block of the list into it->block. Returns false at the end
 * of the list or on a conflict (reader->conflict set).
 */
bool
SparseListNextBlock(SparseListIter *it)
{
	return SparseListSeekBlock(it, 0);
}

/*
 * Copy the next block of the list whose last row's key is >= target into
 * it->block: the blocks before it are passed over where they lie, their
 * headers read under the page's lock, not copied (MaxScore's probes skip
 * most blocks of a long list). Returns false at the end of the list or on a
 * conflict (reader->conflict set).
 */
bool
SparseListSeekBlock(SparseListIter *it, uint64 target)
{
	Buffer		buf;
	Page		page;
	ItemId		iid;
	SparsePostingBlock *b;
	uint16		flags = SparseIsBM25(it->reader->index) ? SPARSE_BLOCK_LENGTHS : 0;

	for (;;)
	{
		if (it->done || it->blocksLeft == 0)
		{
			it->done = true;
			return false;
		}
		page = SparseReaderPage(it->reader, it->blk, SPARSE_PAGE_POSTING, &buf);
		if (page == NULL)
		{
			it->done = true;
			return false;
		}
		for (; it->off <= PageGetMaxOffsetNumber(page) && it->blocksLeft > 0; it->off++, it->blocksLeft--)
		{
			b = SparseReaderBlock(it->reader, buf, it->blk, it->off, flags);
			iid = PageGetItemId(page, it->off);
			if (b->lastKey < target)
				continue;
			memcpy(it->block, b, ItemIdGetLength(iid));
			UnlockReleaseBuffer(buf);
			it->off++;
			it->blocksLeft--;
			for (int i = 0; i < it->block->n; i++)
				SparseKeyTid(SparseSlotKey(SparseBlockSlot(it->block, i), it->reader->slotOffsets), &it->tids[i]);
			it->weights = SPARSE_BLOCK_WEIGHTS(it->block);
			it->lengths = (it->block->flags & SPARSE_BLOCK_LENGTHS) ? SPARSE_BLOCK_LENGTHS_OF(it->block) : NULL;
			it->pos = 0;
			return true;
		}
		if (it->blocksLeft > 0)
		{
			it->blk = SparsePageGetOpaque(page)->next;
			it->off = FirstOffsetNumber;
		}
		UnlockReleaseBuffer(buf);
	}
}

/*
 * Copy the skip array of entry's list (entry->nblocks entries) into out.
 * Returns NULL, or why it could not: the skip pages were changed by a merge
 * meanwhile (a conflict, r->conflict set), or a chunk is malformed (*blk and
 * *off then name it), which the caller reports as it reports damage.
 */
const char *
SparseReadSkip(SparseReader *r, const SparseDirEntry *entry, SparseSkipEntry *out,
			   BlockNumber *blk, OffsetNumber *off)
{
	uint32		have = 0;

	*blk = entry->skipBlk;
	*off = entry->skipOff;
	while (have < entry->nblocks)
	{
		Buffer		buf;
		Page		page;

		page = SparseReaderPage(r, *blk, SPARSE_PAGE_SKIP, &buf);
		if (page == NULL)
			return "its skip array leaves the skip pages";
		for (; *off <= PageGetMaxOffsetNumber(page) && have < entry->nblocks; (*off)++)
		{
			ItemId		iid = PageGetItemId(page, *off);
			SparseSkipChunk *c = (SparseSkipChunk *) PageGetItem(page, iid);

			if (*off < FirstOffsetNumber ||
				ItemIdGetLength(iid) < offsetof(SparseSkipChunk, entries) ||
				c->n == 0 || c->n > entry->nblocks - have ||
				ItemIdGetLength(iid) != SPARSE_SKIPCHUNK_SIZE(c->n))
			{
				UnlockReleaseBuffer(buf);
				return "malformed skip array";
			}
			memcpy(&out[have], c->entries, c->n * sizeof(SparseSkipEntry));
			have += c->n;
		}
		*blk = SparsePageGetOpaque(page)->next;
		*off = FirstOffsetNumber;
		UnlockReleaseBuffer(buf);
	}
	return NULL;
}

/*
 * Cost: an ordered scan reads the posting lists of the query's terms, a
 * small part of the index; without ORDER BY the index is useless. Conditions
 * on later columns narrow the rows returned (sparse_filter.c), not the lists
 * read: so the entries read are a share of the index's whatever the
 * selectivity, and a partial index holding only the rows a condition allows
 * costs less than a full one with that condition.
 */
static void
sparse_costestimate(PlannerInfo *root, IndexPath *path, double loop_count,
					Cost *indexStartupCost, Cost *indexTotalCost,
					Selectivity *indexSelectivity, double *indexCorrelation,
					double *indexPages)
{
	GenericCosts costs;
	double		pages;

	if (path->indexorderbys == NIL)
	{
		*indexStartupCost = get_float8_infinity();
		*indexTotalCost = get_float8_infinity();
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}
	MemSet(&costs, 0, sizeof(costs));
	/* the first batch reads a fraction of the entries and pages; assume 2% */
	costs.numIndexTuples = Max(1.0, 0.02 * path->indexinfo->tuples);
	genericcostestimate(root, path, loop_count, &costs);
	pages = Max(1.0, path->indexinfo->pages);
	*indexStartupCost = 0.02 * pages * random_page_cost +
		0.02 * path->indexinfo->tuples * cpu_operator_cost;
	*indexTotalCost = *indexStartupCost + costs.indexTotalCost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = pages;
}

static bytea *
sparse_options(Datum reloptions, bool validate)
{
	/* no options: anything given is an error */
	(void) build_reloptions(reloptions, validate, RELOPT_KIND_LOCAL, 0, NULL, 0);
	return NULL;
}

static bool
sparse_validate(Oid opclassoid)
{
	return true;
}

PG_FUNCTION_INFO_V1(sparse_inverted_handler);
Datum
sparse_inverted_handler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine = makeNode(IndexAmRoutine);

	amroutine->amstrategies = 0;
	amroutine->amsupport = 0;
	amroutine->amoptsprocnum = 0;
	amroutine->amcanorder = false;
	amroutine->amcanorderbyop = true;
	amroutine->amcanbackward = false;
	amroutine->amcanunique = false;
	amroutine->amcanmulticol = true;
	amroutine->amoptionalkey = true;
	amroutine->amsearcharray = false;
	amroutine->amsearchnulls = false;
	amroutine->amstorage = false;
	amroutine->amclusterable = false;
	amroutine->ampredlocks = false;
	amroutine->amcanparallel = false;
	amroutine->amcaninclude = false;
	amroutine->amusemaintenanceworkmem = true;
	amroutine->amparallelvacuumoptions = 0;
	amroutine->amkeytype = InvalidOid;

	amroutine->ambuild = sparse_build;
	amroutine->ambuildempty = sparse_buildempty;
	amroutine->aminsert = sparse_insert;
	amroutine->ambulkdelete = sparse_bulkdelete;
	amroutine->amvacuumcleanup = sparse_vacuumcleanup;
	amroutine->amcanreturn = NULL;
	amroutine->amcostestimate = sparse_costestimate;
	amroutine->amoptions = sparse_options;
	amroutine->amproperty = NULL;
	amroutine->ambuildphasename = NULL;
	amroutine->amvalidate = sparse_validate;
	amroutine->amadjustmembers = NULL;
	amroutine->ambeginscan = sparse_beginscan;
	amroutine->amrescan = sparse_rescan;
	amroutine->amgettuple = sparse_gettuple;
	amroutine->amgetbitmap = NULL;
	amroutine->amendscan = sparse_endscan;
	amroutine->ammarkpos = NULL;
	amroutine->amrestrpos = NULL;
	amroutine->amestimateparallelscan = NULL;
	amroutine->aminitparallelscan = NULL;
	amroutine->amparallelrescan = NULL;

	PG_RETURN_POINTER(amroutine);
}

/*
 * A check function's problems: counted, and the first CHECK_MAX_PROBLEMS
 * kept as a JSON array's elements (escaped strings, comma-separated).
 */
void
CheckProblem(CheckProblems *p, const char *fmt,...)
{
	va_list		args;
	char		buf[512];

	p->count++;
	if (p->count > CHECK_MAX_PROBLEMS)
		return;
	va_start(args, fmt);
	vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	if (p->text.len > 0)
		appendStringInfoString(&p->text, ", ");
	escape_json(&p->text, buf);
}

/*
 * A check function's index, which must be a valid index of the access method
 * whose build function is ambuild (named am), and its table: the table under
 * ShareUpdateExclusiveLock, which keeps VACUUM out while writes go on, or on
 * a hot standby, where no lock keeps replay out, AccessShareLock. Returns
 * whether this is a standby.
 */
bool
CheckOpen(Oid indexoid, ambuild_function ambuild, const char *am, Relation *heap, Relation *index,
		  LOCKMODE *lockmode)
{
	Oid			heapoid = IndexGetRelation(indexoid, true);
	bool		standby = RecoveryInProgress();

	if (!OidIsValid(heapoid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not an index", get_rel_name(indexoid))));
	*lockmode = standby ? AccessShareLock : ShareUpdateExclusiveLock;
	*heap = table_open(heapoid, *lockmode);
	*index = index_open(indexoid, AccessShareLock);
	if ((*index)->rd_indam->ambuild != ambuild)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a %s index", RelationGetRelationName(*index), am)));
	if (!(*index)->rd_index->indisvalid)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("index \"%s\" is not valid", RelationGetRelationName(*index)),
				 errhint("REINDEX it.")));
	return standby;
}
