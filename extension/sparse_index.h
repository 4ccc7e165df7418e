/*
 * sparse_index.h: the sparse_inverted index access method.
 *
 * An exact inverted index over pgvector's sparsevec for ORDER BY col <#> q.
 *
 * On disk (every page WAL-logged through generic WAL):
 *   block 0         metapage
 *   segment         the merged part: a term directory (sorted by term id,
 *                   found through a small directory index), posting lists
 *                   cut into blocks of SPARSE_BLOCK_POSTINGS postings in heap
 *                   TID order, each block with its largest and smallest
 *                   weight and last TID, and the list of every indexed row
 *                   (null rows flagged); the metapage records the largest
 *                   heap block and offset of its rows, which number every
 *                   heap position of the segment by a slot (block *
 *                   segMaxOffset + offset - 1): a posting names its row by
 *                   the slot's distance from its block's first, in 2 bytes
 *                   (4 where the block spans more), and a scan keeps an
 *                   array of a score per slot (sparse_scan.c); and for
 *                   each long list a skip array, where each of its blocks
 *                   lies and its first slot, so a scan finds a row's block
 *                   without reading the blocks before it
 *   pending list    rows inserted since the last merge, one item (or a few
 *                   chunks) per row, appended by aminsert and scored
 *                   exhaustively by every scan
 * Only the first column is indexed; later ones are filter columns, which
 * store nothing (sparse_filter.c).
 * A merge (VACUUM, a pending list past hybrid_search.sparse_pending_limit,
 * or CREATE INDEX in batches of maintenance_work_mem) writes a new segment
 * from the old one plus the pending rows, less dead rows, switches the
 * metapage to it, and frees the old pages. Every page carries the
 * generation of the segment it was written for; a scan that meets a page
 * newer than the generation it started from (a concurrent merge recycled
 * it) starts its batch again.
 */
#ifndef SPARSE_INDEX_H
#define SPARSE_INDEX_H

#include "postgres.h"

#include <math.h>

#include "access/amapi.h"
#include "access/generic_xlog.h"
#include "access/itup.h"
#include "lib/stringinfo.h"
#include "nodes/execnodes.h"
#include "nodes/pathnodes.h"
#include "storage/bufmgr.h"
#include "storage/lockdefs.h"
#include "utils/relcache.h"

#define SPARSE_MAGIC			0x53504958	/* "SPIX" */
/* 2: postings name rows by slot (below), not by TID; 3: skip arrays */
#define SPARSE_VERSION			3
#define SPARSE_METAPAGE_BLKNO	0
/* a heavyweight page lock on this block number serialises merges */
#define SPARSE_MERGE_LOCK_BLKNO 1

#define SPARSE_BLOCK_POSTINGS	128

/* page types */
#define SPARSE_PAGE_META		1
#define SPARSE_PAGE_DIRINDEX	2
#define SPARSE_PAGE_DIR			3
#define SPARSE_PAGE_POSTING		4
#define SPARSE_PAGE_DOCLIST		5
#define SPARSE_PAGE_PENDING		6
#define SPARSE_PAGE_FREE		7
#define SPARSE_PAGE_SKIP		8

/* special space of every page */
typedef struct SparsePageOpaqueData
{
	uint32		generation;		/* generation it was written for */
	BlockNumber next;			/* next page of its chain, or InvalidBlockNumber */
	uint16		type;			/* SPARSE_PAGE_* */
	uint16		page_id;		/* SPARSE_PAGE_ID: tells our pages in a dump */
} SparsePageOpaqueData;

typedef SparsePageOpaqueData *SparsePageOpaque;

#define SPARSE_PAGE_ID			0xFF85
#define SparsePageGetOpaque(page) ((SparsePageOpaque) PageGetSpecialPointer(page))

