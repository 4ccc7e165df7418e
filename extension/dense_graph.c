/*
 * dense_graph.c: the graph a dense_flat index with graph_degree walks,
 * made in memory at CREATE INDEX.
 *
 * One layer, as DiskANN's Vamana: each node links to at most degree others,
 * chosen from the nodes a search for it met by the rule that keeps a
 * candidate only if no node already kept is much nearer to it (alpha), so
 * that a node keeps links into other regions besides its nearest. A sample
 * of the nodes are the entries every search starts from (DENSE_MAX_ENTRIES);
 * they are inserted first, then the rest one by one: a search of width ef
 * from the entries, links chosen by that rule among the nodes it expanded
 * and found, and a link back from each neighbour, whose own links are
 * chosen again by the rule once they overflow a slack of half the degree. The
 * distances are cosine distances of the int8 codes (the stored norms are
 * the vectors'): the graph only guides a walk, which bounds and the
 * executor's recheck order exactly.
 *
 * VACUUM links a tail the same way when the graph fits its memory
 * (dense_merge.c): the graph's nodes are read back with their links, the
 * tail's added, and each linked as the build links a node; a search passes
 * through a dead node and never links to it, and the nodes whose links
 * changed are marked, so that only their pages are written.
 */
#include "postgres.h"

#include <math.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DENSE_HAVE_AVX512 1
#endif

#include "commands/vacuum.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "dense_flat.h"
#include "sparse_index.h"

/* a candidate link: a node and its distance to the node it is for */
typedef struct Neighbor
{
	float4		dist;
	int32		id;
} Neighbor;

/* codes are kept padded to a multiple of 64 so that the sums need no tail */
#define CODES_STRIDE(dims) (((dims) + 63) & ~63)

static int32
dot8(const int8 *a, const int8 *b, int n)
{
	int32		s = 0;

	for (int i = 0; i < n; i++)
		s += (int32) a[i] * b[i];
	return s;
}

#ifdef DENSE_HAVE_AVX512
/* the same sum, n a multiple of 64: pairs of int16 products (vpmaddwd) */
__attribute__((target("avx512f,avx512bw")))
static int32
dot8_avx512(const int8 *a, const int8 *b, int n)
{
	__m512i		acc0 = _mm512_setzero_si512(),
				acc1 = _mm512_setzero_si512();

	for (int i = 0; i < n; i += 64)
	{
		__m512i		a0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *) (a + i)));
		__m512i		b0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *) (b + i)));
		__m512i		a1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *) (a + i + 32)));
		__m512i		b1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *) (b + i + 32)));

		acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(a0, b0));
		acc1 = _mm512_add_epi32(acc1, _mm512_madd_epi16(a1, b1));
	}
	return _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
}
#endif

/* nodes a and b's distance: 1 - their codes' cosine (1 for a zero vector) */
static inline float4
distance(const DenseGraph *g, int32 a, int32 b)
{
	const int8 *ca = g->codes + (Size) a * g->stride;
	const int8 *cb = g->codes + (Size) b * g->stride;
	int32		s;

#ifdef DENSE_HAVE_AVX512
	if (DenseSimd())
		s = dot8_avx512(ca, cb, g->stride);
	else
#endif
		s = dot8(ca, cb, g->stride);
	return 1.0f - g->factor[a] * g->factor[b] * (float4) s;
}

/* the same distance for two codes items of dims dimensions, unpadded */
float4
DenseCodesDistance(const DenseCodes *a, const DenseCodes *b, int dims)
{
	int			whole = dims & ~63;
	int32		s = 0;

	if (a->norm == 0 || b->norm == 0)
		return 1;
#ifdef DENSE_HAVE_AVX512
	if (DenseSimd())
		s = dot8_avx512(a->codes, b->codes, whole);
	else
#endif
		whole = 0;
	s += dot8(a->codes + whole, b->codes + whole, dims - whole);
	return 1.0f - a->scale / a->norm * (b->scale / b->norm) * (float4) s;
}

DenseGraph *
DenseGraphCreate(Relation index, int dims, int degree, int ef)
{
	DenseGraph *g = palloc0(sizeof(DenseGraph));

	g->index = index;
	g->dims = dims;
	g->stride = CODES_STRIDE(dims);
	g->degree = degree;
	g->capacity = degree + degree / 2;
	g->ef = Max(ef, degree);
	g->memoryLimit = (Size) maintenance_work_mem * 1024;
	return g;
}

