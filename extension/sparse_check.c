/*
 * sparse_check.c: sparse_inverted_check(index), an amcheck-style comparison
 * of a sparse_inverted index with its table.
 *
 * Reads the whole index (structure: terms in order, postings in TID order,
 * block and term maxima and minima, counts, every posting's row in the row
 * list, no row twice) and folds every row's (term, weight) pairs into a
 * 64-bit fingerprint. Then it scans the table under an MVCC snapshot: every
 * visible row must be in the index with the same fingerprint and number of
 * entries (null rows flagged). An indexed row the snapshot does not see must
 * point at a used line pointer (a dead row VACUUM has not reached, or one
 * not yet committed), with its weights if the tuple is still there. VACUUM
 * is kept out (ShareUpdateExclusiveLock on the table); writes go on. On a
 * hot standby the line pointers are not tested (replay cannot be kept out).
 *
 * For a BM25 index (over tsvector) the entries are the lexemes' hashes with
 * their tf, every posting must carry its row's length (the sum of the row's
 * tf), as must the row list's length of a merged row where the row list
 * keeps lengths, and the metapage's statistics (non-null rows, their total
 * length) must be those of the rows the index holds, dead ones included.
 */
#include "postgres.h"

#include <math.h>

#include "access/heapam.h"
#include "access/xlog.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "common/hashfn.h"
#include "extension/vector/sparsevec.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "sparse_index.h"

typedef struct CheckDoc
{
	uint64		key;			/* hash key: TID */
	uint64		fp;
	uint32		n;
	double		sumw;			/* of its weights (BM25: its length) */
	float4		length;			/* the length its postings carry, or -1 */
	float4		listLength;		/* the row list's length for it, or -1 */
	uint8		flags;			/* SPARSE_DOC_NULL */
	bool		inDocList;
	bool		inPending;
	bool		hasPostings;
	bool		seen;
} CheckDoc;

typedef struct CheckState
{
	Relation	index;
	Relation	heap;
	HTAB	   *docs;
	CheckProblems problems;
	int64		visible;
	int64		postings;
	bool		bm25;
	/* the statistics of the rows the index holds */
	uint64		segRows;
	double		segLength;
	uint64		pendingRows;
	double		pendingLength;
} CheckState;

static inline uint64
entry_fp(int32 term, float4 weight)
{
	uint32		bits;

	memcpy(&bits, &weight, sizeof(bits));
	return hash_bytes_uint32_extended((uint32) term, (uint64) bits * 0x9E3779B97F4A7C15ULL + 1);
}

static CheckDoc *
get_doc(CheckState *cs, uint64 key)
{
	bool		found;
	CheckDoc   *d = hash_search(cs->docs, &key, HASH_ENTER, &found);

	if (!found)
	{
		d->fp = 0;
		d->n = 0;
		d->sumw = 0;
		d->length = -1;
		d->listLength = -1;
		d->flags = 0;
		d->inDocList = false;
		d->inPending = false;
		d->hasPostings = false;
		d->seen = false;
	}
	return d;
}


/*
 * A copy of page blk; zeroes (no page of any type, which the caller reports)
 * for a block at or past the reader's limit, where a damaged link would
 * otherwise make the read fail.
 */
static Page
read_page_copy(SparseReader *r, BlockNumber blk, Page copy)
{
	Buffer		buf;

	if (blk >= r->blockLimit)
	{
		memset(copy, 0, BLCKSZ);
		return copy;
	}
	buf = ReadBuffer(r->index, blk);

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	memcpy(copy, BufferGetPage(buf), BLCKSZ);
	UnlockReleaseBuffer(buf);
	return copy;
}