typedef struct SparseMetaPageData
{
	uint32		magic;
	uint32		version;
	uint32		generation;
	uint32		flags;			/* SPARSE_META_BM25, SPARSE_META_DOC_LENGTHS */
	/* segment: four chains of pages */
	BlockNumber dirIndexHead;	/* directory index */
	BlockNumber dirHead;		/* directory, in term order */
	BlockNumber postingHead;	/* posting blocks */
	BlockNumber docListHead;	/* every row, in TID order */
	uint32		nterms;
	BlockNumber segMaxBlock;	/* largest heap block of a segment row */
	uint64		segDocs;		/* rows in the segment, null rows included */
	uint64		segPostings;
	/* pending list */
	BlockNumber pendingHead;
	BlockNumber pendingTail;
	OffsetNumber pendingHeadOff;	/* first item of pendingHead still pending */
	OffsetNumber segMaxOffset;	/* largest offset of a segment row (0: none):
								 * the slots per heap block */
	uint64		pendingDocs;
	uint64		pendingEntries;
	/* non-null rows and the sum of their lengths (BM25 indexes) */
	uint64		segRows;
	uint64		segLength;
	uint64		pendingRows;
	uint64		pendingLength;
	BlockNumber skipHead;		/* the segment's fifth chain: skip arrays */
} SparseMetaPageData;

#define SPARSE_META_BM25		0x0001
/* the row list's chunks carry each row's length (SparseDocChunk) */
#define SPARSE_META_DOC_LENGTHS 0x0002

typedef SparseMetaPageData *SparseMetaPage;

#define SparsePageGetMeta(page) ((SparseMetaPage) PageGetContents(page))

/* a term of the segment */
typedef struct SparseDirEntry
{
	int32		term;			/* sparsevec index, 0-based */
	uint32		df;				/* postings */
	uint32		nblocks;
	BlockNumber firstBlk;		/* page and item of the first posting block */
	OffsetNumber firstOff;
	OffsetNumber skipOff;		/* item of its skip array's first chunk */
	float4		maxw;			/* largest weight of the term */
	float4		minw;			/* smallest weight (BM25: row length) */
	BlockNumber skipBlk;		/* its page, or InvalidBlockNumber: none */
} SparseDirEntry;

/*
 * The skip array of a list of SPARSE_SKIP_MIN_BLOCKS blocks or more: an
 * entry per block, in list order, in chunks of at most SPARSE_SKIP_CHUNK
 * entries that are consecutive items of the skip chain (the next one the
 * next item of the page, or the first of the next page).
 */
#define SPARSE_SKIP_MIN_BLOCKS	8
#define SPARSE_SKIP_CHUNK		500
typedef struct SparseSkipEntry
{
	uint64		firstSlot;		/* the block's first posting's slot */
	BlockNumber blk;			/* page and item of the block */
	OffsetNumber off;
	uint16		unused;
} SparseSkipEntry;

typedef struct SparseSkipChunk
{
	uint16		n;
	uint16		unused;
	uint32		unused2;
	SparseSkipEntry entries[FLEXIBLE_ARRAY_MEMBER];
} SparseSkipChunk;

#define SPARSE_SKIPCHUNK_SIZE(n) (offsetof(SparseSkipChunk, entries) + (n) * sizeof(SparseSkipEntry))

/* a directory page: first term on it */
typedef struct SparseDirIndexEntry
{
	int32		firstTerm;
	BlockNumber blkno;
} SparseDirIndexEntry;

/*
 * A posting block: n postings of one term in TID order. Followed by n slot
 * deltas (each posting's slot less firstSlot: uint16, or uint32 with
 * SPARSE_BLOCK_WIDE), padding to MAXALIGN, n float4 weights and, with
 * SPARSE_BLOCK_LENGTHS (BM25), n float4 row lengths. A block whose slots
 * span more than a uint32 is cut short by the writer.
 */
#define SPARSE_BLOCK_LENGTHS	0x0001
#define SPARSE_BLOCK_WIDE		0x0002
typedef struct SparsePostingBlock
{
	uint16		n;
	uint16		flags;
	float4		maxw;
	float4		minw;
	uint32		unused2;
	uint64		firstSlot;		/* slot of the first posting */
	uint64		lastKey;		/* TID key of the last posting */
	char		data[FLEXIBLE_ARRAY_MEMBER];
} SparsePostingBlock;

