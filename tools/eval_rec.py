"""Evaluate a checkpoint on the config's Eval sets (or on LMDB folders given with --sets).

    python tools/eval_rec.py --c CFG --o Global.checkpoints=output/.../best.pth [--sets DIR ...] [--json out.json]
    python tools/eval_rec.py --sets DIR [DIR ...]                  # the released model (openrec/pretrained)
    python tools/eval_rec.py --model RELEASE_DIR --sets DIR [...]  # another release folder

Any LMDB folder in the standard layout works (IIIT5k, SVT, IC13, IC15, SVTP, CUTE80, ...); each gets its
own row, named after the folder. A folder that does not exist is an error naming it, before any work.

Prints Dataset | samples | accuracy | 1-NED per set, then the sample-weighted Combined and the plain Average.
--errors FILE writes each misread sample (set, label, prediction) as TSV and prints, per set, how many
misreads are wrong only in the first or last character (dropped, or another character in its place).
--predictions FILE writes every sample (set, index, label, prediction, correct; with a header line), for
tools/compare_rec.py to compare two models sample by sample.
"""
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.config import ConfigError  # noqa: E402
from openrec.cli import add_model_arg, config_parser, model_config_from_args  # noqa: E402
from openrec.engine.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from openrec.engine.evaluate import format_table  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.engine.trainer import Trainer  # noqa: E402
from openrec.metrics import edge_error_counts  # noqa: E402
from openrec.metrics.compare import write_predictions  # noqa: E402


def main(argv=None) -> int:
    p = config_parser(__doc__, config_required=False)  # without --c: a release folder (--model)
    add_model_arg(p)
    p.add_argument("--sets", nargs="*", default=None, help="LMDB folders to evaluate instead of Eval.datasets")
    p.add_argument("--json", default=None, help="write the table as JSON here")
    p.add_argument("--errors", default=None, help="write the misread samples here (TSV: set, label, prediction)")
    p.add_argument("--predictions", default=None,
                   help="write every sample here (TSV: set, index, label, prediction, correct), for tools/compare_rec.py")
    args = p.parse_args(argv)
    tune_malloc()  # reuse freed tensor memory (openrec/engine/host_memory.py)
    try:
        config, ckpt_path = model_config_from_args(args)
        if not args.config and not args.sets:
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
        if not ckpt_path:
            raise ConfigError("give the weights with --o Global.checkpoints=PATH")
        config.setdefault("Global", {}).update(checkpoints=None, pretrained_model=None)  # loaded below, not by Trainer
        trainer = Trainer(config, mode="eval")
        ckpt = load_checkpoint(ckpt_path)
        weights = ckpt["ema"] if ckpt.get("ema") else ckpt["model"]  # fp16 release weights load into fp32
        trainer.raw_model.load_state_dict(weights)
        summary = trainer.evaluate(keep_samples=bool(args.errors or args.predictions))
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(summary))
    if args.predictions:
        write_predictions(args.predictions, {name: r.pop("predictions") for name, r in summary["sets"].items()})
    if args.errors:
        print(f"misreads in {args.errors}; those wrong only in the first or last character:")
        with open(args.errors, "w", encoding="utf-8") as f:
            for name, r in summary["sets"].items():
                errors = r.pop("errors")
                f.writelines(f"{name}\t{label}\t{pred}\n" for label, pred in errors)
                c = edge_error_counts(errors, trainer.metric.case_sensitive)
                share = (c["dropped"] + c["wrong"]) / max(c["errors"], 1)
                print(f"{name:<22} {c['errors']:>6} misread: {c['dropped']} dropped + {c['wrong']} wrong = "
                      f"{100 * share:.0f}%; the drops are {100 * c['dropped'] / max(r['samples'], 1):.2f}% of the set")
    if args.json:
        payload = {"sets": {n: {k: r[k] for k in ("samples", "acc", "norm_edit_dis")} for n, r in summary["sets"].items()},
                   "combined": summary["combined"], "average": summary["average"], "checkpoint": ckpt_path}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
