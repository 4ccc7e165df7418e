/*
 * sparse_filter.c: the rows a scan's conditions on the index's later
 * columns may match, found in another index of the table.
 *
 * A sparse_inverted index ranks its first column. Its later columns (a
 * filter operator class: jsonb_filter_ops, int4_filter_ops, ...) store
 * nothing; they only let the planner hand the scan a condition such as
 * metadata @> '{"tenant": 3}' or, from a row-level-security policy,
 * ((metadata->>'tenant')::int) = 3. The scan looks for another valid index
 * of the table, without a predicate, whose first column is the same column
 * or expression and whose operator family has the condition's operator (the
 * GIN index on metadata, a btree on the policy's expression), and asks it
 * for every row version that may match: a bitmap scan, or a btree's entries
 * read in order (SparseIndexTids). From then on (after
 * hybrid_search.sparse_filter_after batches, sparse_scan.c) the scan ranks
 * only those rows, so a row a filter rejects costs no heap fetch, and the
 * executor rechecks the condition on each row returned. Without such an
 * index a condition narrows nothing here and the executor alone applies it.
 *
 * The set holds every row version the other index has an entry for,
 * visible or not, so it holds every row the scan's snapshot sees that
 * matches: an index entry is made before the row's transaction commits, and
 * a HOT chain's root, which both indexes name, matches as its members do
 * (the chain's members share every indexed column, ours included).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/gin.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_amop.h"
#include "commands/defrem.h"
#include "catalog/pg_index.h"
#include "miscadmin.h"
#include "nodes/tidbitmap.h"
#include "storage/proc.h"
#include "utils/catcache.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "sparse_index.h"

/* whether an operator family has an ordering operator */
static bool
family_orders(Oid opfamily)
{
	CatCList   *ops = SearchSysCacheList1(AMOPSTRATEGY, ObjectIdGetDatum(opfamily));
	bool		orders = false;

	for (int i = 0; i < ops->n_members && !orders; i++)
	{
		Form_pg_amop op = (Form_pg_amop) GETSTRUCT(&ops->members[i]->tuple);

		orders = op->amoppurpose == AMOP_ORDER;
	}
	ReleaseSysCacheList(ops);
	return orders;
}

/*
 * The index's first column is the one ranked (an ordering operator class),
 * every later one a filter: else the build would read a filter column as
 * the ranked one. firstHint names the first column's operator classes.
 */
void
FilterCheckColumns(Relation index, const char *firstHint)
{
	int			natts = IndexRelationGetNumberOfKeyAttributes(index);
	char	   *am = get_am_name(index->rd_rel->relam);

	for (int i = 0; i < natts; i++)
	{
		bool		orders = family_orders(index->rd_opfamily[i]);

		if (i == 0 && !orders)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("the first column of %s index \"%s\" must be a ranked one",
							am, RelationGetRelationName(index)),
					 errhint("%s", firstHint)));
		if (i > 0 && orders)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("column %d of %s index \"%s\" must be a filter column",
							i + 1, am, RelationGetRelationName(index)),
					 errhint("A %s index ranks its first column only; later columns take a "
							 "filter operator class such as jsonb_filter_ops.", am)));
	}
}

void
SparseCheckColumns(Relation index)
{
	FilterCheckColumns(index, "Index a sparsevec (sparsevec_ip_ops) or a tsvector (tsvector_bm25_ops) first, "
					   "then filter columns.");
}

/* the expression of index column attno (1-based), which is not a plain column */
static Node *
column_expression(Relation index, int attno)
{
	List	   *exprs = RelationGetIndexExpressions(index);
	int			nth = 0;

	for (int i = 0; i < attno - 1; i++)
		if (index->rd_index->indkey.values[i] == 0)
			nth++;
	return (Node *) list_nth(exprs, nth);
}

