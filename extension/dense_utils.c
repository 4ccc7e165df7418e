/*
 * dense_utils.c: the dense_flat handler, its cost estimate and the
 * metapage.
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "access/genam.h"
#include "access/relation.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/selfuncs.h"

#include "dense_flat.h"
#include "sparse_index.h"

int			dense_ef_search = 40;

static relopt_kind dense_relopt_kind;

void
dense_init(void)
{
	dense_relopt_kind = add_reloption_kind();
	add_int_reloption(dense_relopt_kind, "graph_degree",
					  "Links of each node of the graph an ORDER BY without a condition walks (0: no graph, every row is scored).",
					  0, 0, DENSE_MAX_DEGREE, AccessExclusiveLock);
	add_int_reloption(dense_relopt_kind, "graph_build_ef",
					  "Nodes the build's search for each node's links keeps.",
					  128, 8, 1000, AccessExclusiveLock);
	DefineCustomIntVariable("hybrid_search.dense_ef_search",
							"Nodes a dense_flat graph walk keeps before it returns its first rows.",
							"Each further batch a scan is asked for is twice as wide. Raise it to at least the LIMIT "
							"for that many rows near the exact ones.",
							&dense_ef_search,
							40, 1, 10000,
							PGC_USERSET, 0,
							NULL, NULL, NULL);
}

/* the page at buf (locked), checked to be one of ours of the type given */
Page
DensePage(Relation index, Buffer buf, uint16 type)
{
	Page		page = BufferGetPage(buf);

	if (PageIsNew(page) ||
		PageGetSpecialSize(page) != MAXALIGN(sizeof(DensePageOpaqueData)) ||
		DensePageGetOpaque(page)->page_id != DENSE_PAGE_ID ||
		DensePageGetOpaque(page)->type != type ||
		(type == DENSE_PAGE_ROWS &&
		 (((PageHeader) page)->pd_lower < MAXALIGN(SizeOfPageHeaderData) ||
		  DensePageNRows(page) > DENSE_ROWS_PER_PAGE)))
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" has a damaged page %u",
						RelationGetRelationName(index), BufferGetBlockNumber(buf)),
				 errhint("REINDEX it.")));
	return page;
}

/*
 * Add codes c, size bytes, to code page page (which has room for them);
 * returns the byte offset where they start, which a row names.
 */
uint16
DensePageAddCodes(Relation index, Page page, const DenseCodes *c, Size size)
{
	OffsetNumber off = PageAddItem(page, (Item) c, size, InvalidOffsetNumber, false, false);

	if (off == InvalidOffsetNumber)
		elog(ERROR, "could not add codes to dense_flat index \"%s\"", RelationGetRelationName(index));
	return ItemIdGetOffset(PageGetItemId(page, off));
}

/*
 * The codes at byte at of a code page, if an item of codes of dims
 * dimensions (with links for a graph of degree) starts there (one of its
 * line pointers says so), else NULL.
 */
const DenseCodes *
DensePageCodes(Page page, uint16 at, int dims, int degree)
{
	OffsetNumber max = Min(PageGetMaxOffsetNumber(page),
						   (BLCKSZ - SizeOfPageHeaderData) / sizeof(ItemIdData));

	for (OffsetNumber off = FirstOffsetNumber; off <= max; off++)
	{
		ItemId		iid = PageGetItemId(page, off);

		if (ItemIdIsNormal(iid) && ItemIdGetOffset(iid) == at)
			return ItemIdGetLength(iid) == DENSE_ITEM_SIZE(dims, degree) ?
				DenseItemAt(page, at, DENSE_ITEM_SIZE(dims, degree)) : NULL;
	}
	return NULL;
}

/*
 * Check that page blk, reached after pages pages of the row chain (0 for a
 * code page), lies in the index past its metapage. *nblocks is the index's
 * size as last asked, asked again only when blk or pages reaches it (an
 * insert may have added pages; a lseek per code page was most of a scan's
 * time). A chain longer than the index has a loop.
 */
void
DenseCheckBlock(Relation index, BlockNumber *nblocks, BlockNumber blk, BlockNumber pages)
{
	if (blk != DENSE_METAPAGE_BLKNO && blk < *nblocks && pages < *nblocks)
		return;
	*nblocks = RelationGetNumberOfBlocks(index);
	if (blk == DENSE_METAPAGE_BLKNO || blk >= *nblocks || pages >= *nblocks)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" links to page %u: its metapage, past its end or around a loop",
						RelationGetRelationName(index), blk),
				 errhint("REINDEX it.")));
}

