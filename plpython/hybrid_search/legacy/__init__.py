"""What only the frozen scripts of released versions still call (extension/released/:
0.1.0's and 0.2.0's keyword leg through the table-based index), in a database that
runs one of them on this module between `hybrid-search setup` and ALTER EXTENSION
hybrid_search UPDATE. The current script calls none of it: both legs are index scans
of sparse_inverted indexes. It goes when 0.1.0 and 0.2.0 are no longer upgrade
sources (sql_api's entry points of those scripts with it)."""
