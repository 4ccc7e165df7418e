"""The README is a manual under 500 lines; docs/ holds the rest (issue 17). Every
link between them resolves, every docs/ page is reachable from the README, and the
README names every public SQL object, model setting and server setting the code
defines, so none is out of a DBA's reach. Reads files only: no server."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -."""
    seen: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_readme_is_under_500_lines():
    assert len(README.read_text().splitlines()) < 500


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        exists = linked.exists()
        if not exists or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (REPO / target.partition("#")[0]).resolve()
        for target in links(README)
        if target.startswith("docs/")
    }
    assert [p.name for p in DOCS if p.resolve() not in linked] == []


def sql_text() -> str:
    return "\n".join(p.read_text() for p in sorted((REPO / "sql").glob("[0-9]*.sql")))


def test_the_readme_names_every_public_sql_object():
    names = set(
        re.findall(
            r"create (?:or replace )?(?:unlogged )?(?:function|procedure|table|view|materialized"
            r" view|type|operator class)(?: if not exists)? @extschema@\.([a-z][a-z0-9_]*)",
            sql_text(),
        )
    )
    assert len(names) > 50
    readme = README.read_text()
    # the access method's handler and the type's input and output functions are called
    # by PostgreSQL, never by a user
    public = {n for n in names if not re.search(r"_handler$|_in$|_out$", n)}
    assert sorted(n for n in public if not re.search(rf"\b{n}\b", readme)) == []


def test_the_readme_lists_every_model_setting():
    table = re.search(
        r"create table if not exists @extschema@\.hybrid_search_config \((.*?)\n\);",
        sql_text(),
        re.S,
    ).group(1)
    settings = set(re.findall(r"^\s+([a-z_0-9]+) ", table, re.M)) - {"singleton"}
    assert len(settings) > 15
    configuration = README.read_text().split("## Configuration")[1].split("\n## ")[0]
    assert sorted(s for s in settings if f"`{s}`" not in configuration) == []


def test_the_readme_lists_every_server_setting():
    code = "\n".join(p.read_text() for p in (REPO / "extension").glob("*.c"))
    settings = set(re.findall(r'Define\w+Variable\(\s*"(hybrid_search\.[a-z_]+)"', code))
    assert len(settings) >= 5
    configuration = README.read_text().split("## Configuration")[1].split("\n## ")[0]
    assert sorted(s for s in settings if f"`{s}`" not in configuration) == []
