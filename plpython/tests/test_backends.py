"""backends: memory and mappings from /proc."""

import os

from hybrid_search import backends


def test_reads_smaps_rollup(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "smaps_rollup").write_text(
        "00400000-7ffd0000 ---p 00000000 00:00 0 [rollup]\n"
        "Rss:              204800 kB\nPss:              102400 kB\n"
        "Shared_Clean:      51200 kB\nPrivate_Clean:     10240 kB\nPrivate_Dirty:     40960 kB\n"
    )
    assert backends.memory_kb(42, tmp_path) == {"rss": 204800, "pss": 102400, "private": 51200}
    assert backends.memory_kb(43, tmp_path) is None


def test_describes_this_process():
    import numpy  # noqa: F401  (maps a shared library)

    found = backends.describe(os.getpid(), "/nonexistent/model")
    assert found["rss_mb"] > 0 and found["pss_mb"] > 0 and found["private_mb"] > 0
    assert found["model_files_mapped"] == 0
