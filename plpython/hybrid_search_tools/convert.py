"""``python -m hybrid_search_tools.convert SOURCE_DIR TARGET_DIR [--dtype bf16]``
(`hybrid-search convert-model`): a copy of a BGE-M3 model with its weights in the
dtype the server computes in (hybrid_search.convert says why)."""

import argparse
from pathlib import Path

from hybrid_search.convert import DTYPES, convert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    args = parser.parse_args()
    print(convert(Path(args.source), Path(args.target), args.dtype))


if __name__ == "__main__":
    main()
