/*
 * sparse_slots.c: the arrays of per-row sums that a scan ranking every row
 * at once fills (rank_all in sparse_scan.c), kept for the backend's next
 * scans.
 *
 * Such an array has a double per heap tuple position: 1.3 MB at 100,000
 * rows. Allocated and freed by every scan, it comes back from the kernel as
 * new pages, one page fault and one zeroed page per 4 kB: at 100,000 rows
 * that cost a hybrid_search call (a sparse and a BM25 scan) more than 1 ms,
 * a tenth of its work. So up to SLOT_ARRAYS arrays, together at most
 * hybrid_search.sparse_kept_memory (32 MB: a sparse and a BM25 scan of a
 * million rows), stay allocated (memory context "sparse_inverted slot
 * arrays") and are lent to scans, which give them back when they end or
 * rescan. A scan ended by an error gives nothing back: at the end of each
 * transaction every array is free again (no scan outlives its transaction:
 * a holdable cursor is materialised at commit). A scan that finds no free
 * array within that budget allocates its own in its memory context.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"

#include "sparse_index.h"

#define SLOT_ARRAYS 4

typedef struct SlotArray
{
	double	   *sums;			/* NULL: no array here */
	Size		size;			/* its bytes */
	bool		lent;
} SlotArray;

static SlotArray slotArrays[SLOT_ARRAYS];
static MemoryContext slotCxt;	/* theirs, under TopMemoryContext */

/* every array is free at a transaction's end, whatever became of its scan */
static void
slot_arrays_xact_end(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT)
		for (int i = 0; i < SLOT_ARRAYS; i++)
			slotArrays[i].lent = false;
}

/* bytes the kept arrays hold, lent or free */
static Size
kept_bytes(void)
{
	Size		kept = 0;

	for (int i = 0; i < SLOT_ARRAYS; i++)
		kept += slotArrays[i].sums ? slotArrays[i].size : 0;
	return kept;
}

/* what hybrid_search.sparse_kept_memory lets the kept arrays hold */
static inline Size
kept_limit(void)
{
	return (Size) sparse_kept_memory * 1024;
}

void
SparseSlotArraysInit(void)
{
	RegisterXactCallback(slot_arrays_xact_end, NULL);
}

/*
 * An array of nslots doubles, not zeroed (rank_all zeroes it a window at a
 * time, as it fills it): a kept one when one is free and the kept arrays stay
 * within hybrid_search.sparse_kept_memory, else one allocated in cxt.
 */
double *
SparseBorrowSlots(MemoryContext cxt, int64 nslots)
{
	Size		size = Max(nslots, 1) * sizeof(double);
	SlotArray  *fit = NULL;
	SlotArray  *small = NULL;
	SlotArray  *empty = NULL;

	for (int i = 0; i < SLOT_ARRAYS; i++)
	{
		SlotArray  *s = &slotArrays[i];

		if (s->sums == NULL)
			empty = empty ? empty : s;
		else if (!s->lent)
		{
			if (s->size >= size && (fit == NULL || s->size < fit->size))
				fit = s;
			else if (s->size < size)
				small = s;
		}
	}
	if (fit == NULL && (small || empty))
	{
		/* a free array too small is replaced rather than kept beside the new one */
		SlotArray  *s = small ? small : empty;

		if (kept_bytes() - (s->sums ? s->size : 0) + size <= kept_limit())
		{
			if (s->sums)
				pfree(s->sums);
			if (slotCxt == NULL)
				slotCxt = AllocSetContextCreate(TopMemoryContext, "sparse_inverted slot arrays",
												ALLOCSET_SMALL_SIZES);
			s->sums = MemoryContextAllocExtended(slotCxt, size, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
			s->size = s->sums ? size : 0;
			fit = s->sums ? s : NULL;
		}
	}
	if (fit == NULL)
		return MemoryContextAllocExtended(cxt, size, MCXT_ALLOC_HUGE);
	fit->lent = true;
	return fit->sums;
}

/*
 * sums back: a kept array is free again (or freed, if the setting has been
 * lowered below what is kept), one of the scan's own is freed
 */
void
SparseReturnSlots(double *sums)
{
	if (sums == NULL)
		return;
	for (int i = 0; i < SLOT_ARRAYS; i++)
		if (slotArrays[i].sums == sums)
		{
			slotArrays[i].lent = false;
			if (kept_bytes() > kept_limit())
			{
				pfree(sums);
				slotArrays[i].sums = NULL;
				slotArrays[i].size = 0;
			}
			return;
		}
	pfree(sums);
}
