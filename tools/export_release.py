"""Reduce a training checkpoint to a release folder: fp16 weights of the deployment model (CTC path;
no optimizer, no SMTR branch) and a self-contained inference config.

    python tools/export_release.py --checkpoint output/rec/.../latest.pth --out my_model [--dtype fp16]
    python tools/infer_rec.py --model my_model --image word.png
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402

from openrec.config import ConfigError, load_config  # noqa: E402
from openrec.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from openrec.engine.release import release_model  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a training checkpoint (latest.pth / best.pth)")
    p.add_argument("--out", required=True, help="release folder to write")
    p.add_argument("--c", "--config", dest="config", default=None,
                   help="training config (default: the one stored in the checkpoint)")
    p.add_argument("--dtype", choices=["fp16", "fp32", "bf16"], default="fp16")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config) if args.config else load_checkpoint(args.checkpoint).get("config")
        if not config:
            raise ConfigError("the checkpoint stores no config; pass --c")
        dtype = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
        info = release_model(config, args.checkpoint, args.out, dtype)
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {info['parameters']:,} parameters, model.pth {info['bytes'] / 2**20:.2f} MiB ({args.dtype})"
          + (f"; left out: {', '.join(info['dropped'])}" if info["dropped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
