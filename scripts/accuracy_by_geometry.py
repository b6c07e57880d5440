"""Word accuracy by the crop's width per character, in crop heights: (W / H) / (characters in the label).

    python tools/eval_rec.py --sets DIR [DIR ...] --predictions a.tsv
    python scripts/accuracy_by_geometry.py --sets DIR [DIR ...] --predictions a.tsv [b.tsv] [--names A B]

A tight crop of straight text in an ordinary font sits near 0.5-0.7. Much lower means a box tall for its
text: condensed type, or text along an arc, whose box grows with the curve (arched signs). Sizes come
from the LMDB's ``wh-%09d`` records (W_H of the stored image), labels are counted after the metric's
normalisation (letters and digits). Per set and band: samples, each model's accuracy and the share of
that model's misreads in the band.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.data.sources import LMDBSource  # noqa: E402
from openrec.metrics import normalize_text  # noqa: E402
from openrec.metrics.compare import read_prediction_rows  # noqa: E402

BANDS = (0.0, 0.35, 0.5, 0.7, 1.0, float("inf"))


def read_sizes(folder: str) -> np.ndarray:
    """(W, H) of every record, in record order; an error names a folder with records lacking ``wh``."""
    source = LMDBSource(folder)
    if source.missing_wh:
        raise ValueError(f"{folder}: {source.missing_wh} records have no wh-%09d entry (W_H); rewrite the LMDB with sizes")
    return source.sizes.astype(np.float64)


def read_outcomes(path: str) -> dict[str, dict[int, tuple[str, bool]]]:
    """set -> {index: (label, correct)} from an eval_rec --predictions file."""
    return {name: {i: (label, ok) for i, (label, _, ok) in rows.items()}
            for name, rows in read_prediction_rows(path).items()}


def band_table(sizes: np.ndarray, outcomes: list[dict[int, tuple[str, bool]]]) -> list[dict]:
    """One row per band: samples, and per model accuracy and share of its misreads."""
    n = len(sizes)
    for o in outcomes:
        if sorted(o) != list(range(n)):
            raise ValueError(f"the predictions cover {len(o)} samples, the LMDB holds {n}: not the same set")
    labels = [len(normalize_text(outcomes[0][i][0])) for i in range(n)]
    per_char = sizes[:, 0] / sizes[:, 1] / np.maximum(labels, 1)
    correct = [np.array([o[i][1] for i in range(n)]) for o in outcomes]
    rows = []
    for low, high in zip(BANDS[:-1], BANDS[1:]):
        k = (per_char >= low) & (per_char < high)
        rows.append({"band": (low, high), "samples": int(k.sum()),
                     "acc": [float(c[k].mean()) if k.any() else float("nan") for c in correct],
                     "misread_share": [float((~c[k]).sum() / max((~c).sum(), 1)) for c in correct]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", required=True, help="the LMDB folders the predictions were made on")
    p.add_argument("--predictions", nargs="+", required=True, help="tools/eval_rec.py --predictions files")
    p.add_argument("--names", nargs="+", default=None, help="one name per predictions file")
    args = p.parse_args(argv)
    names = args.names or [os.path.splitext(os.path.basename(f))[0] for f in args.predictions]
    if len(names) != len(args.predictions):
        p.error("--names: one per predictions file")
    try:
        outcomes = [read_outcomes(f) for f in args.predictions]
        for folder in args.sets:
            name = os.path.basename(os.path.normpath(folder))
            missing = [f for f, o in zip(args.predictions, outcomes) if name not in o]
            if missing:
                raise ValueError(f"{name}: not in {', '.join(missing)}")
            rows = band_table(read_sizes(folder), [o[name] for o in outcomes])
            print(f"{name}: width per character / height | samples | " + " | ".join(f"{m} acc, share of misreads" for m in names))
            for r in rows:
                low, high = r["band"]
                cells = " | ".join(f"{100 * a:5.1f}%, {100 * s:4.1f}%" for a, s in zip(r["acc"], r["misread_share"]))
                print(f"  {low:.2f}-{high:<5.2f} {r['samples']:>6} | {cells}")
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