/*
 * Whether other, an index of the same table, can find the rows of index
 * column attno: its first column is the same column or expression with the
 * same collation; it makes a bitmap of every row that may match (it has no
 * predicate, and no gin_fuzzy_search_limit samples it); and this transaction
 * may use it (as the planner asks: an index built over broken HOT chains is
 * not for snapshots older than it). Which conditions it serves is its
 * operator family's say (column_set).
 */
static bool
covers_column(Relation other, Relation index, int attno)
{
	int16		heapatt = index->rd_index->indkey.values[attno - 1];

	if (other->rd_rel->relkind != RELKIND_INDEX || !other->rd_index->indisvalid ||
		other->rd_indam->amgetbitmap == NULL ||
		!heap_attisnull(other->rd_indextuple, Anum_pg_index_indpred, NULL) ||
		other->rd_index->indkey.values[0] != heapatt ||
		other->rd_indcollation[0] != index->rd_indcollation[attno - 1])
		return false;
	if (other->rd_rel->relam == GIN_AM_OID && GinFuzzySearchLimit > 0)
		return false;
	if (other->rd_index->indcheckxmin &&
		!TransactionIdPrecedes(HeapTupleHeaderGetXmin(other->rd_indextuple->t_data), TransactionXmin))
		return false;
	return heapatt != 0 || equal(column_expression(other, 1), column_expression(index, attno));
}

/* a filter set made from a TID bitmap: its exact rows and its lossy pages */
static void
set_from_bitmap(SparseFilterSet *set, TIDBitmap *tbm)
{
	TBMIterator *it = tbm_begin_iterate(tbm);
	TBMIterateResult *page;
	SparseKeyList keys;
	int64		maxLossy = 16;

	SparseKeyListInit(&keys, PG_INT64_MAX);
	set->lossy = palloc(sizeof(uint64) * maxLossy);
	set->nlossy = 0;
	while ((page = tbm_iterate(it)) != NULL)
	{
		if (page->ntuples < 0)
		{
			if (set->nlossy == maxLossy)
			{
				maxLossy *= 2;
				set->lossy = repalloc_huge(set->lossy, sizeof(uint64) * maxLossy);
			}
			set->lossy[set->nlossy++] = page->blockno;
			continue;
		}
		for (int i = 0; i < page->ntuples; i++)
		{
			ItemPointerData tid;

			ItemPointerSet(&tid, page->blockno, page->offsets[i]);
			SparseKeyListAdd(&keys, &tid);
		}
	}
	tbm_end_iterate(it);
	/* the bitmap's pages come in order */
	set->keys = keys.keys;
	set->nkeys = keys.n;
}

/* how many TID keys fit in work_mem, as a sort or a hash would spill past it */
int64
SparseWorkMemKeys(void)
{
	return (int64) work_mem * 1024 / sizeof(uint64);
}

/*
 * The TID keys (sorted) of other's entries that meet its scan keys keys[0 ..
 * n-1], read through amgettuple: a btree returns an equality's entries in TID
 * order, so no bitmap is hashed and sorted. False if the index's answer is
 * not exact (it asks for a recheck), or if there are more than maxKeys.
 */
bool
SparseIndexTids(Relation heap, Relation other, Snapshot snapshot, ScanKey keys, int n, int64 maxKeys,
				SparseFilterSet *set)
{
	IndexScanDesc scan;
	ItemPointer tid;
	SparseKeyList list;
	bool		usable = true;

	SparseKeyListInit(&list, maxKeys);
	scan = index_beginscan(heap, other, snapshot, n, 0);
	index_rescan(scan, keys, n, NULL, 0);
	while ((tid = index_getnext_tid(scan, ForwardScanDirection)) != NULL)
	{
		if (scan->xs_recheck || !SparseKeyListAdd(&list, tid))
		{
			usable = false;
			break;
		}
		CHECK_FOR_INTERRUPTS();
	}
	index_endscan(scan);
	if (usable)
		SparseKeyListSort(&list);
	set->keys = list.keys;
	set->nkeys = list.n;
	set->lossy = NULL;
	set->nlossy = 0;
	return usable;
}

