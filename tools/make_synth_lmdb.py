"""Write N synthetic word images (JPEG) with exact labels to an STR LMDB.

    python tools/make_synth_lmdb.py --out synth_lmdb --num 100000 [--preset default] [--seed 0] [--font-dir DIR]
"""
import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import cv2  # noqa: E402

from openrec.data.lmdb_writer import LMDBWriter  # noqa: E402
from openrec.data.sources import SynthSource  # noqa: E402
from openrec.text import build_charset  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--num", type=int, required=True)
    p.add_argument("--preset", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--font-dir", action="append", default=[])
    p.add_argument("--max-len", type=int, default=25)
    p.add_argument("--quality", type=int, default=95)
    args = p.parse_args(argv)
    charset = build_charset(max_text_length=args.max_len)
    source = SynthSource("".join(charset.characters), args.max_len, args.num, seed=args.seed, preset=args.preset,
                         font_dirs=tuple(args.font_dir), fixed=True)
    start = time.perf_counter()
    with LMDBWriter(args.out) as writer:
        for i in range(args.num):
            image, text = source.load(i, 0, random.Random(i))
            ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, args.quality])
            writer.add(buf.tobytes(), text, image.shape[1], image.shape[0])
    print(f"wrote {args.num} samples to {args.out} in {time.perf_counter() - start:.1f}s "
          f"({len(source.fonts)} fonts, preset {args.preset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
