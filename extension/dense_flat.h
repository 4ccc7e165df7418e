/*
 * dense_flat.h: the dense_flat index access method.
 *
 * An exact index over pgvector's vector for ORDER BY col <=> q when a
 * condition narrows the rows (a metadata filter, a row-level-security
 * policy): pgvector's HNSW walks past every row a filter rejects, this
 * index scores only the rows the filter allows (sparse_filter.c finds them
 * in another index of the table).
 *
 * Each row's vector is kept as int8 codes with a scale (x ~ scale * codes)
 * and the norm of its quantization error, so the scan computes, for every
 * row it scores, a lower bound of the cosine distance that holds whatever
 * the rounding (dense_scan.c). It returns rows in the order of that bound
 * with xs_recheckorderby: the executor computes each returned row's exact
 * distance and reorders, as it does for GiST's lossy distances, so the
 * results are those of a sequential scan.
 *
 * On disk (every page WAL-logged: generic WAL, or whole pages after a build):
 *   block 0         metapage
 *   row pages       a chain of DenseRow arrays: each row's heap TID (invalid
 *                   once VACUUM found it dead) and where its codes lie
 *   code pages      DenseCodes items, in no chain: only rows point to them
 * Rows and codes are appended, at the build or by aminsert; VACUUM marks
 * dead rows in place and frees nothing (REINDEX compacts).
 *
 * With a graph (the graph_degree option), each codes item is followed by
 * its links (DenseLinks): where its row lies and the nodes it links to, so
 * that an ORDER BY without a condition, or under one that allows many rows
 * (dense_scan.c), walks the graph (dense_walk.c) instead of scoring every
 * row. The build makes the graph (dense_graph.c);
 * rows inserted since are the index's tail, past the metapage's graphEnd,
 * and a walk scores every one of them.
 */
#ifndef DENSE_FLAT_H
#define DENSE_FLAT_H

#include "postgres.h"

#include "access/amapi.h"
#include "access/generic_xlog.h"
#include "nodes/execnodes.h"
#include "storage/bufmgr.h"
#include "storage/itemptr.h"
#include "utils/relcache.h"

#define DENSE_MAGIC				0x44464C54	/* "DFLT" */
#define DENSE_VERSION			2
#define DENSE_METAPAGE_BLKNO	0

#define DENSE_PAGE_META			1
#define DENSE_PAGE_ROWS			2
#define DENSE_PAGE_CODES		3

#define DENSE_PAGE_ID			0xFF86

typedef struct DensePageOpaqueData
{
	BlockNumber next;			/* rows: next page of the chain */
	uint16		type;			/* DENSE_PAGE_* */
	uint16		page_id;		/* DENSE_PAGE_ID */
} DensePageOpaqueData;

typedef DensePageOpaqueData *DensePageOpaque;

#define DensePageGetOpaque(page) ((DensePageOpaque) PageGetSpecialPointer(page))

typedef struct DenseMetaPageData
{
	uint32		magic;
	uint32		version;
	int32		dims;			/* of every row; 0 until the first */
	uint32		unused;
	BlockNumber rowsHead;		/* the row chain */
	BlockNumber rowsTail;
	BlockNumber codesTail;		/* the code page appended to, or invalid */
	uint32		unused2;
	uint64		rows;			/* rows appended, dead ones included */
	/* the graph: none where degree is 0 (and in an index built before it) */
	uint16		degree;			/* of each node: its links' room */
	uint16		nentries;		/* the nodes a walk starts from, after this struct */
	uint32		unused4;
	BlockNumber graphEndBlk;	/* the first row of the chain not in the */
	uint16		graphEndIndex;	/* graph: its row page (invalid: the head) */
	uint16		unused3;		/* and its place there, which may be the */
	uint64		graphRows;		/* page's end; and how many rows precede it */
} DenseMetaPageData;

typedef DenseMetaPageData *DenseMetaPage;

#define DensePageGetMeta(page) ((DenseMetaPage) PageGetContents(page))