static void
check_segment(CheckState *cs, const SparseMetaPageData *meta)
{
	Page		page = palloc(BLCKSZ);
	BlockNumber blk;
	BlockNumber nblocks = RelationGetNumberOfBlocks(cs->index);
	int64		nterms = 0;
	int32		lastTerm = -1;
	bool		first = true;
	SparseReader r;
	int64		ndocs = 0;
	uint64		lastDoc = 0;
	int64		guard = 0;
	BlockNumber maxBlock = 0;
	OffsetNumber maxOffset = 0;

	SparseReaderInit(&r, cs->index, meta);
	r.blockLimit = nblocks;

	/* the directory index: one entry per directory page, first terms increasing */
	blk = meta->dirIndexHead;
	{
		BlockNumber dirblk = meta->dirHead;

		while (BlockNumberIsValid(blk) && guard++ < (int64) nblocks)
		{
			read_page_copy(&r, blk, page);
			if (!SparsePageOk(page, SPARSE_PAGE_DIRINDEX, meta->generation))
			{
				CheckProblem(&cs->problems, "page %u in the directory index chain is not a directory-index page", blk);
				break;
			}
			for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
			{
				SparseDirIndexEntry *e = (SparseDirIndexEntry *) PageGetItem(page, PageGetItemId(page, off));

				if (e->blkno != dirblk)
					CheckProblem(&cs->problems, "directory index entry (%u,%u) points at page %u, the directory chain has %u",
							blk, off, e->blkno, dirblk);
				if (BlockNumberIsValid(dirblk))
				{
					Page		dp = read_page_copy(&r, dirblk, palloc(BLCKSZ));
					bool		isDir = SparsePageOk(dp, SPARSE_PAGE_DIR, meta->generation);

					if (isDir && PageGetMaxOffsetNumber(dp) > 0)
					{
						SparseDirEntry *de = (SparseDirEntry *) PageGetItem(dp, PageGetItemId(dp, FirstOffsetNumber));

						if (de->term != e->firstTerm)
							CheckProblem(&cs->problems, "directory index entry (%u,%u) says term %d, directory page %u starts with %d",
									blk, off, e->firstTerm, dirblk, de->term);
					}
					/* not a directory page (the walk below reports it): no link to trust */
					dirblk = isDir ? SparsePageGetOpaque(dp)->next : InvalidBlockNumber;
					pfree(dp);
				}
			}
			blk = SparsePageGetOpaque(page)->next;
		}
		if (BlockNumberIsValid(dirblk))
			CheckProblem(&cs->problems, "directory page %u is not in the directory index", dirblk);
	}

	/* the directory and every posting list */
	blk = meta->dirHead;
	guard = 0;
	while (BlockNumberIsValid(blk) && guard++ < (int64) nblocks)
	{
		read_page_copy(&r, blk, page);
		if (!SparsePageOk(page, SPARSE_PAGE_DIR, meta->generation))
		{
			CheckProblem(&cs->problems, "page %u in the directory chain is not a directory page", blk);
			break;
		}
		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			SparseDirEntry *e = (SparseDirEntry *) PageGetItem(page, PageGetItemId(page, off));
			SparseListIter it;
			uint32		df = 0,
						nb = 0;
			float4		maxw = 0,
						minw = 0;
			uint64		lastKey = 0;
			bool		firstPosting = true;
			SparseSkipEntry *skip = NULL;

			CHECK_FOR_INTERRUPTS();
			nterms++;
			if (!first && e->term <= lastTerm)
				CheckProblem(&cs->problems, "term %d follows term %d in the directory", e->term, lastTerm);
			first = false;
			lastTerm = e->term;
			if (e->nblocks >= SPARSE_SKIP_MIN_BLOCKS)
			{
				BlockNumber skipBlk;
				OffsetNumber skipOff;
				const char *unread;

				skip = palloc(sizeof(SparseSkipEntry) * e->nblocks);
				unread = SparseReadSkip(&r, e, skip, &skipBlk, &skipOff);
				if (unread)
				{
					CheckProblem(&cs->problems, "term %d: %s (block %u, item %u)", e->term, unread, skipBlk, skipOff);
					r.conflict = false;
					pfree(skip);
					skip = NULL;
				}
			}
			else if (BlockNumberIsValid(e->skipBlk))
				CheckProblem(&cs->problems, "term %d: a list of %u blocks has a skip array", e->term, e->nblocks);
			memset(&it, 0, sizeof(it));
			SparseListBegin(&it, &r, e);
			while (SparseListNextBlock(&it))
			{
				SparsePostingBlock *b = it.block;
				/* BM25: minw is the smallest row length */
				const float4 *mins = it.lengths ? it.lengths : it.weights;
				float4		bmax = it.weights[0],
							bmin = mins[0];

				nb++;
				/* the block was at (it.blk, it.off - 1) */
				if (skip && nb <= e->nblocks &&
					(skip[nb - 1].firstSlot != b->firstSlot || skip[nb - 1].blk != it.blk ||
					 skip[nb - 1].off != it.off - 1))
					CheckProblem(&cs->problems, "term %d: skip entry %u does not give its block", e->term, nb - 1);
				for (int i = 0; i < b->n; i++)
				{
					uint64		k = SparseTidKey(&it.tids[i]);
					float4		w = it.weights[i];
					CheckDoc   *d;

					if (!firstPosting && k <= lastKey)
						CheckProblem(&cs->problems, "term %d: posting " TIDFMT " follows " TIDFMT, e->term, TIDARGS(k), TIDARGS(lastKey));
					if (isnan(w) || isinf(w) || w == 0 || (cs->bm25 && (w < 1 || w != floorf(w))))
						CheckProblem(&cs->problems, "term %d: posting " TIDFMT " has weight %g", e->term, TIDARGS(k), w);
					firstPosting = false;
					lastKey = k;
					bmax = Max(bmax, w);
					bmin = Min(bmin, mins[i]);
					d = get_doc(cs, k);
					d->fp += entry_fp(e->term, w);
					d->n++;
					d->sumw += w;
					if (cs->bm25)
					{
						if (d->length >= 0 && d->length != it.lengths[i])
							CheckProblem(&cs->problems, "row " TIDFMT ": its postings carry lengths %g and %g",
									TIDARGS(k), d->length, it.lengths[i]);
						d->length = it.lengths[i];
						cs->segLength += w;
					}
					d->hasPostings = true;
					df++;
					cs->postings++;
				}
				if (b->maxw != bmax || b->minw != bmin || b->lastKey != SparseTidKey(&it.tids[b->n - 1]))
					CheckProblem(&cs->problems, "term %d: a posting block's maximum, minimum or last row is wrong", e->term);
				if (nb == 1)
				{
					maxw = bmax;
					minw = bmin;
				}
				maxw = Max(maxw, bmax);
				minw = Min(minw, bmin);
			}
			if (r.conflict)
			{
				CheckProblem(&cs->problems, "term %d: its posting list leaves the posting pages", e->term);
				r.conflict = false;
			}
			if (df != e->df || nb != e->nblocks || (nb > 0 && (maxw != e->maxw || minw != e->minw)))
				CheckProblem(&cs->problems, "term %d: directory says %u postings in %u blocks, max %g; the list has %u in %u, max %g",
						e->term, e->df, e->nblocks, e->maxw, df, nb, maxw);
			if (it.block)
				pfree(it.block);
			if (skip)
				pfree(skip);
		}
		blk = SparsePageGetOpaque(page)->next;
	}
	if (nterms != meta->nterms)
		CheckProblem(&cs->problems, "the metapage counts %u terms, the directory has %lld", meta->nterms, (long long) nterms);

	/* the row list */
	blk = meta->docListHead;
	guard = 0;
	first = true;
	while (BlockNumberIsValid(blk) && guard++ < (int64) nblocks)
	{
		read_page_copy(&r, blk, page);
		if (!SparsePageOk(page, SPARSE_PAGE_DOCLIST, meta->generation))
		{
			CheckProblem(&cs->problems, "page %u in the row list is not a row-list page", blk);
			break;
		}
		for (OffsetNumber off = FirstOffsetNumber; off <= PageGetMaxOffsetNumber(page); off++)
		{
			ItemId		iid = PageGetItemId(page, off);
			SparseDocChunk *c = (SparseDocChunk *) PageGetItem(page, iid);
			bool		lengths = (meta->flags & SPARSE_META_DOC_LENGTHS) != 0;

			if (!SparseDocChunkOk(c, ItemIdGetLength(iid), lengths))
			{
				CheckProblem(&cs->problems, "row list page %u item %u: %u bytes, not a chunk of rows", blk, off,
						ItemIdGetLength(iid));
				continue;
			}
			for (int j = 0; j < c->n; j++)
			{
				uint64		k = SparseTidKey(&SPARSE_DOCCHUNK_TIDS(c)[j]);
				CheckDoc   *d = get_doc(cs, k);

				if (lengths)
					d->listLength = SPARSE_DOCCHUNK_LENGTHS(c)[j];

				if (!first && k <= lastDoc)
					CheckProblem(&cs->problems, "row list: " TIDFMT " follows " TIDFMT, TIDARGS(k), TIDARGS(lastDoc));
				first = false;
				lastDoc = k;
				d->inDocList = true;
				d->flags = SPARSE_DOCCHUNK_FLAGS(c)[j];
				ndocs++;
				maxBlock = Max(maxBlock, (BlockNumber) (k >> 16));
				maxOffset = Max(maxOffset, (OffsetNumber) (k & 0xFFFF));
				if (!(d->flags & SPARSE_DOC_NULL))
					cs->segRows++;
			}
		}
		blk = SparsePageGetOpaque(page)->next;
	}
	if (ndocs != (int64) meta->segDocs)
		CheckProblem(&cs->problems, "the metapage counts %llu merged rows, the row list has %lld",
				(unsigned long long) meta->segDocs, (long long) ndocs);
	/* 0 and 0: a segment merged before they were recorded (the scan ranks by batches) */
	if ((meta->segMaxOffset != 0 || meta->segMaxBlock != 0) &&
		(meta->segMaxOffset != maxOffset || meta->segMaxBlock != maxBlock))
		CheckProblem(&cs->problems, "the metapage gives (%u,%u) as the rows' largest block and offset, the row list (%u,%u)",
				meta->segMaxBlock, meta->segMaxOffset, maxBlock, maxOffset);
	pfree(page);
}

