"""Backend CPU per query of the legs under metadata filters that 10%, 1% and 0.1%
of the rows meet, with the sparse_inverted scans narrowing to the rows
documents_metadata_idx finds from their first batch, after three (the default) or
never (hybrid_search.sparse_filter_after 0, 3 and 1000), in alternating rounds on
one kept cluster.

retrieval.py's cluster (--keep) has one key in metadata, the tenant (10% of the
rows each). This script first marks 1% of the rows {"p1": true} and 0.1% of them
{"p01": true} (by id, spread over the heap) and VACUUMs. Then it runs rounds as
builds.py does: each leg's queries in a new connection per setting, timed by the
backend's CPU (builds.py's cpu_per_query). Every setting must return the same
rows; a cell says "(other rows)" where one did not.

    .venv/bin/python bench/retrieval.py --docs 100000 --fusion-only --keep
    .venv/bin/python bench/filter_columns.py --dsn "<the kept dsn>"
"""

import argparse

import psycopg
from builds import Comparison, installed_library, parse_kept_cluster_arguments
from retrieval import TENANT, bm25_leg, hybrid_leg, sparse_function_leg

FILTERS = {
    "10%": {"tenant": TENANT},
    "1%": {"p1": True},
    "0.1%": {"p01": True},
}
SETTINGS = ("0", "3", "1000")


def mark_rows(dsn: str) -> None:
    """Adds the 1% and 0.1% keys to metadata (once) and merges the pending rows."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        marked = conn.execute("select count(*) from documents where metadata ? 'p1'").fetchone()[0]
        if marked == 0:
            conn.execute(
                "update documents set metadata = metadata || '{\"p1\": true}' where id % 100 = 7"
            )
            conn.execute(
                "update documents set metadata = metadata || '{\"p01\": true}' where id % 1000 = 11"
            )
        conn.execute("vacuum analyze documents")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args = parse_kept_cluster_arguments(parser, rounds=3)
    mark_rows(args.dsn)
    legs = {}
    for share, metadata in FILTERS.items():
        legs[f"sparse_search, {share} filter"] = (sparse_function_leg("sparse_search"), metadata)
        legs[f"keyword_search, {share} filter"] = (bm25_leg, metadata)
        legs[f"hybrid_search, {share} filter"] = (hybrid_leg, metadata)
    columns = [f"hybrid_search.sparse_filter_after={value}" for value in SETTINGS]
    comparison = Comparison(legs, columns, args)
    library = installed_library()
    for _ in range(args.rounds):
        for variant in columns:
            comparison.time_legs(variant, variant, library)
    comparison.print([f"narrowed after {value} batches" for value in SETTINGS])


if __name__ == "__main__":
    main()