/*
 * Filter sets made in this transaction, for a later scan that asks another
 * index the same conditions under an equal snapshot: hybrid_search's three
 * legs each filter by the same condition, and a 10% filter's bitmap costs
 * about 2.5 ms at 100,000 rows. A set holds every row version the other
 * index had an entry for when it was made. A snapshot sees only rows
 * committed before it was taken, or made by this transaction's earlier
 * commands, so every row an equal snapshot sees had its entry by then, and
 * the set still holds it. Sets live until the transaction ends (a scan may
 * still read one), work_mem of them at most.
 */
typedef struct CachedSet
{
	struct CachedSet *next;
	Oid			indexOid;
	RelFileNode node;
	int			nkeys;
	ScanKeyData *keys;			/* the other index's keys, arguments copied */
	/* the snapshot's content */
	TransactionId xmin;
	TransactionId xmax;
	TransactionId *xip;
	uint32		xcnt;
	TransactionId *subxip;
	int32		subxcnt;
	bool		suboverflowed;
	bool		takenDuringRecovery;
	CommandId	curcid;
	SparseFilterSet set;
} CachedSet;

static struct
{
	LocalTransactionId xact;	/* the cache's transaction; any other: empty */
	MemoryContext cxt;			/* in TopTransactionContext */
	CachedSet  *head;
	Size		bytes;
}			setCache;

static bool
same_snapshot(const CachedSet *c, Snapshot s)
{
	return c->xmin == s->xmin && c->xmax == s->xmax && c->curcid == s->curcid &&
		c->xcnt == s->xcnt && c->subxcnt == s->subxcnt &&
		c->suboverflowed == s->suboverflowed && c->takenDuringRecovery == s->takenDuringRecovery &&
		(s->xcnt == 0 || memcmp(c->xip, s->xip, sizeof(TransactionId) * s->xcnt) == 0) &&
		(s->subxcnt <= 0 || memcmp(c->subxip, s->subxip, sizeof(TransactionId) * s->subxcnt) == 0);
}

/* keys[i]'s argument is of type argTypes[i] */
static bool
same_keys(const CachedSet *c, const ScanKeyData *keys, int n, const Oid *argTypes)
{
	if (c->nkeys != n)
		return false;
	for (int i = 0; i < n; i++)
	{
		const ScanKeyData *a = &c->keys[i],
				   *b = &keys[i];
		int16		typlen;
		bool		typbyval;

		if (a->sk_strategy != b->sk_strategy || a->sk_subtype != b->sk_subtype ||
			a->sk_collation != b->sk_collation || a->sk_func.fn_oid != b->sk_func.fn_oid)
			return false;
		get_typlenbyval(argTypes[i], &typlen, &typbyval);
		if (!datumIsEqual(a->sk_argument, b->sk_argument, typbyval, typlen))
			return false;
	}
	return true;
}

/* the set this transaction made for other's keys under an equal snapshot */
static bool
cached_set(Relation other, const ScanKeyData *keys, int n, const Oid *argTypes, Snapshot snapshot,
		   SparseFilterSet *set)
{
	if (setCache.xact != MyProc->lxid || snapshot == NULL || snapshot->snapshot_type != SNAPSHOT_MVCC)
		return false;
	for (CachedSet *c = setCache.head; c != NULL; c = c->next)
		if (c->indexOid == RelationGetRelid(other) && RelFileNodeEquals(c->node, other->rd_node) &&
			same_snapshot(c, snapshot) && same_keys(c, keys, n, argTypes))
		{
			*set = c->set;
			return true;
		}
	return false;
}

static void *
copy_array(const void *a, Size size)
{
	void	   *copy = MemoryContextAllocHuge(setCache.cxt, Max(size, 1));

	if (size > 0)
		memcpy(copy, a, size);
	return copy;
}

