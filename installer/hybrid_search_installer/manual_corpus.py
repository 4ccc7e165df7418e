"""The PostgreSQL manual as a demo corpus: Debian's postgresql-doc-15 HTML, one
document per section (a page is cut at its h2/h3/h4 headings)."""

import html.parser
from pathlib import Path

MANUAL = Path("/usr/share/doc/postgresql-doc-15/html")
PACKAGE = "postgresql-doc-15"
# release notes and the index are long lists, not answers
SKIP = ("release-", "bookindex", "appendix-obsolete")
MIN_CHARS = 200


class _Sections(html.parser.HTMLParser):
    """Text of a page by section, leaving out the navigation header and footer."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.sections: list[tuple[str, list[str]]] = [("", [])]
        self._in_title = False
        self._heading: list[str] | None = None
        self._skip_depth = 0  # > 0 inside a navigation div
        self._div_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "div":
            self._div_depth += 1
            classes = dict(attrs).get("class") or ""
            if self._skip_depth or classes in ("navheader", "navfooter"):
                self._skip_depth += 1
        elif tag == "title":
            self._in_title = True
        elif tag in ("h2", "h3", "h4") and not self._skip_depth:
            self._heading = []

    def handle_endtag(self, tag):
        if tag == "div":
            self._div_depth -= 1
            if self._skip_depth:
                self._skip_depth -= 1
        elif tag == "title":
            self._in_title = False
        elif tag in ("h2", "h3", "h4") and self._heading is not None:
            self.sections.append((" ".join("".join(self._heading).split()), []))
            self._heading = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif self._heading is not None:
            self._heading.append(data)
        elif not self._skip_depth:
            self.sections[-1][1].append(data)


def page_sections(path: Path) -> list[dict]:
    """Documents (content, metadata) of one manual page."""
    parser = _Sections()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    title = " ".join(parser.title.split())
    documents = []
    for heading, parts in parser.sections:
        text = " ".join("".join(parts).split())
        if len(text) < MIN_CHARS:
            continue
        name = f"{title} — {heading}" if heading and heading != title else title
        documents.append(
            {
                "content": f"{name}\n{text}",
                "metadata": {"source": PACKAGE, "page": path.name, "section": name},
            }
        )
    return documents


def documents(manual: Path = MANUAL) -> list[dict]:
    """Every section of the manual, in file name order."""
    pages = sorted(p for p in manual.glob("*.html") if not p.name.startswith(SKIP))
    return [doc for page in pages for doc in page_sections(page)]
