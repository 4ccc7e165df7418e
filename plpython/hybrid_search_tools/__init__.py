"""Tooling that runs in the PL/Python virtualenv beside the hybrid_search module,
for the `hybrid-search` CLI, the tests and the benchmarks: the random test model,
model conversion, the choice of number format. The server never imports it."""