/* keep a copy of set for cached_set, if work_mem allows */
static void
cache_set(Relation other, const ScanKeyData *keys, int n, const Oid *argTypes, Snapshot snapshot,
		  const SparseFilterSet *set)
{
	Size		bytes;
	CachedSet  *c;

	if (snapshot == NULL || snapshot->snapshot_type != SNAPSHOT_MVCC)
		return;
	bytes = sizeof(uint64) * (set->nkeys + set->nlossy) +
		sizeof(TransactionId) * (snapshot->xcnt + snapshot->subxcnt);
	if (setCache.xact != MyProc->lxid)
	{
		/* the last transaction's context went with its TopTransactionContext */
		setCache.cxt = AllocSetContextCreate(TopTransactionContext, "hybrid_search filter sets",
											 ALLOCSET_DEFAULT_SIZES);
		setCache.head = NULL;
		setCache.bytes = 0;
		setCache.xact = MyProc->lxid;
	}
	if (setCache.bytes + bytes > (Size) work_mem * 1024)
		return;
	setCache.bytes += bytes;
	c = MemoryContextAllocZero(setCache.cxt, sizeof(CachedSet));
	c->indexOid = RelationGetRelid(other);
	c->node = other->rd_node;
	c->nkeys = n;
	c->keys = copy_array(keys, sizeof(ScanKeyData) * n);
	for (int i = 0; i < n; i++)
	{
		int16		typlen;
		bool		typbyval;
		MemoryContext oldcxt = MemoryContextSwitchTo(setCache.cxt);

		get_typlenbyval(argTypes[i], &typlen, &typbyval);
		c->keys[i].sk_argument = datumCopy(keys[i].sk_argument, typbyval, typlen);
		MemoryContextSwitchTo(oldcxt);
	}
	c->xmin = snapshot->xmin;
	c->xmax = snapshot->xmax;
	c->xcnt = snapshot->xcnt;
	c->xip = copy_array(snapshot->xip, sizeof(TransactionId) * snapshot->xcnt);
	c->subxcnt = snapshot->subxcnt;
	c->subxip = copy_array(snapshot->subxip, sizeof(TransactionId) * snapshot->subxcnt);
	c->suboverflowed = snapshot->suboverflowed;
	c->takenDuringRecovery = snapshot->takenDuringRecovery;
	c->curcid = snapshot->curcid;
	c->set.nkeys = set->nkeys;
	c->set.keys = copy_array(set->keys, sizeof(uint64) * set->nkeys);
	c->set.nlossy = set->nlossy;
	c->set.lossy = copy_array(set->lossy, sizeof(uint64) * set->nlossy);
	c->next = setCache.head;
	setCache.head = c;
}

/* the set of other's entries that may meet its keys keys[0 .. n-1], from a bitmap scan */
static void
bitmap_set(Relation other, Snapshot snapshot, ScanKey keys, int n, SparseFilterSet *set)
{
	IndexScanDesc scan = index_beginscan_bitmap(other, snapshot, n);
	TIDBitmap  *tbm = tbm_create(work_mem * 1024L, NULL);

	index_rescan(scan, keys, n, NULL, 0);
	index_getbitmap(scan, tbm);
	index_endscan(scan);
	set_from_bitmap(set, tbm);
	tbm_free(tbm);
}

/*
 * The set read in TID order, with no bitmap, where other's access method
 * allows: false when the bitmap scan must make it.
 */
static bool
ordered_set(Relation heap, Relation other, Snapshot snapshot, ScanKey keys, int n, int64 maxKeys,
			SparseFilterSet *set)
{
	switch (other->rd_rel->relam)
	{
		case BTREE_AM_OID:
			return SparseIndexTids(heap, other, snapshot, keys, n, maxKeys, set);
		case GIN_AM_OID:
			return SparseGinTids(other, snapshot, keys, n, maxKeys, set);
		default:
			return false;
	}
}

/*
 * The filter set of index column attno's conditions (the scan keys keys[0 ..
 * n-1]), or false when no other index can find their rows, or when way does
 * not let it be made now (*deferred): SparseFilterBegin.
 */
