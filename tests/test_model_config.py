"""Model configuration: who may change it, and the error when the model is missing."""

import psycopg
import pytest
from helpers import connect, create_database


@pytest.fixture(scope="module")
def missing_model_dsn(cluster, layout):
    dsn = create_database(cluster, layout, None, "hybrid_search_no_model")
    with connect(dsn) as conn:
        conn.execute(
            "insert into hybrid_search_config (model) values ('/nonexistent/bge-m3')"
            " on conflict (singleton) do update set model = excluded.model"
        )
    return dsn


@pytest.mark.parametrize(
    "statement",
    [
        "select embed_dense('x')",
        "select embed_sparse('x')",
        "select * from embed('x')",
        "select * from hybrid_search('x', 10)",
        "select * from dense_search('x')",
        "select * from sparse_search('x')",
        "insert into documents (content) values ('x')",
    ],
)
def test_missing_model_names_location_and_fix(missing_model_dsn, statement):
    with connect(missing_model_dsn) as conn:
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(statement)
        assert "/nonexistent/bge-m3" in str(raised.value)
        assert "hybrid-search setup" in (raised.value.diag.message_hint or "")
        assert conn.execute("select count(*) from documents").fetchone()[0] == 0


def test_keyword_search_needs_no_model(missing_model_dsn):
    with connect(missing_model_dsn) as conn:
        assert conn.execute("select * from keyword_search('anything')").fetchall() == []


def test_only_the_owner_changes_the_configuration(db):
    db.execute("drop role if exists hs_app")
    db.execute("create role hs_app")
    try:
        db.execute("grant select, insert on documents to hs_app")
        db.execute("set role hs_app")
        # reading the settings is allowed (embedding needs them) ...
        assert db.execute("select model from hybrid_search_settings").fetchone()[0]
        # ... changing them is not
        for statement in (
            "update hybrid_search_config set model = '/tmp/evil'",
            "select hybrid_search_configure(python_venv => '/tmp/evil')",
            "select hybrid_search_set_model('/tmp/evil')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(statement)
    finally:
        db.execute("reset role")
        db.execute("revoke all on documents from hs_app")
        db.execute("drop role hs_app")


@pytest.mark.parametrize(
    "call",
    [
        "hybrid_search_configure(batch_size => 0)",
        "hybrid_search_configure(max_length => 100000)",
        "hybrid_search_configure(num_threads => -1)",
        "hybrid_search_configure(python_venv => 'relative/path')",
    ],
)
def test_configuration_rejects_bad_values(db, call):
    """The argument and its rule, not hybrid_search_config's constraint name."""
    argument = call.split("(")[1].split(" =>")[0]
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        db.execute(f"select {call}")
    message = str(refused.value).splitlines()[0]
    assert message.startswith(f"hybrid_search_configure: {argument} must satisfy CHECK (")
    assert "hybrid_search_config_" not in message


def test_set_model_refuses_to_mix_models(db, model_dir):
    db.execute("insert into documents (content) values ('embedded by the test model')")
    other = f"{model_dir}/."  # same files, another name: rows would be mislabelled
    with pytest.raises(psycopg.errors.RaiseException, match="embedded by another model"):
        db.execute("select hybrid_search_set_model(%s)", [other])
    assert db.execute("select model from hybrid_search_settings").fetchone()[0] == str(model_dir)
    db.execute("select hybrid_search_set_model(%s, reembed => true)", [other])
    try:
        assert db.execute("select model from documents").fetchone()[0] == other
    finally:
        db.execute("select hybrid_search_set_model(%s, reembed => true)", [str(model_dir)])