/*
 * Copy the rows of row page blk (DENSE_ROWS_PER_PAGE of room) under its share
 * lock; returns how many, and the chain's next page in *next.
 */
int
DenseCopyRowPage(Relation index, BlockNumber blk, DenseRow *rows, BlockNumber *next)
{
	Buffer		buf = ReadBuffer(index, blk);
	Page		page;
	int			n;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = DensePage(index, buf, DENSE_PAGE_ROWS);
	n = DensePageNRows(page);
	memcpy(rows, DensePageRows(page), sizeof(DenseRow) * n);
	*next = DensePageGetOpaque(page)->next;
	UnlockReleaseBuffer(buf);
	return n;
}

/* the metapage, and its graph's entries where entries is not NULL (DENSE_MAX_ENTRIES of room) */
void
DenseReadMeta(Relation index, DenseMetaPageData *meta, DenseRef *entries)
{
	Buffer		buf = ReadBuffer(index, DENSE_METAPAGE_BLKNO);
	Page		page;
	DenseMetaPage m;

	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = DensePage(index, buf, DENSE_PAGE_META);
	m = DensePageGetMeta(page);
	memcpy(meta, m, sizeof(DenseMetaPageData));
	if (entries != NULL && meta->nentries <= DENSE_MAX_ENTRIES)
		memcpy(entries, DenseMetaEntries(m), sizeof(DenseRef) * meta->nentries);
	UnlockReleaseBuffer(buf);
	if (meta->magic != DENSE_MAGIC || meta->version != DENSE_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" is not of this version's format",
						RelationGetRelationName(index)),
				 errhint("REINDEX it.")));
	if (meta->nentries > DENSE_MAX_ENTRIES || meta->degree > DENSE_MAX_DEGREE)
		ereport(ERROR,
				(errcode(ERRCODE_INDEX_CORRUPTED),
				 errmsg("dense_flat index \"%s\" has a damaged metapage", RelationGetRelationName(index)),
				 errhint("REINDEX it.")));
}

void
DenseRefSet(DenseRef *ref, BlockNumber blk, uint16 at)
{
	BlockIdSet(&ref->blk, blk);
	ref->at = at;
}

/* the graph_degree option: the build's (a scan reads the metapage's) */
int
DenseGraphDegree(Relation index)
{
	DenseOptions *options = (DenseOptions *) index->rd_options;

	return options != NULL ? options->graphDegree : 0;
}

int
DenseGraphBuildEf(Relation index)
{
	DenseOptions *options = (DenseOptions *) index->rd_options;

	return options != NULL ? options->graphBuildEf : 128;
}

/* whether sums may use AVX-512 BW: the CPU has it and hybrid_search.sparse_simd is on */
bool
DenseSimd(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	static int	usable = -1;

	if (usable < 0)
		usable = SparseAvx512Usable() && __builtin_cpu_supports("avx512bw") ? 1 : 0;
	return usable == 1 && sparse_simd;
#else
	return false;
#endif
}

void
DenseCheckColumns(Relation index)
{
	FilterCheckColumns(index, "Index a vector (vector_cosine_ops) first, then filter columns.");
}

/*
 * Cost: a scan reads every row's TID (the row pages, a small part of the
 * index), then scores the rows the conditions on filter columns allow,
 * reading their codes: that share of the code pages, and an operator per
 * row (as the planner charges <=> for a row of the table). It returns
 * nothing before it has scored them all. Without a condition, an index with
 * a graph walks it (graph_costestimate); one without would score every row,
 * which pgvector's indexes do far cheaper: it is never chosen then, so that
 * an unfiltered ORDER BY is planned as it was without it. Nor
 * when a partial index of another access method that can order the rows
 * holds only rows the query's conditions allow (its predicate is proved):
 * such an index was made for this filter (hybrid_search_create_filter_indexes'
 * HNSW copy walks a graph of the filter's rows in a fraction of the time).
 */
/* whether another access method's partial index orders the rows of a proved predicate */
static bool
filter_has_own_index(IndexOptInfo *index)
{
	ListCell   *lc;

	foreach(lc, index->rel->indexlist)
	{
		IndexOptInfo *other = (IndexOptInfo *) lfirst(lc);

		if (other->relam != index->relam && other->indpred != NIL && other->predOK &&
			other->amcanorderbyop)
			return true;
	}
	return false;
}

/*
 * With a graph and no condition: a walk meets about ef_search x degree
 * nodes, each a code page read (most of them cached) and an operator.
 */