static bool
column_set(IndexScanDesc scan, int attno, ScanKey keys, int n, SparseFilterWay way, int64 orderedKeys,
		   bool *deferred, SparseFilterSet *set)
{
	Relation	index = scan->indexRelation;
	Relation	heap = scan->heapRelation;
	List	   *oids;
	ListCell   *lc;
	Oid		   *opnos = palloc(sizeof(Oid) * n);
	Oid		   *argTypes = palloc(sizeof(Oid) * n);

	for (int i = 0; i < n; i++)
	{
		Oid			lefttype = index->rd_opcintype[attno - 1];

		opnos[i] = get_opfamily_member(index->rd_opfamily[attno - 1], lefttype,
									   OidIsValid(keys[i].sk_subtype) ? keys[i].sk_subtype : lefttype,
									   keys[i].sk_strategy);
		if (!OidIsValid(opnos[i]))
			elog(ERROR, "index \"%s\" has no operator of strategy %d for column %d",
				 RelationGetRelationName(index), keys[i].sk_strategy, attno);
	}
	if (heap == NULL)
		return false;
	oids = RelationGetIndexList(heap);
	foreach(lc, oids)
	{
		Oid			oid = lfirst_oid(lc);
		Relation	other;
		ScanKey		otherKeys;
		int			nother = 0;

		if (oid == RelationGetRelid(index))
			continue;
		/* held to the transaction's end, as the planner holds the indexes it looks at */
		other = try_relation_open(oid, AccessShareLock);
		if (other == NULL)
			continue;
		if (!covers_column(other, index, attno))
		{
			relation_close(other, NoLock);
			continue;
		}
		otherKeys = palloc(sizeof(ScanKeyData) * n);
		for (int i = 0; i < n; i++)
		{
			int			strategy = get_op_opfamily_strategy(opnos[i], other->rd_opfamily[0]);

			if (strategy != 0)
			{
				argTypes[nother] = OidIsValid(keys[i].sk_subtype) ? keys[i].sk_subtype :
					index->rd_opcintype[attno - 1];
				ScanKeyEntryInitialize(&otherKeys[nother++], 0, 1, strategy, keys[i].sk_subtype,
									   keys[i].sk_collation, get_opcode(opnos[i]), keys[i].sk_argument);
			}
		}
		if (nother == 0)
		{
			relation_close(other, NoLock);
			continue;
		}
		if (!cached_set(other, otherKeys, nother, argTypes, scan->xs_snapshot, set))
		{
			int64		maxKeys = way == SPARSE_FILTER_ORDERED ?
				Min(orderedKeys, SparseWorkMemKeys()) : SparseWorkMemKeys();
			bool		made = way != SPARSE_FILTER_CACHED &&
				ordered_set(heap, other, scan->xs_snapshot, otherKeys, nother, maxKeys, set);

			if (!made && way == SPARSE_FILTER_ANY)
			{
				bitmap_set(other, scan->xs_snapshot, otherKeys, nother, set);
				made = true;
			}
			if (!made)
			{
				*deferred = true;
				relation_close(other, NoLock);
				break;
			}
			cache_set(other, otherKeys, nother, argTypes, scan->xs_snapshot, set);
		}
		relation_close(other, NoLock);
		list_free(oids);
		return true;
	}
	list_free(oids);
	return false;
}

/*
 * The rows the scan's keys (conditions on columns after the first, none of
 * them NULL) may match, or NULL when no other index narrows them, or when a
 * set is one that way does not make now: SPARSE_FILTER_CACHED takes only a
 * set this transaction made already, SPARSE_FILTER_ORDERED also one read in
 * TID order (a btree's entries, a GIN index's posting lists) of at most
 * orderedKeys keys, SPARSE_FILTER_ANY any (a bitmap scan's at worst).
 */
