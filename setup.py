"""The wheel carries the files the CLI builds and installs from (the SQL, the
extension's C sources and Makefile, the PL/Python module's sources, the locks,
the benchmark) as package data, in the tree they have in a clone, under
hybrid_search_installer/source/ (layout.REPO finds them there). A clone and an
editable install use the checkout itself. Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# what `hybrid-search` reads from the source tree, as globs relative to it
SOURCE_FILES = [
    "sql/[0-9]*.sql",
    "sql/upgrade/*.sql",
    "sql/load_python.py.in",
    "extension/Makefile",
    "extension/*.c",
    "extension/*.h",
    "extension/*.control",
    "extension/*.awk",
    "extension/check_sql_order.py",
    "extension/released/*.sql",
    "extension/test/sql/*.sql",
    "extension/test/expected/*.out",
    "plpython/pyproject.toml",
    "plpython/_version.py",
    "plpython/hybrid_search*/**/*.py",
    "requirements/*.lock",
    "bench/*.py",
]


class BuildWithSource(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "hybrid_search_installer" / "source"
        # build/ outlives a build: a file renamed since (sql/ is renumbered) would ship twice
        shutil.rmtree(target, ignore_errors=True)
        for pattern in SOURCE_FILES:
            for path in ROOT.glob(pattern):
                copy = target / path.relative_to(ROOT)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy)


setup(cmdclass={"build_py": BuildWithSource})
