"""Compare two models sample by sample on the same evaluation sets.

    python tools/eval_rec.py --model RELEASE_A --sets DIR [DIR ...] --predictions a.tsv
    python tools/eval_rec.py --c CFG_B --o Global.checkpoints=B.pth --sets DIR [DIR ...] --predictions b.tsv
    python tools/compare_rec.py a.tsv b.tsv [--names MambaT AttnT] [--json out.json]

Per set: both accuracies, the difference, how many samples only A / only B reads correctly, and McNemar's
exact p for that split; for the plain Average over sets, a paired bootstrap interval of the difference.
These measure test-set sampling noise only: a second training seed can move a model by more.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.metrics.compare import compare_predictions, format_comparison, read_predictions  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="predictions of model A (tools/eval_rec.py --predictions)")
    p.add_argument("b", help="predictions of model B, on the same sets")
    p.add_argument("--names", nargs=2, default=("A", "B"), metavar=("NAME_A", "NAME_B"), help="column names")
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--json", default=None, help="write the comparison as JSON here")
    args = p.parse_args(argv)
    if args.resamples < 100:
        p.error("--resamples: at least 100")
    try:
        result = compare_predictions(read_predictions(args.a), read_predictions(args.b), args.resamples, args.seed)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_comparison(result, *args.names))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result | {"a": args.a, "b": args.b, "names": list(args.names)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