SparseFilter *
SparseFilterBegin(IndexScanDesc scan, SparseFilterWay way, int64 orderedKeys)
{
	SparseFilter *f = palloc0(sizeof(SparseFilter));
	bool		deferred = false;

	f->sets = palloc(sizeof(SparseFilterSet) * Max(scan->numberOfKeys, 1));
	/* keys come ordered by column */
	for (int i = 0; i < scan->numberOfKeys && !deferred;)
	{
		int			attno = scan->keyData[i].sk_attno;
		int			n = 1;

		while (i + n < scan->numberOfKeys && scan->keyData[i + n].sk_attno == attno)
			n++;
		if (column_set(scan, attno, &scan->keyData[i], n, way, orderedKeys, &deferred, &f->sets[f->nsets]))
		{
			if (f->sets[f->nsets].nkeys == 0 && f->sets[f->nsets].nlossy == 0)
				f->empty = true;
			f->nsets++;
		}
		i += n;
	}
	if (f->nsets == 0 || deferred)
	{
		pfree(f->sets);
		pfree(f);
		return NULL;
	}
	return f;
}

/*
 * The first of a[0 .. n-1] (sorted) not below x, n if none, searched from
 * a[from] on (all before it below x): doubling steps, then halving.
 */
static int64
search_from(const uint64 *a, int64 n, int64 from, uint64 x)
{
	int64		step = 1,
				lo = from,
				hi;

	while (lo + step < n && a[lo + step] < x)
	{
		lo += step;
		step *= 2;
	}
	hi = Min(lo + step, n);
	while (lo < hi)
	{
		int64		mid = lo + (hi - lo) / 2;

		if (a[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Whether set holds key (its row, or its heap block as lossy); the search of
 * its keys starts at *at, which is left where it ended.
 */
static bool
set_has_from(const SparseFilterSet *set, int64 *at, uint64 key)
{
	uint64		blk = key >> 16;
	int64		lossyAt = search_from(set->lossy, set->nlossy, 0, blk);

	if (lossyAt < set->nlossy && set->lossy[lossyAt] == blk)
		return true;
	*at = search_from(set->keys, set->nkeys, *at, key);
	return *at < set->nkeys && set->keys[*at] == key;
}

/* whether the row at TID key may match every condition */
bool
SparseFilterTid(const SparseFilter *f, uint64 key)
{
	if (f->empty)
		return false;
	for (int i = 0; i < f->nsets; i++)
	{
		int64		at = 0;

		if (!set_has_from(&f->sets[i], &at, key))
			return false;
	}
	return true;
}

/*
 * About how many of rows rows, in heapBlocks heap blocks, f allows: each
 * set's keys and lossy blocks (at the table's rows per block), the sets
 * taken as independent.
 */
double
SparseFilterRows(const SparseFilter *f, double rows, BlockNumber heapBlocks)
{
	double		allowed = rows;
	double		perBlock = rows / Max(heapBlocks, 1);

	if (f->empty || rows <= 0)
		return 0;
	for (int i = 0; i < f->nsets; i++)
		allowed *= Min(1.0, (f->sets[i].nkeys + f->sets[i].nlossy * perBlock) / rows);
	return allowed;
}

/* the bits of set's rows in a segment of offsets slots per block, nslots slots */
static void
set_bits(const SparseFilterSet *set, uint64 *bits, uint32 offsets, int64 nslots)
{
	for (int64 i = 0; i < set->nkeys; i++)
	{
		uint64		key = set->keys[i];
		uint32		off = key & 0xFFFF;
		int64		slot;

		if (off < 1 || off > offsets)
			continue;			/* not a segment position: a pending row's */
		slot = SparseKeySlot(key, offsets);
		if (slot < nslots)
			bits[slot / 64] |= UINT64CONST(1) << (slot % 64);
	}
	for (int64 i = 0; i < set->nlossy; i++)
		for (int64 slot = (int64) set->lossy[i] * offsets;
			 slot < Min(((int64) set->lossy[i] + 1) * offsets, nslots); slot++)
			bits[slot / 64] |= UINT64CONST(1) << (slot % 64);
}

/*
 * A bit per slot of a segment with offsets slots per heap block and nslots
 * slots, set where the slot's row may match, in CurrentMemoryContext.
 */
static uint64 *
filter_bits(const SparseFilter *f, uint32 offsets, int64 nslots)
{
	Size		words = nslots / 64 + 1;
	uint64	   *bits = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(uint64) * words);

	memset(bits, 0, sizeof(uint64) * words);
	if (f->empty || offsets == 0)
		return bits;
	set_bits(&f->sets[0], bits, offsets, nslots);
	if (f->nsets > 1)
	{
		uint64	   *other = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(uint64) * words);

		for (int i = 1; i < f->nsets; i++)
		{
			memset(other, 0, sizeof(uint64) * words);
			set_bits(&f->sets[i], other, offsets, nslots);
			for (Size w = 0; w < words; w++)
				bits[w] &= other[w];
		}
		pfree(other);
	}
	return bits;
}

/* f->bits: filter_bits' of a segment of this geometry (SparseFilterSlot) */
void
SparseFilterSlots(SparseFilter *f, uint32 offsets, int64 nslots)
{
	if (f->bits != NULL && f->offsets == offsets && f->nslots == nslots)
		return;
	if (f->bits != NULL)
		pfree(f->bits);
	f->offsets = offsets;
	f->nslots = nslots;
	f->bits = filter_bits(f, offsets, nslots);
}

/*
 * The bits of the rows f allows for SparseFilterTidsFrom, a slot per offset
 * up to the largest of the first set's keys, where they take no more memory
 * than that set's keys or 256 kB: a key's lookup is then one bit, not a
 * search in every set (the searches were an eighth of a dense_flat scan
 * under a 10% filter, ad hoc, session 38). None where a set names lossy
 * heap blocks, which allow offsets no key names.
 */
static void
cursor_bits(const SparseFilter *f, SparseFilterCursor *c)
{
	const SparseFilterSet *first = &f->sets[0];
	uint32		offsets = 0;
	int64		nslots;

	for (int i = 0; i < f->nsets; i++)
		if (f->sets[i].nlossy > 0)
			return;
	if (first->nkeys == 0)
		return;
	for (int64 i = 0; i < first->nkeys; i++)
		offsets = Max(offsets, (uint32) (first->keys[i] & 0xFFFF));
	nslots = ((int64) (first->keys[first->nkeys - 1] >> 16) + 1) * offsets;
	if (nslots / 8 > Max(first->nkeys * (int64) sizeof(uint64), 256 * 1024))
		return;
	c->bits = filter_bits(f, offsets, nslots);
	c->offsets = offsets;
	c->nslots = nslots;
}

/*
 * SparseFilterTid's answer for each of n keys that come mostly in TID order
 * (a dense_flat row page's rows), in allowed[]: a bit each where
 * cursor_bits made them, or else each set's search starts where the last
 * key's ended (c->at, one per set), and from the start when a key goes
 * back. c is zeroed before the first call.
 */
void
SparseFilterTidsFrom(const SparseFilter *f, SparseFilterCursor *c, const uint64 *keys, int n,
					 bool *allowed)
{
	if (f->empty)
	{
		memset(allowed, 0, sizeof(bool) * n);
		return;
	}
	if (c->at == NULL)
	{
		c->at = palloc0(sizeof(int64) * f->nsets);
		cursor_bits(f, c);
	}
	if (c->bits != NULL)
	{
		for (int k = 0; k < n; k++)
		{
			uint32		off = keys[k] & 0xFFFF;
			int64		slot;

			allowed[k] = false;
			if (off < 1 || off > c->offsets)
				continue;
			slot = SparseKeySlot(keys[k], c->offsets);
			allowed[k] = slot < c->nslots && ((c->bits[slot / 64] >> (slot % 64)) & 1);
		}
		return;
	}
	for (int k = 0; k < n; k++)
	{
		uint64		key = keys[k];
		bool		all = true;

		if (key < c->lastKey)
			memset(c->at, 0, sizeof(int64) * f->nsets);
		c->lastKey = key;
		for (int i = 0; i < f->nsets && all; i++)
			all = set_has_from(&f->sets[i], &c->at[i], key);
		allowed[k] = all;
	}
}
