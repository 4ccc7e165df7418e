"""``python -m hybrid_search_tools.prepare_model MODEL_DIR [--dtype auto]`` (run by
`hybrid-search setup`): the number format the server will compute the model in,
with the converted copy of its weights written once (hybrid_search.numerics), as
JSON on the last line."""

import argparse
import json

from hybrid_search.numerics import CONFIGURABLE, prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--dtype", default="auto", choices=CONFIGURABLE)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    choice = prepare(args.model, args.dtype, args.device)
    print(json.dumps({"dtype": choice.dtype, "reason": choice.reason, "location": choice.location}))


if __name__ == "__main__":
    main()