/*
 * A row: its heap TID and its codes' place, their page and where in it they
 * start (none for a NULL vector, which a scan returns last, as a sequential
 * scan's ORDER BY does); 12 bytes. The place is a byte offset, not a line
 * pointer's number, so that a scan reads no line pointer, a cache miss a
 * row (format version 2, session 38).
 */
typedef struct DenseRow
{
	ItemPointerData tid;		/* invalid: a dead row */
	uint16		codesAt;		/* the codes' byte offset in their page */
	BlockNumber codesBlk;		/* InvalidBlockNumber: a NULL vector */
} DenseRow;

/*
 * A row page holds an array of DenseRow after its header, up to pd_lower
 * (no line pointers: a row is found by its place in the chain).
 */
#define DENSE_ROWS_PER_PAGE \
	((int) ((BLCKSZ - MAXALIGN(SizeOfPageHeaderData) - MAXALIGN(sizeof(DensePageOpaqueData))) / sizeof(DenseRow)))
#define DensePageRows(page) ((DenseRow *) PageGetContents(page))
#define DensePageNRows(page) \
	((int) ((((PageHeader) (page))->pd_lower - MAXALIGN(SizeOfPageHeaderData)) / sizeof(DenseRow)))

/* a row's quantized vector: x[i] ~ scale * codes[i], |x - that| <= error */
typedef struct DenseCodes
{
	float4		scale;
	float4		error;			/* an upper bound of the error's norm */
	float4		norm;			/* |x| (0: a zero vector) */
	int8		codes[FLEXIBLE_ARRAY_MEMBER];
} DenseCodes;

#define DENSE_CODES_SIZE(dims) MAXALIGN(offsetof(DenseCodes, codes) + (dims))

/* a graph node: its codes item's page and byte offset, 6 bytes */
typedef struct DenseRef
{
	BlockIdData blk;
	uint16		at;
} DenseRef;

/*
 * A graph node's links, after its codes: where its row lies (the row gives
 * its TID), written with the codes and never changed but for the dead bit
 * below, then its neighbours, which a merge may change under the code
 * page's lock.
 */
typedef struct DenseLinks
{
	BlockNumber rowBlk;
	uint16		rowIndex;
	uint16		nlinks;
	DenseRef	links[FLEXIBLE_ARRAY_MEMBER];
} DenseLinks;

/*
 * Set in rowIndex by VACUUM when it marks the row dead: a walk passes
 * through the node and keeps no room for it (a row page holds far fewer
 * rows than this bit).
 */
#define DENSE_ROW_DEAD 0x8000
#define DenseLinksRowIndex(links) ((links)->rowIndex & ~DENSE_ROW_DEAD)

#define DENSE_MAX_DEGREE 64

/* the rule choosing links: a candidate is dropped if a node kept is nearer to it by this */
#define DENSE_GRAPH_ALPHA 1.2f

/*
 * A graph's entries: a sample of its nodes, every n / nentries-th as the
 * build met them, on the metapage after its struct. A walk scores them all
 * and starts from the nearest, so that it begins in the query's region
 * (one layer of links alone leads out of a dense cluster only by chance).
 */
#define DENSE_MAX_ENTRIES \
	Min(1024, (int) ((BLCKSZ - MAXALIGN(SizeOfPageHeaderData) - MAXALIGN(sizeof(DenseMetaPageData)) - \
					  MAXALIGN(sizeof(DensePageOpaqueData))) / sizeof(DenseRef)))
#define DenseMetaEntries(meta) ((DenseRef *) ((char *) (meta) + MAXALIGN(sizeof(DenseMetaPageData))))
#define DENSE_LINKS_SIZE(degree) MAXALIGN(offsetof(DenseLinks, links) + sizeof(DenseRef) * (degree))
/* a codes item, with its links where the index has a graph */
#define DENSE_ITEM_SIZE(dims, degree) \
	(DENSE_CODES_SIZE(dims) + ((degree) > 0 ? DENSE_LINKS_SIZE(degree) : 0))
