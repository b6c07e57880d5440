"""Synthetic engine throughput on one CPU core: samples/s for text sampling + rendering + resize to 32x128.

    python tools/bench_synth.py [--presets default clean hard] [--num 1000]
    # one recipe loader worker's share of two epochs, its font cache kept or emptied at the epoch start
    # (persistent workers or not) and of a chosen size:
    python tools/bench_synth.py --presets scene --font-dirs data/fonts --epochs 2 --num 32000 \\
        [--cold-cache] [--font-cache-size 4096]
"""
import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import cv2  # noqa: E402
import torch  # noqa: E402

from openrec.data.sources import SynthSource  # noqa: E402
from openrec.data.transforms import to_tensor  # noqa: E402
from openrec.text import build_charset  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["default", "clean", "hard"])
    p.add_argument("--num", type=int, default=1000, help="samples timed (per epoch with --epochs)")
    p.add_argument("--font-dirs", nargs="*", default=[], help="extra font folders, as a dataset's font_dirs")
    p.add_argument("--epochs", type=int, default=0,
                   help="time this many epochs of --num random samples each (of 400000), no warm-up")
    p.add_argument("--cold-cache", action="store_true", help="empty the font cache at every epoch start")
    p.add_argument("--font-cache-size", type=int, default=None, help="instead of the engine's own size")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    charset = build_charset()
    print(f"{'preset':<10} {'fonts':>6} {'epoch':>6} {'samples/s/core':>15} {'face opens/sample':>18}")
    for preset in args.presets:
        size = 400000 if args.epochs else args.num
        source = SynthSource("".join(charset.characters), 25, size, seed=0, preset=preset, font_dirs=args.font_dirs)
        renderer = source.renderer
        if args.font_cache_size:
            renderer.font_cache_size = args.font_cache_size
        if not args.epochs:
            source.texts(0)
            for i in range(20):  # warm-up: font cache, first allocations
                source.load(i, 0, None)
            rate, _ = timed(source, range(args.num), 0)
            print(f"{preset:<10} {len(source.fonts):>6} {'':>6} {rate:>15.0f} {'':>18}")
            continue
        for epoch in range(1, args.epochs + 1):
            source.texts(epoch)  # a worker's epoch-start cost, left out
            if args.cold_cache:
                renderer.clear_font_cache()
            indices = random.Random(epoch).sample(range(size), args.num)
            rate, opened = timed(source, indices, epoch)
            print(f"{preset:<10} {len(source.fonts):>6} {epoch:>6} {rate:>15.0f} {opened / args.num:>18.3f}")
    return 0


def timed(source: SynthSource, indices, epoch: int) -> tuple[float, int]:
    """(samples/s, faces opened) for rendering ``indices`` of ``epoch`` and resizing them to 32x128."""
    first = source.renderer.font_opens
    start = time.perf_counter()
    for i in indices:
        image, _ = source.load(i, epoch, random.Random(i))
        to_tensor(image, 128, 32)
    return len(indices) / (time.perf_counter() - start), source.renderer.font_opens - first


if __name__ == "__main__":
    sys.exit(main())