static void
check_pending(CheckState *cs, SparseMetaPageData *meta)
{
	Buffer		metabuf = ReadBuffer(cs->index, SPARSE_METAPAGE_BLKNO);
	BlockNumber blk;
	OffsetNumber first;
	CheckDoc   *cur = NULL;
	int64		ndocs = 0;
	int64		guard = 0;
	BlockNumber nblocks = RelationGetNumberOfBlocks(cs->index);

	LockBuffer(metabuf, BUFFER_LOCK_SHARE);
	memcpy(meta, SparsePageGetMeta(BufferGetPage(metabuf)), sizeof(SparseMetaPageData));
	blk = meta->pendingHead;
	first = meta->pendingHeadOff;
	while (BlockNumberIsValid(blk) && guard++ < (int64) nblocks)
	{
		Buffer		buf = ReadBuffer(cs->index, blk);
		Page		page;

		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (!SparsePageOk(page, SPARSE_PAGE_PENDING, meta->generation))
		{
			CheckProblem(&cs->problems, "page %u in the pending list is not a pending page", blk);
			UnlockReleaseBuffer(buf);
			break;
		}
		for (OffsetNumber off = first; off <= PageGetMaxOffsetNumber(page); off++)
		{
			ItemId		iid = PageGetItemId(page, off);
			SparsePendingItem *item = (SparsePendingItem *) PageGetItem(page, iid);

			if (ItemIdGetLength(iid) < offsetof(SparsePendingItem, data) || item->nnz < 0 ||
				ItemIdGetLength(iid) != SPARSE_PENDING_SIZE(item->nnz))
			{
				CheckProblem(&cs->problems, "pending item (%u,%u) is malformed", blk, off);
				continue;
			}
			if (item->flags & SPARSE_PENDING_FIRST)
			{
				uint64		k = SparseTidKey(&item->tid);

				cur = get_doc(cs, k);
				if (cur->inDocList || cur->inPending || cur->hasPostings)
					CheckProblem(&cs->problems, "row " TIDFMT " is in the index twice", TIDARGS(k));
				cur->inPending = true;
				cur->flags = item->flags & SPARSE_DOC_NULL;
				ndocs++;
				if (!(cur->flags & SPARSE_DOC_NULL))
					cs->pendingRows++;
			}
			else if (cur == NULL || SparseTidKey(&item->tid) != cur->key)
			{
				CheckProblem(&cs->problems, "pending item (%u,%u) continues no row", blk, off);
				continue;
			}
			for (int j = 0; j < item->nnz; j++)
			{
				cur->fp += entry_fp(SPARSE_PENDING_INDICES(item)[j], SPARSE_PENDING_VALUES(item)[j]);
				cur->n++;
				cur->sumw += SPARSE_PENDING_VALUES(item)[j];
				if (cs->bm25)
					cs->pendingLength += SPARSE_PENDING_VALUES(item)[j];
			}
		}
		blk = SparsePageGetOpaque(page)->next;
		first = FirstOffsetNumber;
		UnlockReleaseBuffer(buf);
	}
	UnlockReleaseBuffer(metabuf);
	if (ndocs != (int64) meta->pendingDocs)
		CheckProblem(&cs->problems, "the metapage counts %llu pending rows, the pending list has %lld",
				(unsigned long long) meta->pendingDocs, (long long) ndocs);
}

