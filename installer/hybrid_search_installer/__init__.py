"""Installer and command line for hybrid_search (the `hybrid-search` command)."""

from importlib.metadata import version

# the extension's version (extension/hybrid_search.control), as this package was installed
__version__ = version("hybrid-search")