#define SPARSE_BLOCK_DELTA_WIDTH(flags) (((flags) & SPARSE_BLOCK_WIDE) ? sizeof(uint32) : sizeof(uint16))
#define SPARSE_BLOCK_DELTAS16(b) ((const uint16 *) (b)->data)
#define SPARSE_BLOCK_DELTAS32(b) ((const uint32 *) (b)->data)
#define SPARSE_BLOCK_DELTAS_SIZE(n, flags) MAXALIGN((n) * SPARSE_BLOCK_DELTA_WIDTH(flags))
#define SPARSE_BLOCK_WEIGHTS(b) ((float4 *) ((b)->data + SPARSE_BLOCK_DELTAS_SIZE((b)->n, (b)->flags)))
#define SPARSE_BLOCK_LENGTHS_OF(b) (SPARSE_BLOCK_WEIGHTS(b) + (b)->n)
#define SPARSE_BLOCK_SIZE_FLAGS(n, flags) \
	(offsetof(SparsePostingBlock, data) + SPARSE_BLOCK_DELTAS_SIZE(n, flags) + (n) * sizeof(float4) + \
	 (((flags) & SPARSE_BLOCK_LENGTHS) ? (n) * sizeof(float4) : 0))
/* the largest block */
#define SPARSE_BLOCK_MAX_SIZE \
	SPARSE_BLOCK_SIZE_FLAGS(SPARSE_BLOCK_POSTINGS, SPARSE_BLOCK_LENGTHS | SPARSE_BLOCK_WIDE)

/* posting i's slot */
static inline uint64
SparseBlockSlot(const SparsePostingBlock *b, int i)
{
	return b->firstSlot + ((b->flags & SPARSE_BLOCK_WIDE) ? SPARSE_BLOCK_DELTAS32(b)[i] : SPARSE_BLOCK_DELTAS16(b)[i]);
}

/*
 * A doc-list item: n rows in TID order and a flag byte each, then, in a
 * BM25 index whose metapage has SPARSE_META_DOC_LENGTHS, each row's length
 * (float4, after padding to 4 bytes): what a row's postings carry, kept once
 * per row so that the statistics of a set of rows read no posting but the
 * query's (_bm25query_policy_rows, sparse_bm25.c).
 */
#define SPARSE_DOC_NULL			0x01
#define SPARSE_DOCLIST_CHUNK	512
typedef struct SparseDocChunk
{
	uint16		n;
	uint16		unused;
	char		data[FLEXIBLE_ARRAY_MEMBER];	/* n ItemPointerData, then n flag bytes */
} SparseDocChunk;

#define SPARSE_DOCCHUNK_TIDS(c) ((ItemPointerData *) (c)->data)
#define SPARSE_DOCCHUNK_FLAGS(c) ((uint8 *) ((c)->data + (c)->n * sizeof(ItemPointerData)))
#define SPARSE_DOCCHUNK_SIZE(n) (offsetof(SparseDocChunk, data) + (n) * (sizeof(ItemPointerData) + 1))
#define SPARSE_DOCCHUNK_LENGTHS(c) ((float4 *) ((char *) (c) + INTALIGN(SPARSE_DOCCHUNK_SIZE((c)->n))))
#define SPARSE_DOCCHUNK_SIZE_LENGTHS(n) (INTALIGN(SPARSE_DOCCHUNK_SIZE(n)) + (n) * sizeof(float4))

/* whether an item of len bytes is a whole chunk c, with lengths or without */
static inline bool
SparseDocChunkOk(const SparseDocChunk *c, Size len, bool lengths)
{
	return len >= offsetof(SparseDocChunk, data) &&
		len == (lengths ? SPARSE_DOCCHUNK_SIZE_LENGTHS(c->n) : SPARSE_DOCCHUNK_SIZE(c->n));
}

/*
 * A pending item: a row, or one chunk of a row too large for a page
 * (chunks of one row are consecutive). Followed by nnz int32 indices and
 * nnz float4 values.
 */
#define SPARSE_PENDING_FIRST	0x02	/* first (or only) chunk of its row */
typedef struct SparsePendingItem
{
	ItemPointerData tid;
	uint16		flags;			/* SPARSE_DOC_NULL, SPARSE_PENDING_FIRST */
	int32		nnz;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} SparsePendingItem;

