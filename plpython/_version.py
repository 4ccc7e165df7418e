"""Build time only (pyproject.toml's dynamic version): the PL/Python module's version is the
extension's, extension/hybrid_search.control's default_version, the one place
a version is written."""

import re
from pathlib import Path

CONTROL = Path(__file__).resolve().parents[1] / "extension" / "hybrid_search.control"
VERSION = re.search(r"^default_version = '([^']+)'$", CONTROL.read_text(), re.MULTILINE)[1]
