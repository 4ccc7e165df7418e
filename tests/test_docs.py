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


# "Where is the code for X": docs/development.md's table of every public SQL object, the
# sql/ file that defines it and the code its body calls (the sql_api function of a
# PL/Python body, the C file of a C function)
DEFINITION = re.compile(
    r"^\s*create (?:or replace )?(?:unlogged )?(function|procedure|table|view|materialized view"
    r"|type|operator class|operator|access method)(?: if not exists)? (?:@extschema@\.)?"
    r"([a-z_][a-z0-9_]*|[<>&#=!~|@^*+-]+)[\s(;]",
    re.M,
)
PYTHON_CALL = re.compile(r"\bsql_api\.([a-z_0-9]+)\(")
C_SYMBOL = re.compile(r"as '\$libdir/hybrid_search', '([a-z_0-9]+)'")


def c_files() -> dict[str, str]:
    """Each C function's symbol -> the extension/ file that defines it."""
    return {
        symbol: f"extension/{path.name}"
        for path in sorted((REPO / "extension").glob("*.c"))
        for symbol in re.findall(r"PG_FUNCTION_INFO_V1\((\w+)\)", path.read_text())
    }


def public_objects() -> dict[str, tuple[str, str, str]]:
    """name -> (kind, sql/ file(s), code behind it), from sql/*.sql."""
    found: dict[str, tuple[set, set, set]] = {}
    symbols = c_files()
    for path in sorted((REPO / "sql").glob("[0-9]*.sql")):
        text = path.read_text()
        matches = list(DEFINITION.finditer(text))
        for i, match in enumerate(matches):
            kind, name = match.groups()
            if name.startswith("_"):
                continue
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            body = text[match.start() : end]
            behind = {f"plpython/hybrid_search/sql_api.py: {f}" for f in PYTHON_CALL.findall(body)}
            behind |= {f"{symbols[s]}: {s}" for s in C_SYMBOL.findall(body)}
            if not behind and "language plpython3u" in body:
                behind = {"its PL/Python body"}
            kinds, files, code = found.setdefault(name, (set(), set(), set()))
            kinds.add(kind)
            files.add(f"sql/{path.name}")
            code |= behind
    return {
        name: (", ".join(sorted(k)), ", ".join(sorted(f)), ", ".join(sorted(c)) or "its SQL body")
        for name, (k, f, c) in found.items()
    }


def where_table_row(name: str, kind: str, files: str, code: str) -> str:
    linked = ", ".join(f"[`{f}`](../{f})" for f in files.split(", "))
    return f"| `{name}` | {kind} | {linked} | {code} |"


def test_the_where_is_table_lists_every_public_object_and_its_file():
    objects = public_objects()
    assert len(objects) > 60 and "hybrid_search" in objects and "<&>" in objects
    assert objects["embed_dense"][2] == "plpython/hybrid_search/sql_api.py: embed_dense"
    assert objects["bm25_distance"][2] == "extension/sparse_bm25.c: bm25_distance"
    expected = [where_table_row(name, *objects[name]) for name in sorted(objects)]
    page = (REPO / "docs" / "development.md").read_text()
    listed = [line for line in page.splitlines() if re.match(r"\| `[^`]+` \| [a-z ,]+ \| \[", line)]
    # on failure, the expected rows are what the table should say
    assert listed == expected
