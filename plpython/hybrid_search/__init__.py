"""hybrid_search: the Python module behind the extension's PL/Python functions.

Each PL/Python function of the extension is a few lines that call `sql_api`;
everything else here is plain Python that can be tested outside the database.
"""

__version__ = "0.1.0"