#define DenseCodesLinks(codes, dims) ((DenseLinks *) ((char *) (codes) + DENSE_CODES_SIZE(dims)))
#define DENSE_MAX_ITEM_SIZE \
	MAXALIGN_DOWN(BLCKSZ - SizeOfPageHeaderData - sizeof(ItemIdData) - MAXALIGN(sizeof(DensePageOpaqueData)))
#define DENSE_MAX_DIMS ((int) (DENSE_MAX_ITEM_SIZE - offsetof(DenseCodes, codes)))

/* the index's options */
typedef struct DenseOptions
{
	int32		vl_len_;
	int			graphDegree;	/* 0: no graph */
	int			graphBuildEf;	/* the build's search width */
} DenseOptions;

/* hybrid_search.dense_ef_search: a walk's width */
extern int	dense_ef_search;

/*
 * The item of size bytes at byte at of a code page, or NULL where it would
 * not lie between the page's first line pointer and its special space: a
 * damaged row or link gives wrong codes, never a read outside the page
 * (dense_flat_check finds it: DensePageCodes).
 */
static inline const DenseCodes *
DenseItemAt(Page page, uint16 at, Size size)
{
	if (at < MAXALIGN(SizeOfPageHeaderData + sizeof(ItemIdData)) || at % MAXIMUM_ALIGNOF != 0 ||
		at + size > BLCKSZ - MAXALIGN(sizeof(DensePageOpaqueData)))
		return NULL;
	return (const DenseCodes *) (page + at);
}

/* the codes of dims dimensions at byte at of a code page, or NULL */
static inline const DenseCodes *
DenseCodesAt(Page page, uint16 at, int dims)
{
	return DenseItemAt(page, at, DENSE_CODES_SIZE(dims));
}

/* pgvector's vector */
typedef struct DenseVector
{
	int32		vl_len_;
	int16		dim;
	int16		unused;
	float4		x[FLEXIBLE_ARRAY_MEMBER];
} DenseVector;

#define DatumGetDenseVector(d) ((DenseVector *) PG_DETOAST_DATUM(d))

/* dense_build.c */
extern IndexBuildResult *dense_build(Relation heap, Relation index, IndexInfo *indexInfo);
extern void dense_buildempty(Relation index);
extern void DenseInitPage(Page page, uint16 type);
extern DenseCodes *DenseQuantize(Relation index, const DenseVector *v, int degree);
extern void DenseCheckDims(Relation index, int32 indexDims, int32 rowDims, int degree);

/* dense_graph.c: a graph's build, in memory; nodes are numbered as added */
typedef struct DenseGraph
{
	Relation	index;
	int			dims;
	int			stride;			/* a node's codes, padded */
	int			degree;			/* links kept */
	int			capacity;		/* links a node may gather before they are chosen again */
	int			ef;				/* the search's width */
	Size		memoryLimit;
	int64		n;
	int64		max;
	int8	   *codes;
	float4	   *factor;			/* scale / norm: codes . codes * factors = cosine */
	int32	   *links;			/* capacity a node */
	uint16	   *nlinks;
	int32	   *entries;		/* the nodes every search starts from */
	int			nentries;
	uint32	   *visited;		/* the search that last met each node */
	uint32		stamp;
	struct Neighbor *frontier;
	struct Neighbor *found;
	struct Neighbor *expanded;
	struct Neighbor *cand;
	bool	   *dead;			/* a merge's: nodes of dead rows (NULL: none) */
	bool	   *dirty;			/* a merge's: nodes whose links changed */
} DenseGraph;

/* one node in this many a merge links becomes an entry, while there is room */
#define DENSE_MERGE_ENTRY_EVERY 64

extern DenseGraph *DenseGraphCreate(Relation index, int dims, int degree, int ef);
extern bool DenseGraphAdd(DenseGraph *g, const DenseCodes *c);
extern void DenseGraphBuild(DenseGraph *g);
extern Size DenseGraphNodeSize(const DenseGraph *g);
extern void DenseGraphPrepareMerge(DenseGraph *g, bool *dead);
extern void DenseGraphSetLinks(DenseGraph *g, int32 p, const int32 *ids, int n);
extern int64 DenseGraphMerge(DenseGraph *g, int64 first);
extern float4 DenseCodesDistance(const DenseCodes *a, const DenseCodes *b, int dims);

