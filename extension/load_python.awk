# Writes the PL/Python loader once (issue 17): a line #LOAD-HYBRID-SEARCH in a
# PL/Python body of ../sql becomes the lines of the file `preamble`
# (sql/load_python.py.in), at the marker's indentation. They make the first
# call of a backend import our module through hybrid_search_load_python(),
# refusing in parallel mode before any SQL (plpython/hybrid_search/parallel.py).
/^ *#LOAD-HYBRID-SEARCH$/ {
    indent = $0
    sub(/#.*/, "", indent)
    while ((getline line < preamble) > 0)
        print indent line
    close(preamble)
    next
}
{ print }
