"""sql/ in dependency order (issue 17): extension/check_sql_order.py, which the
build runs before assembling the install script, passes on sql/ and catches each
kind of forward reference the issue found: a function, a table, a type, an
operator and an access method used by an earlier file, and a number used twice."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location(
    "check_sql_order", REPO / "extension" / "check_sql_order.py"
)
check_sql_order = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check_sql_order)


def test_sql_is_in_dependency_order():
    assert check_sql_order.check(REPO / "sql") == []


def test_the_build_runs_the_check(tmp_path):
    sql = tmp_path / "sql"
    shutil.copytree(REPO / "sql", sql)
    (sql / "000_early.sql").write_text("select @extschema@.hybrid_search_refresh();\n")
    run = subprocess.run(
        [sys.executable, REPO / "extension" / "check_sql_order.py", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr == (
        "check_sql_order: 000_early.sql uses hybrid_search_refresh, "
        "defined later in 023_token_stats.sql\n"
    )
    makefile = (REPO / "extension" / "Makefile").read_text()
    assert "\tpython3 check_sql_order.py ../sql\n" in makefile


def _check(tmp_path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return check_sql_order.check(tmp_path)


FUNCTION = """create or replace function @extschema@._check_query_model(caller text)
returns void as $$ begin end; $$ language plpgsql;
"""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {
                "010_dense_search.sql": "perform @extschema@._check_query_model('dense_search');",
                "032_encoder_check.sql": FUNCTION,
            },
            [
                "010_dense_search.sql uses _check_query_model,"
                " defined later in 032_encoder_check.sql"
            ],
            id="function in a plpgsql body",
        ),
        pytest.param(
            {
                "002_config.sql": "update @extschema@.documents as d set colbert = null;",
                "004_documents.sql": "create table @extschema@.documents (id bigint);",
            },
            ["002_config.sql uses documents, defined later in 004_documents.sql"],
            id="table",
        ),
        pytest.param(
            {
                "013_keyword_search.sql": "returns @extschema@.bm25query",
                "024_bm25_query.sql": "create type @extschema@.bm25query;",
            },
            ["013_keyword_search.sql uses bm25query, defined later in 024_bm25_query.sql"],
            id="shell type",
        ),
        pytest.param(
            {
                "013_keyword_search.sql": "order by d.fts operator(@extschema@.<&>) q",
                "024_bm25_query.sql": "create operator @extschema@.<&> (function = f);",
            },
            ["013_keyword_search.sql uses <&>, defined later in 024_bm25_query.sql"],
            id="operator",
        ),
        pytest.param(
            {
                "016_indexes.sql": "create index i on t using sparse_inverted (s);",
                "021_sparse_access_method.sql": "create access method sparse_inverted type index",
            },
            ["016_indexes.sql uses sparse_inverted, defined later in 021_sparse_access_method.sql"],
            id="access method",
        ),
        pytest.param(
            {"007_colbert.sql": "select 1;", "007_model.sql": "select 2;"},
            ["007_model.sql: number 007 is also 007_colbert.sql"],
            id="number used twice",
        ),
        pytest.param(
            {
                "001_a.sql": "-- calls @extschema@._check_query_model\n"
                "select @extschema@._check_query_model_x();",
                "002_b.sql": FUNCTION,
            },
            [],
            id="comments and longer names are no use",
        ),
        pytest.param(
            {"001_a.sql": FUNCTION, "002_b.sql": "perform @extschema@._check_query_model('x');"},
            [],
            id="use after definition",
        ),
    ],
)
def test_forward_references_are_caught(tmp_path, files, expected):
    assert _check(tmp_path, files) == expected