/* dense_insert.c */
extern bool dense_insert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
						 Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
						 IndexInfo *indexInfo);

/* a query coded for scoring codes (dense_scan.c) */
typedef struct DenseQuery
{
	const DenseVector *vector;
	double		norm;
	int16	   *codes;			/* vector ~ step * codes */
	double		step;
	double		error;			/* |vector - that| */
} DenseQuery;

/* dense_walk.c: a scan's walk of the graph */
typedef struct DenseWalk DenseWalk;

/* a node a walk returns */
typedef struct DenseWalkNode
{
	double		bound;			/* of its cosine distance */
	float4		estimate;		/* of that distance, which the walk follows */
	uint16		rowIndex;
	BlockNumber rowBlk;
	DenseRef	ref;			/* the node itself */
} DenseWalkNode;

extern DenseWalk *DenseWalkBegin(Relation index, const DenseMetaPageData *meta, const DenseRef *entries,
								 const DenseQuery *query, int width);
extern const DenseWalkNode *DenseWalkPeek(DenseWalk *w);
extern bool DenseWalkTake(DenseWalk *w, ItemPointer tid);
extern bool DenseWalkExhausted(const DenseWalk *w);
extern bool DenseWalkMet(const DenseWalk *w, BlockNumber blk, uint16 at);
extern int	DenseWalkNearest(DenseWalk *w, int width, DenseWalkNode **nodes);

/* the links node (blk, at) will get that a merge holds back, in *links; returns how many */
typedef int (*DenseHeldLinks) (void *arg, BlockNumber blk, uint16 at, const DenseRef **links);
extern void DenseWalkHoldLinks(DenseWalk *w, DenseHeldLinks fn, void *arg);

/* dense_merge.c */
extern int64 DenseMergeTail(Relation index);

/* dense_scan.c */
extern double DenseQueryBound(const DenseQuery *q, const DenseCodes *c, float4 *estimate);
extern void DenseQueryEncode(DenseQuery *q, const DenseVector *v);
extern Buffer DensePinCodes(Relation index, BlockNumber blk, BlockNumber nblocks);
extern IndexScanDesc dense_beginscan(Relation index, int nkeys, int norderbys);
extern void dense_rescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys);
extern bool dense_gettuple(IndexScanDesc scan, ScanDirection dir);
extern void dense_endscan(IndexScanDesc scan);

/* dense_vacuum.c */
extern IndexBulkDeleteResult *dense_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
											   IndexBulkDeleteCallback callback, void *callback_state);
extern IndexBulkDeleteResult *dense_vacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats);

/* dense_utils.c */
extern void DenseReadMeta(Relation index, DenseMetaPageData *meta, DenseRef *entries);
extern int	DenseCopyRowPage(Relation index, BlockNumber blk, DenseRow *rows, BlockNumber *next);
extern void DenseCheckBlock(Relation index, BlockNumber *nblocks, BlockNumber blk, BlockNumber pages);
extern Page DensePage(Relation index, Buffer buf, uint16 type);
extern uint16 DensePageAddCodes(Relation index, Page page, const DenseCodes *c, Size size);
extern const DenseCodes *DensePageCodes(Page page, uint16 at, int dims, int degree);
extern void DenseCheckColumns(Relation index);
extern int	DenseGraphDegree(Relation index);
extern int	DenseGraphBuildEf(Relation index);
extern void dense_init(void);
extern bool DenseSimd(void);
extern void DenseRefSet(DenseRef *ref, BlockNumber blk, uint16 at);

static inline BlockNumber
DenseRefBlock(const DenseRef *ref)
{
	return BlockIdGetBlockNumber(&ref->blk);
}

#endif