static void
fingerprint(Relation index, Datum value, uint64 *fp, uint32 *n)
{
	int32		nnz;
	int32	   *indices;
	float4	   *values;

	SparseRowEntries(index, value, &nnz, &indices, &values);
	*fp = 0;
	for (int i = 0; i < nnz; i++)
		*fp += entry_fp(indices[i], values[i]);
	*n = nnz;
}

static void
heap_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull,
			  bool tupleIsAlive, void *state)
{
	CheckState *cs = (CheckState *) state;
	uint64		k = SparseTidKey(tid);
	bool		found;
	CheckDoc   *d = hash_search(cs->docs, &k, HASH_FIND, &found);

	cs->visible++;
	if (d == NULL)
	{
		CheckProblem(&cs->problems, "row " TIDFMT " is not in the index", TIDARGS(k));
		return;
	}
	d->seen = true;
	if (isnull[0])
	{
		if (!(d->flags & SPARSE_DOC_NULL) || d->n != 0)
			CheckProblem(&cs->problems, "row " TIDFMT " is null but indexed with %u entries", TIDARGS(k), d->n);
		return;
	}
	if (d->flags & SPARSE_DOC_NULL)
	{
		CheckProblem(&cs->problems, "row " TIDFMT " is indexed as null", TIDARGS(k));
		return;
	}
	{
		uint64		fp;
		uint32		n;

		fingerprint(index, values[0], &fp, &n);
		if (fp != d->fp || n != d->n)
			CheckProblem(&cs->problems, "row " TIDFMT ": the index has %u entries, the row %u, or their weights differ",
					TIDARGS(k), d->n, n);
	}
}

