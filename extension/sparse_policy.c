/*
 * sparse_policy.c: a role's row-level-security policies against a partial
 * index's predicate.
 *
 * A BM25 index's statistics count every row it holds, so a role under
 * row-level security may not read them: they would tell it which words the
 * rows it cannot see use. A partial index whose predicate admits exactly the
 * rows the role's policies let it select holds no such row. This is proven
 * with the planner's own predicate prover (predtest.c), both ways: the
 * policies' quals, as the rewriter would add them to the role's SELECT,
 * imply the predicate, and the predicate implies them. The prover is
 * conservative (a proof it cannot make is a refusal) and sees through no
 * function. The policies' stable parts are evaluated first (a policy on
 * current_user is one tenant's constant for the statement), so the proof
 * holds for every row while the statement runs.
 *
 * What such an index counts beyond the rows the role sees now are versions
 * of its own rows: deleted or updated away and not yet vacuumed, or written
 * by a transaction not yet committed. Rows of other tenants never enter it.
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "rewrite/rowsecurity.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "sparse_index.h"

/*
 * The quals row-level security adds to the current role's SELECT of heap,
 * implicitly ANDed (a default-deny policy is a constant false), simplified as
 * the planner simplifies quals before it proves a partial index, and with
 * their stable parts (current_user, current_setting()) evaluated now, as the
 * planner estimates them: the statement that uses what the proof allows sees
 * the same values. NIL when a qual holds a sub-select, which the prover
 * cannot see into.
 */
static List *
select_policy_quals(Relation heap)
{
	Query	   *query = makeNode(Query);
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	PlannerInfo *root = makeNode(PlannerInfo);
	List	   *quals = NIL;
	List	   *withCheckOptions = NIL;
	bool		hasRowSecurity = false;
	bool		hasSubLinks = false;

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(heap);
	rte->relkind = heap->rd_rel->relkind;
	rte->rellockmode = AccessShareLock;
	rte->requiredPerms = ACL_SELECT;
	rte->checkAsUser = InvalidOid;
	query->commandType = CMD_SELECT;
	query->resultRelation = 0;
	query->rtable = list_make1(rte);
	get_row_security_policies(query, rte, 1, &quals, &withCheckOptions,
							  &hasRowSecurity, &hasSubLinks);
	if (hasSubLinks)
		return NIL;
	root->glob = makeNode(PlannerGlobal);
	return (List *) estimate_expression_value(root, (Node *) quals);
}

/* whether index's predicate admits exactly the rows quals (select_policy_quals) do */
static bool
predicate_is(Relation index, List *quals)
{
	List	   *predicate = RelationGetIndexPredicate(index);

	return predicate != NIL && predicate_implied_by(quals, predicate, false) &&
		predicate_implied_by(predicate, quals, false);
}

/*
 * Whether index (on heap, which the caller holds locked) is a partial index
 * whose predicate admits exactly the rows the current role's row-level-
 * security policies let it select from heap. No quals (a sub-select) imply
 * no predicate.
 */
bool
SparsePolicyIsPredicate(Relation heap, Relation index)
{
	return predicate_is(index, select_policy_quals(heap));
}

/* whether two indexes on one table index the same columns the same way */
static bool
same_key(Relation a, Relation b)
{
	Form_pg_index ia = a->rd_index;
	Form_pg_index ib = b->rd_index;

	if (a->rd_rel->relam != b->rd_rel->relam || ia->indnatts != ib->indnatts)
		return false;
	for (int i = 0; i < ia->indnatts; i++)
		if (ia->indkey.values[i] != ib->indkey.values[i] ||
			a->rd_opfamily[i] != b->rd_opfamily[i] ||
			a->rd_opcintype[i] != b->rd_opcintype[i])
			return false;
	return equal(RelationGetIndexExpressions(a), RelationGetIndexExpressions(b));
}

/*
 * _bm25_policy_index(index regclass) returns regclass: a valid partial index
 * on index's table that indexes what index does and whose predicate is
 * exactly the current role's row-level-security policies there
 * (SparsePolicyIsPredicate), the one of lowest OID; NULL if there is none or
 * no policy applies to the role. Its statistics are those of the rows the
 * role may see (as the index counts them), which _bm25query then gives it.
 */
PG_FUNCTION_INFO_V1(bm25_policy_index);
Datum
bm25_policy_index(PG_FUNCTION_ARGS)
{
	Oid			found = InvalidOid;
	Relation	heap;
	Relation	index = SparseOpenBM25Index(PG_GETARG_OID(0), &heap);
	List	   *quals;
	List	   *indexes;
	ListCell   *lc;

	if (check_enable_rls(RelationGetRelid(heap), InvalidOid, false) != RLS_ENABLED)
	{
		index_close(index, AccessShareLock);
		table_close(heap, AccessShareLock);
		PG_RETURN_NULL();
	}
	/* the policies once: every index is proven against the same quals */
	quals = select_policy_quals(heap);
	indexes = RelationGetIndexList(heap);
	foreach(lc, indexes)
	{
		Relation	other = index_open(lfirst_oid(lc), AccessShareLock);
		bool		match = other->rd_index->indisvalid && other->rd_index->indisready &&
			other->rd_index->indislive && same_key(index, other) &&
			predicate_is(other, quals);

		index_close(other, AccessShareLock);
		if (match)
		{
			found = lfirst_oid(lc);
			break;
		}
	}
	index_close(index, AccessShareLock);
	table_close(heap, AccessShareLock);
	if (!OidIsValid(found))
		PG_RETURN_NULL();
	PG_RETURN_OID(found);
}
