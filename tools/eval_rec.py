"""Evaluate a checkpoint on the config's Eval sets (or on LMDB folders given with --sets).

    python tools/eval_rec.py --c CFG --o Global.checkpoints=output/.../best.pth [--sets DIR ...] [--json out.json]

Prints Dataset | samples | accuracy | 1-NED per set, then the sample-weighted Combined and the plain Average.
"""
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.config import ConfigError  # noqa: E402
from openrec.cli import config_parser, load_config_from_args  # noqa: E402
from openrec.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from openrec.engine.evaluate import format_table  # noqa: E402
from openrec.engine.trainer import Trainer  # noqa: E402


def main(argv=None) -> int:
    p = config_parser(__doc__)
    p.add_argument("--sets", nargs="*", default=None, help="LMDB folders to evaluate instead of Eval.datasets")
    p.add_argument("--json", default=None, help="write the table as JSON here")
    args = p.parse_args(argv)
    try:
        config = load_config_from_args(args)
        if args.sets:
            config.setdefault("Eval", {})["datasets"] = [{"type": "lmdb", "path": d} for d in args.sets]
        ckpt_path = config.get("Global", {}).get("checkpoints") or config.get("Global", {}).get("pretrained_model")
        if not ckpt_path:
            raise ConfigError("give the weights with --o Global.checkpoints=PATH")
        config["Global"]["checkpoints"] = None
        config["Global"]["pretrained_model"] = None
        trainer = Trainer(config, mode="eval")
        ckpt = load_checkpoint(ckpt_path)
        weights = ckpt["ema"] if ckpt.get("ema") else ckpt["model"]
        trainer.raw_model.load_state_dict(weights)
        summary = trainer.evaluate()
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(summary))
    if args.json:
        payload = {"sets": {n: {k: r[k] for k in ("samples", "acc", "norm_edit_dis")} for n, r in summary["sets"].items()},
                   "combined": summary["combined"], "average": summary["average"], "checkpoint": ckpt_path}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