/* memory a node takes in the build or a merge */
Size
DenseGraphNodeSize(const DenseGraph *g)
{
	return g->stride + sizeof(float4) + sizeof(int32) * g->capacity + sizeof(uint16) + sizeof(uint32) +
		3 * sizeof(Neighbor) + 2 * sizeof(bool);
}

/* whether node id is a dead row's, which a search passes through and never links to */
static inline bool
is_dead(const DenseGraph *g, int32 id)
{
	return g->dead != NULL && g->dead[id];
}

/* note that node id's links changed, for a merge to write */
static inline void
touch(DenseGraph *g, int32 id)
{
	if (g->dirty != NULL)
		g->dirty[id] = true;
}

/*
 * Add a node; false, adding nothing, once the build's memory would exceed
 * maintenance_work_mem.
 */
bool
DenseGraphAdd(DenseGraph *g, const DenseCodes *c)
{
	if (g->n == g->max)
	{
		int64		max = Min(Max(g->max * 2, 1024), (int64) (g->memoryLimit / DenseGraphNodeSize(g)));

		max = Min(max, (int64) PG_INT32_MAX);
		if (g->n >= max)
			return false;
		if (g->codes == NULL)
		{
			g->codes = palloc_extended((Size) max * g->stride, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
			g->factor = palloc_extended(sizeof(float4) * max, MCXT_ALLOC_HUGE);
		}
		else
		{
			g->codes = repalloc_huge(g->codes, (Size) max * g->stride);
			memset(g->codes + (Size) g->n * g->stride, 0, (Size) (max - g->n) * g->stride);
			g->factor = repalloc_huge(g->factor, sizeof(float4) * max);
		}
		g->max = max;
	}
	memcpy(g->codes + (Size) g->n * g->stride, c->codes, g->dims);
	g->factor[g->n] = c->norm > 0 ? c->scale / c->norm : 0;
	g->n++;
	return true;
}

/* binary heaps of Neighbor: min by dist (less) or max (!less) */
static void
heap_push(Neighbor *h, int *n, Neighbor x, bool less)
{
	int			i = (*n)++;

	while (i > 0)
	{
		int			parent = (i - 1) / 2;

		if (less ? !(x.dist < h[parent].dist) : !(x.dist > h[parent].dist))
			break;
		h[i] = h[parent];
		i = parent;
	}
	h[i] = x;
}

static Neighbor
heap_pop(Neighbor *h, int *n, bool less)
{
	Neighbor	top = h[0],
				x = h[--(*n)];
	int			i = 0;

	for (;;)
	{
		int			c = 2 * i + 1;

		if (c >= *n)
			break;
		if (c + 1 < *n && (less ? h[c + 1].dist < h[c].dist : h[c + 1].dist > h[c].dist))
			c++;
		if (less ? !(h[c].dist < x.dist) : !(h[c].dist > x.dist))
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n > 0)
		h[i] = x;
	return top;
}

static int
neighbor_cmp(const void *a, const void *b)
{
	float4		x = ((const Neighbor *) a)->dist,
				y = ((const Neighbor *) b)->dist;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * The candidates for node p's links: the nodes a greedy search from the
 * entries expanded (the path there, as Vamana takes: its far nodes give the
 * links into other regions) and the ef nearest it found, into found,
 * sorted by distance; returns how many. Dead nodes are passed through, not
 * found.
 */
static int
search(DenseGraph *g, int32 p, int nentries, Neighbor *found)
{
	Neighbor   *frontier = g->frontier;
	int			nfrontier = 0,
				nfound = 0,
				nexpanded = 0;

	if (++g->stamp == 0)
	{
		memset(g->visited, 0, sizeof(uint32) * g->n);
		g->stamp = 1;
	}
	g->visited[p] = g->stamp;
	for (int e = 0; e < nentries; e++)
	{
		Neighbor	x = {distance(g, p, g->entries[e]), g->entries[e]};

		if (g->visited[x.id] == g->stamp)
			continue;
		g->visited[x.id] = g->stamp;
		heap_push(frontier, &nfrontier, x, true);
		if (is_dead(g, x.id))
			continue;
		heap_push(found, &nfound, x, false);
		if (nfound > g->ef)
			(void) heap_pop(found, &nfound, false);
	}
	while (nfrontier > 0)
	{
		Neighbor	near = heap_pop(frontier, &nfrontier, true);
		const int32 *links = g->links + (Size) near.id * g->capacity;

		if (nfound >= g->ef && near.dist > found[0].dist)
			break;
		if (!is_dead(g, near.id))
			g->expanded[nexpanded++] = near;
		for (int l = 0; l < g->nlinks[near.id]; l++)
		{
			int32		id = links[l];
			Neighbor	x;

			if (g->visited[id] == g->stamp)
				continue;
			g->visited[id] = g->stamp;
			x.id = id;
			x.dist = distance(g, p, id);
			if (nfound < g->ef || x.dist < found[0].dist)
			{
				heap_push(frontier, &nfrontier, x, true);
				if (is_dead(g, id))
					continue;
				heap_push(found, &nfound, x, false);
				if (nfound > g->ef)
					(void) heap_pop(found, &nfound, false);
			}
		}
	}
	memcpy(found + nfound, g->expanded, sizeof(Neighbor) * nexpanded);
	nfound += nexpanded;
	qsort(found, nfound, sizeof(Neighbor), neighbor_cmp);
	return nfound;
}

/*
 * Choose node p's links from candidates cand (sorted by distance to p, p
 * not among them) by the rule: a candidate is kept unless a node kept
 * before it is nearer to it, by DENSE_GRAPH_ALPHA, than p is. Sets p's links.
 */
static void
choose_links(DenseGraph *g, int32 p, const Neighbor *cand, int ncand)
{
	int32	   *links = g->links + (Size) p * g->capacity;
	int			kept = 0;

	for (int i = 0; i < ncand && kept < g->degree; i++)
	{
		bool		keep = true;

		if (i > 0 && cand[i].id == cand[i - 1].id)
			continue;
		for (int k = 0; k < kept && keep; k++)
			keep = DENSE_GRAPH_ALPHA * distance(g, links[k], cand[i].id) > cand[i].dist;
		if (keep)
			links[kept++] = cand[i].id;
	}
	g->nlinks[p] = (uint16) kept;
	touch(g, p);
}

/* node q's links and p as candidates, by distance to q */
static int
links_as_candidates(DenseGraph *g, int32 q, int32 p, Neighbor *cand)
{
	const int32 *links = g->links + (Size) q * g->capacity;
	int			n = 0;

	for (int l = 0; l < g->nlinks[q]; l++)
		cand[n++] = (Neighbor) {distance(g, q, links[l]), links[l]};
	if (p >= 0)
		cand[n++] = (Neighbor) {distance(g, q, p), p};
	qsort(cand, n, sizeof(Neighbor), neighbor_cmp);
	return n;
}

/* link node p into the graph, its search starting from the first nentries entries */
static void
insert_from(DenseGraph *g, int32 p, int nentries)
{
	int			nfound = search(g, p, nentries, g->found);

	choose_links(g, p, g->found, nfound);
	for (int l = 0; l < g->nlinks[p]; l++)
	{
		int32		q = g->links[(Size) p * g->capacity + l];

		if (g->nlinks[q] < g->capacity)
		{
			g->links[(Size) q * g->capacity + g->nlinks[q]++] = p;
			touch(g, q);
		}
		else
			choose_links(g, q, g->cand, links_as_candidates(g, q, p, g->cand));
	}
}

/*
 * Give each node no other links to (choosing a node's links again drops
 * some, and copies of a row are dropped for the row: about 7% of the nodes
 * of a test's clustered corpus) a link from its nearest neighbour with room,
 * or else in place of that neighbour's farthest link to a node others also
 * link to. Entries need none: every walk meets them.
 */
static void
link_orphans(DenseGraph *g)
{
	int32	   *indegree = palloc_extended(sizeof(int32) * g->n, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);

	for (int64 i = 0; i < g->n; i++)
		for (int l = 0; l < g->nlinks[i]; l++)
			indegree[g->links[(Size) i * g->capacity + l]]++;
	for (int e = 0; e < g->nentries; e++)
		indegree[g->entries[e]]++;
	for (int64 p = 0; p < g->n; p++)
	{
		const int32 *links = g->links + (Size) p * g->capacity;

		if (indegree[p] > 0 || g->nlinks[p] == 0 || is_dead(g, (int32) p))
			continue;
		for (int l = 0; l < g->nlinks[p] && indegree[p] == 0; l++)
		{
			int32		q = links[l];

			if (g->nlinks[q] < g->degree)
			{
				g->links[(Size) q * g->capacity + g->nlinks[q]++] = (int32) p;
				indegree[p]++;
				touch(g, q);
			}
		}
		for (int l = 0; l < g->nlinks[p] && indegree[p] == 0; l++)
		{
			int32	   *qlinks = g->links + (Size) links[l] * g->capacity;

			for (int m = g->nlinks[links[l]] - 1; m >= 0; m--)
				if (indegree[qlinks[m]] > 1)
				{
					indegree[qlinks[m]]--;
					qlinks[m] = (int32) p;
					indegree[p]++;
					touch(g, links[l]);
					break;
				}
		}
	}
	pfree(indegree);
}

/* the links of the g->n nodes added, and a search's arrays */
static void
prepare(DenseGraph *g)
{
	g->links = palloc_extended(sizeof(int32) * g->capacity * (Size) g->n, MCXT_ALLOC_HUGE);
	g->nlinks = palloc_extended(sizeof(uint16) * g->n, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	g->visited = palloc_extended(sizeof(uint32) * g->n, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	g->frontier = palloc_extended(sizeof(Neighbor) * g->n, MCXT_ALLOC_HUGE);
	g->found = palloc_extended(sizeof(Neighbor) * (g->ef + 2 + g->n), MCXT_ALLOC_HUGE);
	g->expanded = palloc_extended(sizeof(Neighbor) * g->n, MCXT_ALLOC_HUGE);
	g->cand = palloc(sizeof(Neighbor) * (g->capacity + 2));
}

/* the lists past the degree chosen again within it, then the orphans linked */
static void
finish(DenseGraph *g)
{
	for (int64 i = 0; i < g->n; i++)
		if (g->nlinks[i] > g->degree)
			choose_links(g, (int32) i, g->cand, links_as_candidates(g, (int32) i, -1, g->cand));
	link_orphans(g);
}

void
DenseGraphBuild(DenseGraph *g)
{
	if (g->n == 0)
		return;
	prepare(g);
	/* the entries first, linked among themselves, then the rest */
	g->nentries = (int) Min(g->n, (int64) DENSE_MAX_ENTRIES);
	g->entries = palloc(sizeof(int32) * g->nentries);
	for (int e = 0; e < g->nentries; e++)
	{
		g->entries[e] = (int32) (e * g->n / g->nentries);
		CHECK_FOR_INTERRUPTS();
		if (e > 0)
			insert_from(g, g->entries[e], e);
	}
	for (int64 i = 0, e = 0; i < g->n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (e < g->nentries && g->entries[e] == (int32) i)
			e++;
		else
			insert_from(g, (int32) i, g->nentries);
	}
	finish(g);
}

/*
 * For a merge, once every node is added: room for their links, which it
 * sets (DenseGraphSetLinks), and for the entries it adds
 * (DENSE_MAX_ENTRIES); dead marks the dead rows' nodes, which the graph
 * keeps.
 */
void
DenseGraphPrepareMerge(DenseGraph *g, bool *dead)
{
	prepare(g);
	g->dead = dead;
	g->dirty = palloc_extended(sizeof(bool) * g->n, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	g->entries = palloc(sizeof(int32) * DENSE_MAX_ENTRIES);
	g->nentries = 0;
}

/* node p's links as the pages hold them (at most the degree) */
void
DenseGraphSetLinks(DenseGraph *g, int32 p, const int32 *ids, int n)
{
	Assert(n <= g->degree);
	memcpy(g->links + (Size) p * g->capacity, ids, sizeof(int32) * n);
	g->nlinks[p] = (uint16) n;
}

/*
 * Link the nodes from first on (the tail's live rows) into the graph, in
 * order, as the build links its nodes; one in DENSE_MERGE_ENTRY_EVERY of
 * them becomes an entry while there is room (the first of an empty graph
 * links to nothing and is one). Returns how many were linked; g->dirty
 * marks every node whose links changed.
 */
int64
DenseGraphMerge(DenseGraph *g, int64 first)
{
	int64		merged = 0;

	for (int64 p = first; p < g->n; p++)
	{
		vacuum_delay_point();
		insert_from(g, (int32) p, g->nentries);
		if (g->nentries < DENSE_MAX_ENTRIES && merged % DENSE_MERGE_ENTRY_EVERY == 0)
			g->entries[g->nentries++] = (int32) p;
		merged++;
	}
	finish(g);
	return merged;
}