#define SPARSE_PENDING_INDICES(p) ((int32 *) (p)->data)
#define SPARSE_PENDING_VALUES(p) ((float4 *) ((p)->data + (p)->nnz * sizeof(int32)))
#define SPARSE_PENDING_SIZE(nnz) (offsetof(SparsePendingItem, data) + (nnz) * (sizeof(int32) + sizeof(float4)))
/* the largest item a page takes */
#define SPARSE_MAX_ITEM_SIZE \
	MAXALIGN_DOWN(BLCKSZ - SizeOfPageHeaderData - sizeof(ItemIdData) - MAXALIGN(sizeof(SparsePageOpaqueData)))
#define SPARSE_PENDING_MAX_NNZ \
	((int) ((SPARSE_MAX_ITEM_SIZE - offsetof(SparsePendingItem, data)) / (sizeof(int32) + sizeof(float4))))

static inline uint64
SparseTidKey(ItemPointer tid)
{
	return ((uint64) ItemPointerGetBlockNumberNoCheck(tid) << 16) |
		ItemPointerGetOffsetNumberNoCheck(tid);
}

/* qsort's and bsearch's order of TID keys */
static inline int
SparseKeyCmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return x < y ? -1 : x > y;
}

static inline void
SparseKeyTid(uint64 key, ItemPointer tid)
{
	ItemPointerSet(tid, (BlockNumber) (key >> 16), (OffsetNumber) (key & 0xFFFF));
}

/* a TID key's slot with offsets slots per heap block (offset >= 1) */
static inline uint64
SparseKeySlot(uint64 key, uint32 offsets)
{
	return (key >> 16) * offsets + (key & 0xFFFF) - 1;
}

/* a slot's TID key */
static inline uint64
SparseSlotKey(uint64 slot, uint32 offsets)
{
	return ((slot / offsets) << 16) | (slot % offsets + 1);
}

/* a posting being merged: (term, row, weight) */
typedef struct SparsePosting
{
	int32		term;
	float4		weight;
	uint64		key;
	float4		length;			/* BM25: the row's length */
} SparsePosting;

/* a row being merged */
typedef struct SparseDoc
{
	uint64		key;
	uint8		flags;
	float4		length;			/* BM25: the row's length */
} SparseDoc;

/* rows (and their postings) to merge into the segment */
typedef struct SparseMergeInput
{
	SparsePosting *postings;
	int64		npostings;
	int64		maxpostings;
	SparseDoc  *docs;
	int64		ndocs;
	int64		maxdocs;
	Size		memUsed;
	bool		bm25;
	int64		docStart;		/* first posting of the row added last */
	double		docLength;		/* its length so far (BM25) */
} SparseMergeInput;

/* GUCs */
extern int	sparse_batch_size;
extern int	sparse_pending_limit;
extern bool sparse_positive_only;
extern bool sparse_simd;
/*
 * hybrid_search.sparse_skip_lists. auto leaves lists out in sparsevec
 * indexes of SPARSE_SKIP_MIN_SLOTS row positions and more: reading every
 * list was faster at 100,000 rows (sparse p95 1.86 against 2.37 ms at
 * k = 100) and for BM25 at a million (p95 3.91 against 5.44), slower for
 * sparsevec at a million (mean 6.99 against 4.64; performance.md, December 5,
 * session 22).
 */
#define SPARSE_SKIP_AUTO	0
#define SPARSE_SKIP_ON		1
#define SPARSE_SKIP_OFF		2
#define SPARSE_SKIP_MIN_SLOTS (1 << 19)
extern int	sparse_skip_lists;
extern int	sparse_window_slots;
extern int	sparse_kept_memory;
extern int	sparse_filter_after;

/* sparse_utils.c */
extern void sparse_init(void);
extern Page SparseInitPage(Buffer buf, Page page, uint16 type, uint32 generation);
extern Buffer SparseNewBuffer(Relation index);
extern void SparseReadMeta(Relation index, SparseMetaPageData *meta);
extern uint32 SparseGenerationAfterConflict(Relation index, const uint32 *began);
extern void SparseCheckSparsevec(Relation index, Datum value, int32 *nnz, int32 **indices, float4 **values);
extern bool SparseIsBM25(Relation index);
extern Relation SparseOpenBM25Index(Oid indexoid, Relation *heap);
extern void SparseRowEntries(Relation index, Datum value, int32 *nnz, int32 **indices, float4 **values);

