"""Check that sql/[0-9]*.sql is in dependency order (issue 17): file numbers are
unique and increasing, and no file uses an object that a later file defines.

PL/pgSQL and PL/Python bodies are bound late, so PostgreSQL itself would accept
a forward reference inside a body; the order is kept anyway, so that reading the
files top to bottom never meets a name that has not been introduced yet.

An object is whatever a file creates under @extschema@ (function, procedure,
type, table, view, operator, operator class) or by a bare name (access method,
event trigger). A use is the qualified name (@extschema@.name) or, for the bare
names, the name in its usual place (USING sparse_inverted). Comments are ignored.

Run by extension/Makefile before it assembles the install script, and by
tests/test_sql_order.py. Standard library only: the build may run it with the
system's python3.
"""

import re
import sys
from pathlib import Path

NUMBERED = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
QUALIFIED_DEFINITION = re.compile(
    r"\bcreate\s+(?:or\s+replace\s+)?(?:unlogged\s+|materialized\s+)?"
    r"(?:function|procedure|aggregate|type|table|view|operator\s+class|operator\s+family|operator)"
    r"\s+(?:if\s+not\s+exists\s+)?@extschema@\.(\w+|[^\s\w(]+)",
    re.IGNORECASE,
)
BARE_DEFINITION = re.compile(
    r"\bcreate\s+(access\s+method|event\s+trigger)\s+([a-z_][a-z0-9_]*)", re.IGNORECASE
)
# the place a bare name is used: an access method in USING, an event trigger by name
BARE_USE = {
    "access method": r"\busing\s+{name}\b",
    "event trigger": r"\bevent\s+trigger\s+{name}\b",
}


def _without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _name_use(name: str) -> re.Pattern[str]:
    """A qualified use of name: @extschema@.name, not a longer name it begins."""
    tail = r"(?![a-z0-9_])" if re.fullmatch(r"\w+", name) else ""
    return re.compile(r"@extschema@\." + re.escape(name) + tail, re.IGNORECASE)


def numbering_errors(files: list[Path]) -> list[str]:
    errors = []
    seen: dict[str, str] = {}
    for f in files:
        match = NUMBERED.match(f.name)
        if not match:
            errors.append(f"{f.name}: not named NNN_concept.sql")
        elif match[1] in seen:
            errors.append(f"{f.name}: number {match[1]} is also {seen[match[1]]}")
        else:
            seen[match[1]] = f.name
    return errors


def definitions(sql: str) -> dict[str, re.Pattern[str]]:
    """The objects a file defines, each with the pattern of a use of it."""
    sql = _without_comments(sql)
    found = {name.lower(): _name_use(name) for name in QUALIFIED_DEFINITION.findall(sql)}
    for kind, name in BARE_DEFINITION.findall(sql):
        kind = " ".join(kind.lower().split())
        found[name.lower()] = re.compile(BARE_USE[kind].format(name=re.escape(name)), re.IGNORECASE)
    return found


def forward_references(files: list[Path]) -> list[str]:
    """One line per (file, object) where the file uses an object a later file defines."""
    texts = [_without_comments(f.read_text()) for f in files]
    defined = [definitions(f.read_text()) for f in files]
    errors = []
    for later, (definer, objects) in enumerate(zip(files, defined, strict=True)):
        for name, use in objects.items():
            for user, text in zip(files[:later], texts[:later], strict=True):
                if use.search(text):
                    errors.append(f"{user.name} uses {name}, defined later in {definer.name}")
    return sorted(errors)


def check(sql_dir: Path) -> list[str]:
    files = sorted(sql_dir.glob("[0-9]*.sql"))
    return numbering_errors(files) + forward_references(files)


def main() -> int:
    sql_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "sql"
    errors = check(sql_dir)
    for error in errors:
        print(f"check_sql_order: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
