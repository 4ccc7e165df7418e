/*
 * sparse_gin.c: a filter set read from a GIN index's posting lists.
 *
 * A GIN bitmap scan (what sparse_filter.c's bitmap_set asks for) adds every
 * TID it finds to a TID bitmap, one hash lookup each, and the bitmap is then
 * sorted by page: at a 10% filter of 100,000 rows (10,000 TIDs on 10,000
 * heap pages) that is most of the 2 ms the set costs. A filter set needs
 * only a superset of the rows that may match, in TID order, and a posting
 * list is one, already sorted.
 *
 * GIN's own key setup (ginNewScanKey) extracts the conditions' entries. In
 * the default search mode a match must have at least one of its key's
 * entries; an entry is required when the key's consistent function, told
 * that entry is absent and nothing of the others, answers "no match" (as
 * ginget.c's startScanKey divides entries). Every row that may match has
 * every required entry, so the intersection of their posting lists is a
 * superset of the conditions' rows (for jsonb @>, whose entries are all
 * required, the rows GIN itself would return), and the executor rechecks
 * the conditions on each row returned. An entry is read as ginget.c's
 * startScanEntry reads an exact one: the entry page locked to find it, then
 * its posting tree's leaves left to right, each locked before the last is
 * released, or the list in its entry tuple. The lists are read from the
 * shortest, by GIN's own prediction of their sizes, and one much longer
 * than the set so far is left out with the rest (SPARSE_KEYS_PER_HEAP_FETCH):
 * a key that every row has costs only finding its entry.
 *
 * The pending list (fastupdate) holds entries not yet in the tree in no
 * order: when it is not empty the caller takes the bitmap scan, which reads
 * it. It is checked before the tree, as GIN's own scan reads it first: an
 * entry the cleanup moves goes into the tree before it leaves the list. Any
 * other case (a search mode that reads the whole index, no required entry
 * that is an exact key, every required list longer than the caller's bound:
 * work_mem's worth, or less early in a scan, sparse_scan.c) also goes to the
 * bitmap.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/gin_private.h"
#include "access/relscan.h"
#include "pgstat.h"

#include "sparse_index.h"

/*
 * The entries every row meeting the scan's keys has, as far as they are
 * exact keys (a partial match or a NULL is read by the bitmap scan alone),
 * in entries; how many.
 */
static int
required_entries(GinScanOpaque so, GinScanEntry *entries)
{
	int			n = 0;

	for (uint32 k = 0; k < so->nkeys; k++)
	{
		GinScanKey	key = &so->keys[k];

		if (key->searchMode != GIN_SEARCH_MODE_DEFAULT || key->excludeOnly)
			continue;
		for (uint32 i = 0; i < key->nentries; i++)
		{
			GinScanEntry entry = key->scanEntry[i];
			bool		required = key->nentries == 1;
			bool		listed = false;

			if (entry->isPartialMatch || entry->queryCategory != GIN_CAT_NORM_KEY)
				continue;
			if (!required)
			{
				for (uint32 j = 0; j < key->nentries; j++)
					key->entryRes[j] = j == i ? GIN_FALSE : GIN_MAYBE;
				required = key->triConsistentFn(key) == GIN_FALSE;
			}
			/* keys may share an entry */
			for (int j = 0; j < n && !listed; j++)
				listed = entries[j] == entry;
			if (required && !listed)
				entries[n++] = entry;
		}
	}
	return n;
}

static bool
pending_list_empty(Relation index)
{
	Buffer		meta = ReadBuffer(index, GIN_METAPAGE_BLKNO);
	bool		empty;

	LockBuffer(meta, GIN_SHARE);
	empty = GinPageGetMeta(BufferGetPage(meta))->head == InvalidBlockNumber;
	UnlockReleaseBuffer(meta);
	return empty;
}

/* append items[0 .. n-1]; false once they would pass the list's bound */
static bool
add_items(SparseKeyList *l, ItemPointer items, int n)
{
	for (int i = 0; i < n; i++)
		if (!SparseKeyListAdd(l, &items[i]))
			return false;
	return true;
}

/* the TIDs of the posting tree at root; false past the limit */
static bool
read_posting_tree(Relation index, BlockNumber root, Snapshot snapshot, SparseKeyList *r)
{
	GinBtreeData btree;
	GinBtreeStack *stack = ginScanBeginPostingTree(&btree, index, root, snapshot);
	Buffer		buffer = stack->buffer;
	bool		fits = true;

	IncrBufferRefCount(buffer);
	freeGinBtreeStack(stack);
	for (;;)
	{
		Page		page = BufferGetPage(buffer);

		if ((GinPageGetOpaque(page)->flags & GIN_DELETED) == 0)
		{
			ItemPointerData min;
			ItemPointer items;
			int			n;

			ItemPointerSetMin(&min);
			items = GinDataLeafPageGetItems(page, &n, min);
			fits = add_items(r, items, n);
			if (items != NULL)	/* none on a leaf VACUUM emptied */
				pfree(items);
		}
		if (!fits || GinPageRightMost(page))
			break;
		buffer = ginStepRight(buffer, index, GIN_SHARE);
	}
	UnlockReleaseBuffer(buffer);
	return fits;
}

/*
 * A required entry, found: a list's items (read at once, under the entry
 * page's lock) or a posting tree's root, and how many items it holds: exact
 * for a list; for a tree, the leaves its leftmost path predicts times the
 * items of its first leaf, as ginget.c predicts an entry's size.
 */
typedef struct FoundEntry
{
	SparseKeyList list;
	bool		fits;			/* the list is within the caller's bound */
	BlockNumber tree;			/* InvalidBlockNumber: a list, or no entry */
	double		predicted;
} FoundEntry;

