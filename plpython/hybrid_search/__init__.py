"""hybrid_search: the Python module behind the extension's PL/Python functions.

Each PL/Python function of the extension is a few lines that call `sql_api`;
everything else here is plain Python that can be tested outside the database.
"""

from importlib.metadata import version

# the extension's version (extension/hybrid_search.control), as this module was installed
__version__ = version("hybrid-search-plpython")
