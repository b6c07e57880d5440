"""Create an STR LMDB from an image folder and a label file.

    python tools/create_lmdb_dataset.py --images DIR --labels gt.txt --out LMDB_DIR [--max-len 25]

Label lines: ``path<TAB>label`` or the ICDAR form ``path, "label"`` (paths relative to --images).
Bad rows (missing or corrupt images, empty or too long labels) are reported and skipped.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.data.lmdb_writer import create_lmdb_from_folder  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-len", type=int, default=None)
    args = p.parse_args(argv)
    report = create_lmdb_from_folder(args.images, args.labels, args.out, args.max_len)
    for line_no, reason, text in report["bad_rows"][:50]:
        print(f"line {line_no}: {reason}: {text}", file=sys.stderr)
    bad = sum(report["bad"].values())
    print(f"wrote {report['written']} samples to {args.out}; skipped {bad} rows" +
          (f" ({', '.join(f'{k}: {v}' for k, v in sorted(report['bad'].items()))})" if bad else ""))
    return 0 if report["written"] else 1


if __name__ == "__main__":
    sys.exit(main())