static void
graph_costestimate(PlannerInfo *root, IndexPath *path, double loop_count, int degree,
				   Cost *indexStartupCost, Cost *indexTotalCost,
				   Selectivity *indexSelectivity, double *indexCorrelation,
				   double *indexPages)
{
	double		tuples = Max(1.0, path->indexinfo->tuples);
	double		met = Min(tuples, (double) dense_ef_search * degree);

	*indexStartupCost = met * (cpu_operator_cost + cpu_index_tuple_cost) + met / 4 * random_page_cost;
	*indexTotalCost = *indexStartupCost + dense_ef_search * cpu_tuple_cost;
	*indexSelectivity = 1;
	*indexCorrelation = 0;
	*indexPages = met / 4;
}

static void
dense_costestimate(PlannerInfo *root, IndexPath *path, double loop_count,
				   Cost *indexStartupCost, Cost *indexTotalCost,
				   Selectivity *indexSelectivity, double *indexCorrelation,
				   double *indexPages)
{
	GenericCosts costs;
	double		tuples = Max(1.0, path->indexinfo->tuples);
	double		pages = Max(1.0, path->indexinfo->pages);
	double		rowPages = Min(pages, ceil(tuples / DENSE_ROWS_PER_PAGE));
	double		scored;
	int			degree = 0;

	if (path->indexorderbys != NIL && path->indexclauses == NIL)
	{
		Relation	index = index_open(path->indexinfo->indexoid, NoLock);

		degree = DenseGraphDegree(index);
		index_close(index, NoLock);
	}
	if (degree > 0)
	{
		graph_costestimate(root, path, loop_count, degree, indexStartupCost, indexTotalCost,
						   indexSelectivity, indexCorrelation, indexPages);
		return;
	}
	if (path->indexorderbys == NIL || path->indexclauses == NIL || filter_has_own_index(path->indexinfo))
	{
		*indexStartupCost = get_float8_infinity();
		*indexTotalCost = get_float8_infinity();
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}
	MemSet(&costs, 0, sizeof(costs));
	genericcostestimate(root, path, loop_count, &costs);
	scored = costs.indexSelectivity;
	*indexStartupCost = rowPages * seq_page_cost + tuples * cpu_index_tuple_cost +
		scored * ((pages - rowPages) * seq_page_cost + tuples * cpu_operator_cost);
	*indexTotalCost = *indexStartupCost + costs.numIndexTuples * cpu_tuple_cost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = pages;
}

static bytea *
dense_options(Datum reloptions, bool validate)
{
	static const relopt_parse_elt table[] = {
		{"graph_degree", RELOPT_TYPE_INT, offsetof(DenseOptions, graphDegree)},
		{"graph_build_ef", RELOPT_TYPE_INT, offsetof(DenseOptions, graphBuildEf)},
	};

	return (bytea *) build_reloptions(reloptions, validate, dense_relopt_kind, sizeof(DenseOptions),
									  table, lengthof(table));
}

static bool
dense_validate(Oid opclassoid)
{
	return true;
}

PG_FUNCTION_INFO_V1(dense_flat_handler);
Datum
dense_flat_handler(PG_FUNCTION_ARGS)
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
	amroutine->amusemaintenanceworkmem = false;
	amroutine->amparallelvacuumoptions = 0;
	amroutine->amkeytype = InvalidOid;

	amroutine->ambuild = dense_build;
	amroutine->ambuildempty = dense_buildempty;
	amroutine->aminsert = dense_insert;
	amroutine->ambulkdelete = dense_bulkdelete;
	amroutine->amvacuumcleanup = dense_vacuumcleanup;
	amroutine->amcanreturn = NULL;
	amroutine->amcostestimate = dense_costestimate;
	amroutine->amoptions = dense_options;
	amroutine->amproperty = NULL;
	amroutine->ambuildphasename = NULL;
	amroutine->amvalidate = dense_validate;
	amroutine->amadjustmembers = NULL;
	amroutine->ambeginscan = dense_beginscan;
	amroutine->amrescan = dense_rescan;
	amroutine->amgettuple = dense_gettuple;
	amroutine->amgetbitmap = NULL;
	amroutine->amendscan = dense_endscan;
	amroutine->ammarkpos = NULL;
	amroutine->amrestrpos = NULL;
	amroutine->amestimateparallelscan = NULL;
	amroutine->aminitparallelscan = NULL;
	amroutine->amparallelrescan = NULL;

	PG_RETURN_POINTER(amroutine);
}
