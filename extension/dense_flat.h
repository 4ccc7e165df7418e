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
#define DENSE_MAX_ITEM_SIZE \
	MAXALIGN_DOWN(BLCKSZ - SizeOfPageHeaderData - sizeof(ItemIdData) - MAXALIGN(sizeof(DensePageOpaqueData)))
#define DENSE_MAX_DIMS ((int) (DENSE_MAX_ITEM_SIZE - offsetof(DenseCodes, codes)))

/*
 * The codes of dims dimensions at byte at of a code page, or NULL where
 * they would not lie between its first line pointer and its special space: a
 * damaged row gives wrong codes, never a read outside the page
 * (dense_flat_check finds it: DensePageCodes).
 */
static inline const DenseCodes *
DenseCodesAt(Page page, uint16 at, int dims)
{
	if (at < MAXALIGN(SizeOfPageHeaderData + sizeof(ItemIdData)) || at % MAXIMUM_ALIGNOF != 0 ||
		at + DENSE_CODES_SIZE(dims) > BLCKSZ - MAXALIGN(sizeof(DensePageOpaqueData)))
		return NULL;
	return (const DenseCodes *) (page + at);
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
extern DenseCodes *DenseQuantize(Relation index, const DenseVector *v);
extern void DenseCheckDims(Relation index, int32 indexDims, int32 rowDims);

/* dense_insert.c */
extern bool dense_insert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
						 Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
						 IndexInfo *indexInfo);

/* dense_scan.c */
extern IndexScanDesc dense_beginscan(Relation index, int nkeys, int norderbys);
extern void dense_rescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys, int norderbys);
extern bool dense_gettuple(IndexScanDesc scan, ScanDirection dir);
extern void dense_endscan(IndexScanDesc scan);

/* dense_vacuum.c */
extern IndexBulkDeleteResult *dense_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
											   IndexBulkDeleteCallback callback, void *callback_state);
extern IndexBulkDeleteResult *dense_vacuumcleanup(IndexVacuumInfo *info, IndexBulkDeleteResult *stats);

/* dense_utils.c */
extern void DenseReadMeta(Relation index, DenseMetaPageData *meta);
extern void DenseCheckBlock(Relation index, BlockNumber *nblocks, BlockNumber blk, BlockNumber pages);
extern Page DensePage(Relation index, Buffer buf, uint16 type);
extern uint16 DensePageAddCodes(Relation index, Page page, const DenseCodes *c, Size size);
extern const DenseCodes *DensePageCodes(Page page, uint16 at, int dims);
extern void DenseCheckColumns(Relation index);

#endif
