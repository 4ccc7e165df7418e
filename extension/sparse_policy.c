/*
 * sparse_policy.c: a role's row-level-security policies against a partial
 * index's predicate, or as the rows another index finds.
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
 *
 * Without such a copy, policies that come to one condition "expression op
 * constant" (tenant = 3, or metadata->>'tenant' = current_user once
 * evaluated) name their rows exactly through a btree on that expression
 * (SparsePolicyRows): its entries for that constant are every version of
 * the role's rows, in the same sense, and no other row.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/stratnum.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_index.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "rewrite/rowsecurity.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

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

/*
 * The one condition "expression op constant" that quals come to: the
 * expression (a relabeling stripped, as the planner matches index columns),
 * the operator with the expression on its left, and the constant; false if
 * quals are anything else or the constant is NULL.
 */
static bool
policy_condition(List *quals, Node **expr, Oid *opno, Const **value, Oid *collation)
{
	OpExpr	   *op;
	Node	   *left,
			   *right;

	if (list_length(quals) != 1 || !IsA(linitial(quals), OpExpr))
		return false;
	op = linitial(quals);
	if (list_length(op->args) != 2)
		return false;
	left = linitial(op->args);
	right = lsecond(op->args);
	*opno = op->opno;
	if (IsA(left, Const) && !IsA(right, Const))
	{
		Node	   *t = left;

		left = right;
		right = t;
		*opno = get_commutator(op->opno);
	}
	if (!IsA(right, Const) || ((Const *) right)->constisnull || !OidIsValid(*opno))
		return false;
	while (IsA(left, RelabelType))
		left = (Node *) ((RelabelType *) left)->arg;
	*expr = left;
	*value = (Const *) right;
	*collation = op->inputcollid;
	return true;
}

/*
 * Whether other, an index of heap, has expr as its first column, holds every
 * row (no predicate), and may be used by this transaction (as the planner
 * asks: an index built over broken HOT chains is not for snapshots older
 * than it).
 */
static bool
indexes_expression(Relation other, Node *expr)
{
	int16		attno = other->rd_index->indkey.values[0];

	if (!other->rd_index->indisvalid || other->rd_indam->amgettuple == NULL ||
		!heap_attisnull(other->rd_indextuple, Anum_pg_index_indpred, NULL))
		return false;
	if (other->rd_index->indcheckxmin &&
		!TransactionIdPrecedes(HeapTupleHeaderGetXmin(other->rd_indextuple->t_data), TransactionXmin))
		return false;
	if (attno != 0)
		return IsA(expr, Var) && ((Var *) expr)->varno == 1 && ((Var *) expr)->varlevelsup == 0 &&
			((Var *) expr)->varattno == attno;
	return equal(expr, linitial(RelationGetIndexExpressions(other)));
}

/*
 * Whether other's first column, searched with strategy, compares as the
 * condition's collation does: the same collation, or none, or btree
 * equality under two deterministic collations, which is equality of bytes
 * under both (metadata->>'tenant' = current_user compares under "C", name's
 * collation, and a btree on the text has the default one).
 */
static bool
collation_fits(Relation other, int strategy, Oid collation)
{
	Oid			indexed = other->rd_indcollation[0];

	if (!OidIsValid(indexed) || indexed == collation)
		return true;
	return other->rd_rel->relam == BTREE_AM_OID && strategy == BTEqualStrategyNumber &&
		OidIsValid(collation) && get_collation_isdeterministic(indexed) &&
		get_collation_isdeterministic(collation);
}

/*
 * The TID keys (sorted) of the entries of other that satisfy the condition
 * (compared under the index's own collation, which collation_fits allows),
 * into set; false if SparseIndexTids cannot (the caller then passes over the
 * rows instead).
 */
static bool
exact_rows(Relation heap, Relation other, int strategy, Oid subtype, Oid opno, Datum value,
		   SparseFilterSet *set)
{
	ScanKeyData key;

	ScanKeyEntryInitialize(&key, 0, 1, strategy, subtype, other->rd_indcollation[0], get_opcode(opno), value);
	return SparseIndexTids(heap, other, GetActiveSnapshot(), &key, 1, SparseWorkMemKeys(), set);
}

/*
 * The rows of heap the current role's row-level-security policies admit,
 * found by another index of heap (not index): every version of them it has
 * an entry for, visible or not, and no other row. NULL when the policies are
 * not one condition "expression op constant" that a valid index on that
 * expression, with op in its operator family, answers exactly (a btree)
 * within work_mem.
 */
SparseFilter *
SparsePolicyRows(Relation heap, Relation index)
{
	Node	   *expr;
	Oid			opno;
	Const	   *value;
	Oid			collation;
	List	   *indexes;
	ListCell   *lc;
	SparseFilter *rows = NULL;

	if (!policy_condition(select_policy_quals(heap), &expr, &opno, &value, &collation))
		return NULL;
	indexes = RelationGetIndexList(heap);
	foreach(lc, indexes)
	{
		Relation	other;
		int			strategy;
		Oid			lefttype,
					righttype;
		SparseFilterSet set;

		if (lfirst_oid(lc) == RelationGetRelid(index))
			continue;
		other = index_open(lfirst_oid(lc), AccessShareLock);
		if (!indexes_expression(other, expr) || !op_in_opfamily(opno, other->rd_opfamily[0]))
		{
			index_close(other, AccessShareLock);
			continue;
		}
		get_op_opfamily_properties(opno, other->rd_opfamily[0], false, &strategy, &lefttype, &righttype);
		if (lefttype == other->rd_opcintype[0] && collation_fits(other, strategy, collation) &&
			exact_rows(heap, other, strategy, righttype, opno, value->constvalue, &set))
		{
			rows = palloc0(sizeof(SparseFilter));
			rows->nsets = 1;
			rows->sets = palloc(sizeof(SparseFilterSet));
			rows->sets[0] = set;
			rows->empty = set.nkeys == 0;
		}
		index_close(other, AccessShareLock);
		if (rows != NULL)
			break;
	}
	list_free(indexes);
	return rows;
}
