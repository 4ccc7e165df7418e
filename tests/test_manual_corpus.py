"""The demo corpus: PostgreSQL manual pages cut into sections."""

import pytest
from hybrid_search_installer import manual_corpus

PAGE = """<html><head><title>CREATE THING</title></head><body>
<div class="navheader"><a href="x.html">Prev</a> Up Next</div>
<div class="refentry"><h2>Synopsis</h2><p>CREATE THING name</p>
<h2>Description</h2><p>{long}</p>
<h3>Building Things Concurrently</h3><p>{other}</p></div>
<div class="navfooter"><div>Home</div> Next page text</div></body></html>"""


def test_a_page_becomes_one_document_per_long_enough_section(tmp_path):
    page = tmp_path / "sql-creatething.html"
    page.write_text(PAGE.format(long="explains things " * 20, other="&amp; concurrently " * 20))
    docs = manual_corpus.page_sections(page)
    assert [d["metadata"]["section"] for d in docs] == [
        "CREATE THING — Description",  # the synopsis is too short to keep
        "CREATE THING — Building Things Concurrently",
    ]
    assert docs[1]["content"].startswith("CREATE THING — Building Things Concurrently\n& concu")
    assert all("Prev" not in d["content"] and "Next page" not in d["content"] for d in docs)
    assert docs[0]["metadata"] == {
        "source": "postgresql-doc-15",
        "page": "sql-creatething.html",
        "section": "CREATE THING — Description",
    }


@pytest.mark.skipif(not manual_corpus.MANUAL.is_dir(), reason="postgresql-doc-15 not installed")
def test_the_installed_manual():
    docs = manual_corpus.documents()
    assert len(docs) > 2000
    sections = {d["metadata"]["section"] for d in docs}
    assert "CREATE INDEX — Building Indexes Concurrently" in sections
    assert not any(d["metadata"]["page"].startswith("release-") for d in docs)