PG_FUNCTION_INFO_V1(sparse_inverted_check);
Datum
sparse_inverted_check(PG_FUNCTION_ARGS)
{
	Oid			indexoid = PG_GETARG_OID(0);
	Relation	heap,
				index;
	CheckState	cs;
	HASHCTL		ctl;
	SparseMetaPageData meta,
				pmeta;
	IndexInfo  *indexInfo;
	Snapshot	snapshot;
	TableScanDesc scan;
	HASH_SEQ_STATUS seq;
	CheckDoc   *d;
	int64		invisible = 0;
	StringInfoData out;
	AttrNumber	attnum;
	bool		standby;
	LOCKMODE	lockmode;

	/*
	 * On a hot standby: no merge lock, and no line-pointer test (replay of a
	 * VACUUM may free one that the index listed a moment before).
	 */
	standby = CheckOpen(indexoid, sparse_build, "sparse_inverted", &heap, &index, &lockmode);

	memset(&cs, 0, sizeof(cs));
	cs.index = index;
	cs.bm25 = SparseIsBM25(index);
	cs.heap = heap;
	initStringInfo(&cs.problems.text);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(uint64);
	ctl.entrysize = sizeof(CheckDoc);
	ctl.hcxt = CurrentMemoryContext;
	cs.docs = hash_create("sparse_inverted check", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/* no merge while we read: the segment and the pending list stay one state */
	if (!standby)
		LockPage(index, SPARSE_MERGE_LOCK_BLKNO, ExclusiveLock);
	SparseReadMeta(index, &meta);
	check_segment(&cs, &meta);
	check_pending(&cs, &pmeta);
	if (pmeta.generation != meta.generation)
		CheckProblem(&cs.problems, "the index was merged during the check");
	if (!standby)
		UnlockPage(index, SPARSE_MERGE_LOCK_BLKNO, ExclusiveLock);

	hash_seq_init(&seq, cs.docs);
	while ((d = hash_seq_search(&seq)) != NULL)
	{
		if (d->hasPostings && !d->inDocList && !d->inPending)
			CheckProblem(&cs.problems, "row " TIDFMT " has postings but is not in the row list", TIDARGS(d->key));
		if (d->hasPostings && d->inPending)
			CheckProblem(&cs.problems, "row " TIDFMT " is both merged and pending", TIDARGS(d->key));
		if ((d->flags & SPARSE_DOC_NULL) && d->n > 0)
			CheckProblem(&cs.problems, "row " TIDFMT " is null but has postings", TIDARGS(d->key));
		if (cs.bm25 && d->hasPostings && d->length != (float4) d->sumw)
			CheckProblem(&cs.problems, "row " TIDFMT ": its postings carry length %g, its tf add up to %g",
					TIDARGS(d->key), d->length, d->sumw);
		if (d->listLength >= 0 && d->listLength != (float4) d->sumw)
			CheckProblem(&cs.problems, "row " TIDFMT ": the row list gives length %g, its tf add up to %g",
					TIDARGS(d->key), d->listLength, d->sumw);
	}
	if (cs.bm25 &&
		(meta.segRows != cs.segRows || (double) meta.segLength != cs.segLength ||
		 pmeta.pendingRows != cs.pendingRows || (double) pmeta.pendingLength != cs.pendingLength))
		CheckProblem(&cs.problems, "the metapage counts %llu + %llu rows of length %llu + %llu; the index holds %llu + %llu of length %.0f + %.0f",
				(unsigned long long) meta.segRows, (unsigned long long) pmeta.pendingRows,
				(unsigned long long) meta.segLength, (unsigned long long) pmeta.pendingLength,
				(unsigned long long) cs.segRows, (unsigned long long) cs.pendingRows,
				cs.segLength, cs.pendingLength);

	/* every row the snapshot sees */
	indexInfo = BuildIndexInfo(index);
	indexInfo->ii_Concurrent = true;
	/* the calling statement's snapshot, as the rest of hybrid_search_check() */
	snapshot = RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
	scan = table_beginscan_strat(heap, snapshot, 0, NULL, true, false);
	table_index_build_scan(heap, index, indexInfo, true, false, heap_callback, (void *) &cs, scan);
	UnregisterSnapshot(snapshot);

	/* indexed rows the snapshot does not see: dead or not committed */
	attnum = indexInfo->ii_IndexAttrNumbers[0];
	hash_seq_init(&seq, cs.docs);
	while ((d = hash_seq_search(&seq)) != NULL)
	{
		ItemPointerData tid;
		BlockNumber hblk;
		OffsetNumber hoff;
		Buffer		buf;
		Page		page;
		ItemId		lp;

		if (d->seen || (!d->inDocList && !d->inPending))
			continue;
		invisible++;
		SparseKeyTid(d->key, &tid);
		hblk = ItemPointerGetBlockNumber(&tid);
		hoff = ItemPointerGetOffsetNumber(&tid);
		if (standby)
			continue;
		if (hblk >= RelationGetNumberOfBlocks(heap))
		{
			CheckProblem(&cs.problems, "indexed row " TIDFMT " is beyond the table's end", TIDARGS(d->key));
			continue;
		}
		buf = ReadBuffer(heap, hblk);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (hoff < FirstOffsetNumber || hoff > PageGetMaxOffsetNumber(page) ||
			!ItemIdIsUsed(lp = PageGetItemId(page, hoff)))
			CheckProblem(&cs.problems, "indexed row " TIDFMT " points at an unused line pointer", TIDARGS(d->key));
		else if (ItemIdIsNormal(lp) && attnum > 0)
		{
			HeapTupleData tuple;
			bool		isnull;
			Datum		value;

			tuple.t_data = (HeapTupleHeader) PageGetItem(page, lp);
			tuple.t_len = ItemIdGetLength(lp);
			tuple.t_tableOid = RelationGetRelid(heap);
			tuple.t_self = tid;
			value = heap_getattr(&tuple, attnum, RelationGetDescr(heap), &isnull);
			if (isnull != ((d->flags & SPARSE_DOC_NULL) != 0))
				CheckProblem(&cs.problems, "indexed row " TIDFMT " (not visible): null differs", TIDARGS(d->key));
			else if (!isnull && !VARATT_IS_EXTERNAL_ONDISK(DatumGetPointer(value)))
			{
				/* (a value in TOAST is not compared: a dead row's may be gone already) */
				uint64		fp;
				uint32		n;

				/* copy out before the buffer lock goes: it may be compressed */
				value = PointerGetDatum(PG_DETOAST_DATUM_COPY(value));
				fingerprint(index, value, &fp, &n);
				if (fp != d->fp || n != d->n)
					CheckProblem(&cs.problems, "indexed row " TIDFMT " (not visible): weights differ", TIDARGS(d->key));
			}
		}
		UnlockReleaseBuffer(buf);
	}

	initStringInfo(&out);
	appendStringInfo(&out,
					 "{\"consistent\": %s, \"visible_rows\": %lld, \"merged_rows\": %llu, "
					 "\"pending_rows\": %llu, \"rows_not_visible\": %lld, \"postings\": %lld, "
					 "\"terms\": %u, \"generation\": %u, \"documents\": %llu, \"total_length\": %llu, "
					 "\"problem_count\": %lld, \"problems\": [%s]}",
					 cs.problems.count == 0 ? "true" : "false",
					 (long long) cs.visible,
					 (unsigned long long) meta.segDocs,
					 (unsigned long long) pmeta.pendingDocs,
					 (long long) invisible,
					 (long long) cs.postings,
					 meta.nterms, meta.generation,
					 (unsigned long long) (meta.segRows + pmeta.pendingRows),
					 (unsigned long long) (meta.segLength + pmeta.pendingLength),
					 (long long) cs.problems.count, cs.problems.text.data);
	index_close(index, AccessShareLock);
	table_close(heap, lockmode);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