static void
find_entry(Relation index, GinState *ginstate, GinScanEntry entry, Snapshot snapshot, int64 maxKeys,
		   FoundEntry *f)
{
	GinBtreeData btree;
	GinBtreeStack *stack;

	SparseKeyListInit(&f->list, maxKeys);
	f->fits = true;
	f->tree = InvalidBlockNumber;
	f->predicted = 0;
	ginPrepareEntryScan(&btree, entry->attnum, entry->queryKey, entry->queryCategory, ginstate);
	stack = ginFindLeafPage(&btree, true, false, snapshot);
	if (btree.findItem(&btree, stack))
	{
		Page		page = BufferGetPage(stack->buffer);
		IndexTuple	itup = (IndexTuple) PageGetItem(page, PageGetItemId(page, stack->off));

		if (GinIsPostingTree(itup))
			f->tree = GinGetPostingTree(itup);
		else if (GinGetNPosting(itup) > 0)
		{
			int			n;
			ItemPointer items = ginReadTuple(ginstate, entry->attnum, itup, &n);

			f->fits = add_items(&f->list, items, n);
			f->predicted = n;
			pfree(items);
		}
	}
	/*
	 * An entry is never deleted and its posting tree never becomes a list
	 * again, so the entry page is released before the tree is read, as GIN's
	 * scan does (a lock held down into the tree could deadlock with VACUUM).
	 */
	LockBuffer(stack->buffer, GIN_UNLOCK);
	freeGinBtreeStack(stack);
	if (BlockNumberIsValid(f->tree))
	{
		GinBtreeData tree;
		GinBtreeStack *leaf = ginScanBeginPostingTree(&tree, index, f->tree, snapshot);
		ItemPointerData min;
		ItemPointer items;
		int			n;

		ItemPointerSetMin(&min);
		items = GinDataLeafPageGetItems(BufferGetPage(leaf->buffer), &n, min);
		f->predicted = (double) leaf->predictNumber * Max(n, 1);
		if (items != NULL)		/* none on a leaf VACUUM emptied (never deleted
								 * where it is the leftmost) */
			pfree(items);
		LockBuffer(leaf->buffer, GIN_UNLOCK);
		freeGinBtreeStack(leaf);
	}
}

static int
by_predicted_size(const void *a, const void *b)
{
	double		x = ((const FoundEntry *) a)->predicted;
	double		y = ((const FoundEntry *) b)->predicted;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* the keys of a[0 .. *na-1] also in b[0 .. nb-1] (both sorted), kept in a */
static void
intersect(uint64 *a, int64 *na, const uint64 *b, int64 nb)
{
	int64		n = 0;

	for (int64 i = 0, j = 0; i < *na && j < nb;)
	{
		if (a[i] < b[j])
			i++;
		else if (a[i] > b[j])
			j++;
		else
		{
			a[n++] = a[i++];
			j++;
		}
	}
	*na = n;
}

/*
 * The TID keys (sorted) of a superset of the rows that meet GIN index
 * other's scan keys keys[0 .. n-1], from its required entries' posting
 * lists, leaving out any that holds more than maxKeys; false when the bitmap
 * scan must find them instead (the file's comment), or when every list does.
 */
bool
SparseGinTids(Relation other, Snapshot snapshot, ScanKey keys, int n, int64 maxKeys, SparseFilterSet *set)
{
	IndexScanDesc scan = index_beginscan_bitmap(other, snapshot, n);
	GinScanOpaque so = (GinScanOpaque) scan->opaque;
	GinScanEntry *entries;
	int			nentries;
	FoundEntry *found;
	bool		made = false;

	set->keys = NULL;
	set->nkeys = 0;
	set->lossy = NULL;
	set->nlossy = 0;
	index_rescan(scan, keys, n, NULL, 0);
	ginNewScanKey(scan);
	if (so->isVoidRes)
	{
		/* a key no row can meet */
		index_endscan(scan);
		return true;
	}
	entries = palloc(sizeof(GinScanEntry) * Max(so->totalentries, 1));
	nentries = required_entries(so, entries);
	if (nentries == 0 || !pending_list_empty(other))
	{
		index_endscan(scan);
		return false;
	}
	pgstat_count_index_scan(other);
	found = palloc(sizeof(FoundEntry) * nentries);
	for (int i = 0; i < nentries; i++)
		find_entry(other, &so->ginstate, entries[i], snapshot, maxKeys, &found[i]);
	qsort(found, nentries, sizeof(FoundEntry), by_predicted_size);
	for (int i = 0; i < nentries && !(made && set->nkeys == 0); i++)
	{
		FoundEntry *f = &found[i];

		/*
		 * The smallest first. A list much longer than the set costs more to
		 * read than the heap fetches of the rows it would take out (the
		 * executor rechecks each row the set holds), and the rest are longer.
		 */
		if (made && f->predicted > (double) set->nkeys * SPARSE_KEYS_PER_HEAP_FETCH)
			break;
		if (BlockNumberIsValid(f->tree))
			f->fits = read_posting_tree(other, f->tree, snapshot, &f->list);
		if (!f->fits)
		{
			/*
			 * Past the bound (jsonb_ops' entry for a key every row has): the
			 * other entries' intersection is a superset all the same.
			 */
			continue;
		}
		/* a posting list is in TID order; a set must be */
		SparseKeyListSort(&f->list);
		if (!made)
		{
			set->keys = f->list.keys;
			set->nkeys = f->list.n;
			made = true;
		}
		else
			intersect(set->keys, &set->nkeys, f->list.keys, f->list.n);
	}
	index_endscan(scan);
	return made;
}
