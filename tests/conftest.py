"""Fixtures: a throwaway PostgreSQL cluster with the real extension and a tiny
BGE-M3-shaped model generated for this run.

The cluster lives in a temporary directory with its own socket, so tests
never touch the local demo cluster. Most tests share one connection: every
new backend pays the torch + FlagEmbedding import once, and sharing it keeps
the suite fast.
"""

import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import connect, create_database
from hybrid_search_installer import extension_files
from hybrid_search_installer.cluster import Cluster
from hybrid_search_installer.layout import Layout

TEST_DB = "hybrid_search_test"


@pytest.fixture(scope="session")
def layout() -> Layout:
    layout = Layout.from_environment()
    if not (layout.venv / ".hybrid_search_module").exists():
        pytest.exit("the PL/Python virtualenv is missing: run `make test` (it runs setup first)", 2)
    # the tree's extension built and installed, as `make test`'s setup does: a bare
    # pytest after a change to the C or SQL would otherwise test the last installed copy
    extension_files.ensure_extension_files(layout)
    return layout


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Path:
    """A temporary directory the server's OS user can read."""
    path = Path(tempfile.mkdtemp(prefix="hybrid_search_tests_"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir(scratch) -> Path:
    from hybrid_search_tools.random_model import generate

    return generate(scratch / "tiny-bge-m3", size="tiny", seed=0)


@pytest.fixture(scope="session")
def cluster(scratch, layout) -> Cluster:
    """The tests' server, configured as our tooling configures one: preloading."""
    cluster = Cluster(scratch / "cluster", port=5432)
    cluster.init()
    cluster.preload(layout.venv)
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def dsn(cluster, layout, model_dir) -> str:
    return create_database(cluster, layout, model_dir, TEST_DB)


@pytest.fixture(scope="session")
def conn(dsn):
    with connect(dsn) as conn:
        yield conn


@pytest.fixture
def db(conn):
    """The shared connection on an empty documents table with default settings
    (but for the venv and model the session configured), and no setting an earlier
    test left on the connection."""
    conn.execute("reset all")
    conn.execute("truncate documents restart identity")
    conn.execute(
        "update hybrid_search_config set device = null, dtype = null, batch_size = null,"
        " max_length = null, num_threads = null, text_search_config = null,"
        " max_content_chars = null, embed_mode = null, queue_max_attempts = null,"
        " queue_retry_seconds = null, bm25_k1 = null, bm25_b = null, query_threads = null,"
        " query_cache_entries = null, pack_weights = null, bm25_statistics = null"
    )
    return conn


@pytest.fixture(scope="session")
def reference_model(model_dir):
    """The same model loaded outside the database through FlagEmbedding."""
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(str(model_dir), use_fp16=False, devices="cpu")


# the adversarial tests' server without preloading (tests/adversarial.py)
from adversarial import bare_cluster, bare_dsn  # noqa: E402, F401
