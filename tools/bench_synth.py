"""Synthetic engine throughput on one CPU core: samples/s for text sampling + rendering + resize to 32x128.

    python tools/bench_synth.py [--presets default clean hard] [--num 1000]
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
    p.add_argument("--num", type=int, default=1000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    charset = build_charset()
    print(f"{'preset':<10} {'fonts':>6} {'samples/s/core':>15}")
    for preset in args.presets:
        source = SynthSource("".join(charset.characters), 25, args.num, seed=0, preset=preset)
        source.texts(0)
        for i in range(20):  # warm-up: font cache, first allocations
            source.load(i, 0, None)
        start = time.perf_counter()
        for i in range(args.num):
            image, _ = source.load(i, 0, random.Random(i))
            to_tensor(image, 128, 32)
        rate = args.num / (time.perf_counter() - start)
        print(f"{preset:<10} {len(source.fonts):>6} {rate:>15.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
