"""The change lists of the sparse and keyword indexes (documents written since
the last rebuild, scored exactly until the next)."""


def forget_seen(plpy, changes_table: str, snapshot: str) -> None:
    """Delete the changes a rebuild's snapshot saw; later ones stay pending.

    A change row locked by a write in progress is skipped, never waited for: that
    write notes its change anew (with its own, later xid), and a write notes its
    changes in both lists in an order of its own (a DELETE keyword first, an
    UPDATE's embedding sparse first), so a rebuild that waited could deadlock
    with it. A skipped row stays pending, which costs an exact score, never a
    wrong one.
    """
    plpy.execute(
        plpy.prepare(
            f"delete from {changes_table} where doc_id in (select c.doc_id from"
            f" {changes_table} as c"
            " where pg_catalog.pg_visible_in_snapshot(c.xid, $1::pg_snapshot)"
            " for update skip locked)",
            ["text"],
        ),
        [snapshot],
    )
