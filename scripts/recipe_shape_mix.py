"""Which batch shapes a training config's ratio sampler makes, and how often (no image is loaded).

    python scripts/recipe_shape_mix.py --c configs/rec/svtrv2/svtrv2_mamba_tiny_real.yml \
        --data-root ../shared --json docs/bench/recipe_shape_mix.json

The recipe trains on batches bucketed by aspect ratio (64x64 at B256 up to 32x384 at B85), where
``tools/bench_rec.py``'s rows use 32x128 and 32x384 only. This lists the shapes of the first
``--epochs`` epochs with their batch counts; ``bench_rec.py --shape-mix`` times the train step at
each and weights them by these counts, to compare the two model families on the recipe's own mix.
``--data-root`` replaces the ``./data`` prefix of LMDB paths (their ``wh`` keys give the ratios);
the synthetic source needs no fonts for this (its ratios come from its texts).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from openrec.config import load_config  # noqa: E402
from openrec.data import RatioBatchSampler, build_dataset  # noqa: E402
from openrec.text import charset_from_config  # noqa: E402


def shape_mix(cfg: dict, epochs: list[int]) -> list[dict]:
    """[{batch, height, width, batches}] over the epochs, most frequent first (batches: the mean per epoch)."""
    train = cfg["Train"]
    seed = cfg.get("Global", {}).get("seed", 0)
    dataset = build_dataset(train, charset_from_config(cfg), None, train=True, seed=seed)
    sampler = RatioBatchSampler(dataset.epoch_items, train["batch_size"], seed=seed)
    counts = collections.Counter()
    for epoch in epochs:
        for batch in sampler.global_batches(epoch):
            _, width, height, _ = batch[0]
            counts[(len(batch), height, width)] += 1
    return [{"batch": b, "height": h, "width": w, "batches": n / len(epochs)}
            for (b, h, w), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", "--config", dest="config", required=True)
    parser.add_argument("--data-root", default=None, help="replaces the ./data prefix of LMDB paths")
    parser.add_argument("--epochs", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    for spec in cfg["Train"]["datasets"]:
        if spec.get("type") == "lmdb" and args.data_root and spec["path"].startswith("./data"):
            spec["path"] = args.data_root + spec["path"][len("./data"):]
        if spec.get("type") == "synth":
            spec["font_dirs"] = []  # ratios only: no rendering, so the fonts need not be present
    mix = shape_mix(cfg, args.epochs)
    total = sum(s["batches"] for s in mix)
    images = sum(s["batches"] * s["batch"] for s in mix)
    print(f"{args.config}: {total:.0f} batches, {images:.0f} images per epoch (mean of epochs {args.epochs})")
    for s in mix:
        print(f"  B{s['batch']:<4d} {s['height']}x{s['width']:<4d} {s['batches']:7.1f} batches "
              f"({100 * s['batches'] * s['batch'] / images:4.1f}% of the images)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": args.config, "epochs": args.epochs, "shapes": mix}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
