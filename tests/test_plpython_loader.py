"""The PL/Python loader is written once (issue 17): sql/load_python.py.in, which
extension/load_python.awk writes into every PL/Python body at its
#LOAD-HYBRID-SEARCH marker when the build assembles the install script."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted((REPO / "sql").glob("[0-9]*.sql"))
LOADER = (REPO / "sql" / "load_python.py.in").read_text()
PYTHON_BODY = re.compile(r"\$python\$\n(.*?)\$python\$", re.DOTALL)


def _expanded(source: Path) -> str:
    return subprocess.run(
        [
            "awk",
            "-v",
            f"preamble={REPO / 'sql' / 'load_python.py.in'}",
            "-f",
            "load_python.awk",
            source,
        ],
        cwd=REPO / "extension",
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_every_body_but_the_loader_starts_with_the_marker():
    bodies = {
        f"{source.name}:{n}": body
        for source in SOURCES
        for n, body in enumerate(PYTHON_BODY.findall(source.read_text()))
    }
    assert len(bodies) == 15
    loaders = [name for name, body in bodies.items() if "import hybrid_search\n" in body]
    assert loaders == ["003_python.sql:0"]
    for name, body in bodies.items():
        if name not in loaders:
            assert body.startswith("    #LOAD-HYBRID-SEARCH\n    from hybrid_search import"), name
            assert "IsInParallelMode" not in body, name


def test_the_build_writes_the_loader_into_each_body():
    expanded = [body for source in SOURCES for body in PYTHON_BODY.findall(_expanded(source))]
    indented = "".join(f"    {line}\n" for line in LOADER.splitlines())
    assert sum(body.startswith(indented) for body in expanded) == len(expanded) - 1
    assert not any("LOAD-HYBRID-SEARCH" in body for body in expanded)