/* sparse_bm25.c */
extern int32 SparseLexemeTerm(const char *lexeme, int len);
extern void SparseTsvectorEntries(Relation index, Datum value, int32 *nnz, int32 **indices, float4 **values);

/*
 * How a query's BM25 term parts are computed, by the scan and by
 * bm25_distance alike: BM25's part
 * weight * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl)), increasing
 * in tf and decreasing in len for k1 >= 0 and 0 <= b <= 1, is computed as
 * weight * (tf * k1p1 / (tf + norm0 + normLen * len)) with k1p1 = k1 + 1,
 * norm0 = k1 * (1 - b) and normLen = k1 * b / avgdl (k1 and 0 for an empty
 * index, avgdl 0: one division a posting instead of two). When grid > 0 each
 * part is rounded to a multiple of 1 / grid, so fine that a row's parts sum
 * to less than 2^52 / grid: every sum of them is then exact, whatever the
 * order of the adds, and the scan's key of a row is bm25_distance's value to
 * the bit (the executor's recheck finds it in place).
 */
typedef struct SparseBM25Scorer
{
	double		k1p1;
	double		norm0;
	double		normLen;
	double		grid;			/* 0: parts are not rounded */
	double		invGrid;
} SparseBM25Scorer;

extern void SparseBM25QueryTerms(Relation index, Datum query, int *nq, int32 **terms, double **weights,
								 SparseBM25Scorer *scorer);

static inline double
SparseBM25Score(const SparseBM25Scorer *s, double weight, double tf, double len)
{
	double		part = weight * (tf * s->k1p1 / (tf + s->norm0 + s->normLen * len));

	return s->grid > 0 ? rint(part * s->grid) * s->invGrid : part;
}
extern bool SparsePageOk(Page page, uint16 type, uint32 generation);
extern bool SparseBlockOk(const SparsePostingBlock *b, Size len, uint16 flags, uint32 offsets);
extern Buffer SparseLockMeta(Relation index, int mode, SparseMetaPageData *meta);

/* an item of the pending list at (blk, off); pages a callback for each page read wholly */
typedef void (*SparsePendingItemFn) (SparsePendingItem *item, BlockNumber blk, OffsetNumber off, void *arg);
typedef void (*SparsePendingPageFn) (BlockNumber blk, void *arg);
extern void SparseWalkPending(Relation index, const SparseMetaPageData *meta,
							  BlockNumber lastBlk, OffsetNumber lastOff,
							  SparsePendingItemFn item, SparsePendingPageFn page, void *arg);
extern void SparseFreePages(Relation index, BlockNumber *blocks, int nblocks, uint32 generation);

/* sparse_build.c */
extern IndexBuildResult *sparse_build(Relation heap, Relation index, IndexInfo *indexInfo);
extern void sparse_buildempty(Relation index);
extern void SparseMergeInputInit(SparseMergeInput *in, bool bm25);
extern void SparseMergeInputAdd(SparseMergeInput *in, ItemPointer tid, bool newdoc, bool isnull,
								int32 nnz, const int32 *indices, const float4 *values);
extern void SparseMergeInputFree(SparseMergeInput *in);
extern int64 SparseMerge(Relation index, bool withPending, IndexBulkDeleteCallback callback,
						 void *callback_state, SparseMergeInput *extra, int64 *removed);

/* sparse_insert.c */
extern bool sparse_insert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
						  Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
						  IndexInfo *indexInfo);
extern void SparseAppendPending(Relation index, SparseMetaPageData *metaOut, ItemPointer tid,
								bool isnull, int32 nnz, const int32 *indices, const float4 *values);

/* sparse_slots.c */
extern void SparseSlotArraysInit(void);
extern double *SparseBorrowSlots(MemoryContext cxt, int64 nslots);
extern void SparseReturnSlots(double *sums);

