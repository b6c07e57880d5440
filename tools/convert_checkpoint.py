"""Convert an OpenOCR SVTRv2 or original SVTRv2Mamba checkpoint into one of our models.

    python tools/convert_checkpoint.py --src svtrv2_base.pth --format openocr --c configs/rec/svtrv2/svtrv2_rctc.yml \\
        --o Architecture.Encoder.dims=[128,256,384] ... --out converted.pth [--strict]

Then train or evaluate with ``--o Global.pretrained_model=converted.pth``. Prints what was taken, what
starts fresh and what was dropped; ``--strict`` fails unless every tensor on both sides was used.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.cli import config_parser, load_config_from_args  # noqa: E402
from openrec.engine.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from openrec.engine.convert import convert_state_dict  # noqa: E402
from openrec.text import charset_from_config  # noqa: E402
from openrec.modeling import build_model  # noqa: E402


def main(argv=None) -> int:
    p = config_parser(__doc__)
    p.add_argument("--src", required=True)
    p.add_argument("--format", required=True, choices=["openocr", "seed"])
    p.add_argument("--out", required=True)
    p.add_argument("--strict", action="store_true")
    args = p.parse_args(argv)
    config = load_config_from_args(args)
    model = build_model(config["Architecture"], charset_from_config(config))
    state, report = convert_state_dict(load_checkpoint(args.src), args.format, model)
    print(f"taken {len(report['taken'])}, fresh {len(report['fresh'])}, dropped {len(report['dropped'])}")
    for key in ("fresh", "dropped"):
        for name in report[key][:40]:
            print(f"  {key}: {name}")
        if len(report[key]) > 40:
            print(f"  ... {len(report[key]) - 40} more {key}")
    if args.strict and (report["fresh"] or report["dropped"]):
        print("error: --strict and not every tensor was converted", file=sys.stderr)
        return 1
    model.load_state_dict(state)  # all names and shapes are ours: strict load
    save_checkpoint({"model": state, "config": config, "conversion": report}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
