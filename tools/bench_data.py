"""Training data pipeline throughput: builds the Train loader of a config exactly as the trainer does
(sources, augmentation, label encoding, ratio batching, workers) and times whole batches, no model.

    python tools/bench_data.py --c CONFIG [--o Train.num_workers=8 ...] [--batches 200] [--warmup 20]
"""
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.cli import config_parser, load_config_from_args  # noqa: E402
from openrec.data import build_dataset, build_loader, validate_section  # noqa: E402
from openrec.text import build_label_encoder, charset_from_config  # noqa: E402


def main(argv=None) -> int:
    p = config_parser(__doc__)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20, help="batches left out of the timing (worker start-up)")
    args = p.parse_args(argv)
    config = load_config_from_args(args)
    g = config.get("Global", {})
    charset = charset_from_config(config)
    train_cfg = validate_section(config.get("Train"), "Train")
    encoder = build_label_encoder(config["LabelEncode"], charset)
    dataset = build_dataset(train_cfg, charset, encoder, train=True, seed=g.get("seed", 0))
    loader = build_loader(dataset, train_cfg, True, g.get("seed", 0))
    loader.batch_sampler.set_epoch(0)
    images = skipped = 0
    start = None
    for i, batch in enumerate(loader):
        if i == args.warmup:
            start, images = time.perf_counter(), 0
        images += len(batch["text"])
        skipped += sum(batch["skipped"].values())
        if i + 1 >= args.warmup + args.batches:
            break
    if start is None:
        print("error: fewer batches than --warmup", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(f"workers {train_cfg.get('num_workers', 2)}: {images / elapsed:.0f} img/s over {images} images "
          f"({elapsed:.1f} s), {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