/* sparse_utils.c: a check function's problems */
#define CHECK_MAX_PROBLEMS 20
/* a TID key in a problem */
#define TIDFMT "(%u,%u)"
#define TIDARGS(k) (unsigned) ((k) >> 16), (unsigned) ((k) & 0xFFFF)
typedef struct CheckProblems
{
	StringInfoData text;
	int64		count;
} CheckProblems;

extern void CheckProblem(CheckProblems *p, const char *fmt,...) pg_attribute_printf(2, 3);
extern bool CheckOpen(Oid indexoid, ambuild_function ambuild, const char *am, Relation *heap,
					  Relation *index, LOCKMODE *lockmode);

/* sparse_scan.c */
#if defined(__x86_64__) && defined(__GNUC__)
extern bool SparseAvx512Usable(void);
#endif
extern IndexScanDesc sparse_beginscan(Relation index, int nkeys, int norderbys);
extern void sparse_rescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys);
extern bool sparse_gettuple(IndexScanDesc scan, ScanDirection dir);
extern void sparse_endscan(IndexScanDesc scan);

/*
 * sparse_filter.c: the rows a scan's conditions on later columns may match,
 * from another index of the table. Per column: its rows' TID keys (sorted)
 * and the heap blocks the bitmap kept lossy (any row there may match).
 */
typedef struct SparseFilterSet
{
	uint64	   *keys;
	int64		nkeys;
	uint64	   *lossy;			/* heap block numbers */
	int64		nlossy;
} SparseFilterSet;

/*
 * Keys of a set read in TID order that cost about one heap fetch. Reading a
 * GIN posting list costs about 6 ns a key (ad hoc, session 33: 10,000 keys
 * in 0.06 ms); a row a condition rejects costs a scan a heap fetch, about
 * 1-2 us. So a scan's first batch takes a set of at least this many keys
 * per row of the batch (34,000 keys at k = 100: a 10% filter up to 340,000
 * rows; more in a larger index, sparse_scan.c's first_batch_keys), and a GIN
 * filter set leaves out a posting list this many times longer than the set
 * it would narrow.
 */
#define SPARSE_KEYS_PER_HEAP_FETCH 256

/* TID keys as another index gives them, up to a bound, sorted at the end */
typedef struct SparseKeyList
{
	uint64	   *keys;
	int64		n;
	int64		max;			/* room for */
	int64		limit;			/* the caller's bound */
	bool		sorted;			/* so far */
} SparseKeyList;

static inline void
SparseKeyListInit(SparseKeyList *l, int64 limit)
{
	l->max = 1024;
	l->keys = palloc(sizeof(uint64) * l->max);
	l->n = 0;
	l->limit = limit;
	l->sorted = true;
}

/* append tid's key; false, and nothing appended, once there are limit keys */
static inline bool
SparseKeyListAdd(SparseKeyList *l, ItemPointer tid)
{
	uint64		key = SparseTidKey(tid);

	if (l->n >= l->limit)
		return false;
	if (l->n == l->max)
	{
		l->max *= 2;
		l->keys = repalloc_huge(l->keys, sizeof(uint64) * l->max);
	}
	if (l->n > 0 && key < l->keys[l->n - 1])
		l->sorted = false;
	l->keys[l->n++] = key;
	return true;
}

/* the keys in order (a btree's equality and a posting list give them so) */
static inline void
SparseKeyListSort(SparseKeyList *l)
{
	if (!l->sorted)
		qsort(l->keys, l->n, sizeof(uint64), SparseKeyCmp);
	l->sorted = true;
}

typedef struct SparseFilter
{
	bool		empty;			/* nothing matches */
	int			nsets;
	SparseFilterSet *sets;		/* a row matches if it is in every set */
	/* a bit per slot of the segment of this geometry (SparseFilterSlots) */
	uint64	   *bits;
	uint32		offsets;
	int64		nslots;
} SparseFilter;

/* the sets SparseFilterBegin may make, besides one this transaction made already */
typedef enum SparseFilterWay
{
	SPARSE_FILTER_CACHED,		/* none */
	SPARSE_FILTER_ORDERED,		/* one read in TID order, of up to a given number of keys */
	SPARSE_FILTER_ANY			/* that (within work_mem), or else a bitmap scan's */
} SparseFilterWay;

