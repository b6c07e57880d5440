"""Evaluate a checkpoint on the config's Eval sets (or on LMDB folders given with --sets).

    python tools/eval_rec.py --c CFG --o Global.checkpoints=output/.../best.pth [--sets DIR ...] [--json out.json]
    python tools/eval_rec.py --sets DIR [DIR ...]                  # the released model (openrec/pretrained)
    python tools/eval_rec.py --model RELEASE_DIR --sets DIR [...]  # another release folder

Any LMDB folder in the standard layout works (IIIT5k, SVT, IC13, IC15, SVTP, CUTE80, ...); each gets its
own row, named after the folder. A folder that does not exist is an error naming it, before any work.

Prints Dataset | samples | accuracy | 1-NED per set, then the sample-weighted Combined and the plain Average.
"""
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.config import ConfigError  # noqa: E402
from openrec.cli import config_parser, load_config_from_args  # noqa: E402
from openrec.config import load_config  # noqa: E402
from openrec.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from openrec.engine.release import DEFAULT_RELEASE, release_paths  # noqa: E402
from openrec.engine.evaluate import format_table  # noqa: E402
from openrec.engine.trainer import Trainer  # noqa: E402


def main(argv=None) -> int:
    p = config_parser(__doc__, config_required=False)  # without --c: a release folder (--model)
    p.add_argument("--model", default=None, help=f"a release folder (config.yml + model.pth); default {DEFAULT_RELEASE}")
    p.add_argument("--sets", nargs="*", default=None, help="LMDB folders to evaluate instead of Eval.datasets")
    p.add_argument("--json", default=None, help="write the table as JSON here")
    args = p.parse_args(argv)
    try:
        if args.config and args.model:
            raise ConfigError("give either --c (with Global.checkpoints) or --model, not both")
        if args.config:
            config = load_config_from_args(args)
        else:
            config_path, weights_path = release_paths(args.model or DEFAULT_RELEASE)
            config = load_config(config_path, [f"Global.checkpoints={weights_path}", *args.opt])
            if not args.sets:
                raise ConfigError("a release folder has no Eval sets: give LMDB folders with --sets")
        if args.sets:
            missing = [d for d in args.sets if not os.path.isdir(d)]
            if missing:
                raise ConfigError(f"--sets: no such folder: {', '.join(missing)}")
            names = [os.path.basename(os.path.normpath(d)) for d in args.sets]
            # folders with the same name (e.g. two "test" folders) get their full path as the row name
            names = [os.path.normpath(d) if names.count(n) > 1 else n for d, n in zip(args.sets, names)]
            config.setdefault("Eval", {})["datasets"] = [{"type": "lmdb", "path": d, "name": n}
                                                         for d, n in zip(args.sets, names)]
        ckpt_path = config.get("Global", {}).get("checkpoints") or config.get("Global", {}).get("pretrained_model")
        if not ckpt_path:
            raise ConfigError("give the weights with --o Global.checkpoints=PATH")
        config["Global"]["checkpoints"] = None
        config["Global"]["pretrained_model"] = None
        trainer = Trainer(config, mode="eval")
        ckpt = load_checkpoint(ckpt_path)
        weights = ckpt["ema"] if ckpt.get("ema") else ckpt["model"]  # fp16 release weights load into fp32
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