extern void FilterCheckColumns(Relation index, const char *firstHint);
extern void SparseCheckColumns(Relation index);
extern SparseFilter *SparseFilterBegin(IndexScanDesc scan, SparseFilterWay way, int64 orderedKeys);
extern int64 SparseWorkMemKeys(void);
extern bool SparseIndexTids(Relation heap, Relation other, Snapshot snapshot, ScanKey keys, int n,
							int64 maxKeys, SparseFilterSet *set);
extern bool SparseFilterTid(const SparseFilter *f, uint64 key);
extern double SparseFilterRows(const SparseFilter *f, double rows, BlockNumber heapBlocks);

/* SparseFilterTidsFrom's state: where its last search ended in each set, or its bits */
typedef struct SparseFilterCursor
{
	int64	   *at;
	uint64		lastKey;
	uint64	   *bits;			/* a bit per slot of offsets per heap block */
	uint32		offsets;
	int64		nslots;
} SparseFilterCursor;

extern void SparseFilterTidsFrom(const SparseFilter *f, SparseFilterCursor *c, const uint64 *keys,
								 int n, bool *allowed);
extern void SparseFilterSlots(SparseFilter *f, uint32 offsets, int64 nslots);

/* sparse_gin.c */
extern bool SparseGinTids(Relation other, Snapshot snapshot, ScanKey keys, int n, int64 maxKeys,
						  SparseFilterSet *set);

/* sparse_policy.c */
extern bool SparsePolicyIsPredicate(Relation heap, Relation index);
extern SparseFilter *SparsePolicyRows(Relation heap, Relation index);

static inline bool
SparseFilterSlot(const SparseFilter *f, int64 slot)
{
	return (f->bits[slot / 64] >> (slot % 64)) & 1;
}

/* sparse_vacuum.c */
extern IndexBulkDeleteResult *sparse_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
												IndexBulkDeleteCallback callback, void *callback_state);
extern IndexBulkDeleteResult *sparse_vacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats);

/* a reader of the segment and the pending list (sparse_utils.c) */
typedef struct SparseReader
{
	Relation	index;
	uint32		generation;
	uint32		slotOffsets;	/* the segment's segMaxOffset */
	bool		conflict;		/* met a page newer than generation */
	/*
	 * pages from here on are read as a conflict: InvalidBlockNumber, or for
	 * sparse_inverted_check, which holds merges off, the index's end (a
	 * damaged link past it is then a problem it lists, not a read error)
	 */
	BlockNumber blockLimit;
} SparseReader;

extern void SparseReaderInit(SparseReader *r, Relation index, const SparseMetaPageData *meta);
extern Page SparseReaderPage(SparseReader *r, BlockNumber blk, uint16 type, Buffer *buf);
extern Page SparseReaderLockPage(SparseReader *r, Buffer buf, uint16 type);
extern SparsePostingBlock *SparseReaderBlock(SparseReader *r, Buffer buf, BlockNumber blk, OffsetNumber off,
											 uint16 flags);

extern bool SparseLookupTerms(SparseReader *r, const SparseMetaPageData *meta, int nterms,
							  const int32 *terms, SparseDirEntry *entries, bool *found);

/* iterates the blocks of one posting list */
typedef struct SparseListIter
{
	SparseReader *reader;
	SparseDirEntry entry;
	BlockNumber blk;
	OffsetNumber off;
	uint32		blocksLeft;
	/* the current block, copied out, and its postings' TIDs */
	SparsePostingBlock *block;
	ItemPointerData tids[SPARSE_BLOCK_POSTINGS];
	float4	   *weights;
	float4	   *lengths;		/* BM25, else NULL */
	int			pos;			/* within block */
	bool		done;
} SparseListIter;

extern void SparseListBegin(SparseListIter *it, SparseReader *r, const SparseDirEntry *entry);
extern bool SparseListNextBlock(SparseListIter *it);
extern bool SparseListSeekBlock(SparseListIter *it, uint64 target);
extern const char *SparseReadSkip(SparseReader *r, const SparseDirEntry *entry, SparseSkipEntry *out,
								  BlockNumber *blk, OffsetNumber *off);

#endif							/* SPARSE_INDEX_H */
