"""Build a model from a YAML config, print its size, run one train step and decode (untrained).

    python tools/describe_model.py --c configs/rec/svtrv2/svtrv2_mamba_gtc_rctc.yml [--o A.b=v ...]
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.cli import config_parser, load_config_from_args  # noqa: E402
from openrec.engine.describe import describe_model  # noqa: E402


def main(argv=None) -> int:
    parser = config_parser(__doc__)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=32)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)
    info = describe_model(load_config_from_args(args), args.batch, args.height, args.width)
    print(f"parameters: total {info['params_total']:,} | encoder {info['params_encoder']:,} | decoder {info['params_decoder']:,}")
    for name, shape in info["train_outputs"].items():
        print(f"train output {name}: {shape}")
    print("losses: " + ", ".join(f"{k} {v:.4f}" for k, v in info["losses"].items()))
    print(f"one train step (fwd+bwd, batch {args.batch}, {args.height}x{args.width}): {info['train_step_s'] * 1000:.0f} ms")
    if info["params_without_grad"]:
        print(f"parameters without gradient after one step: {len(info['params_without_grad'])} (e.g. {info['params_without_grad'][0]})")
    for (text, conf), label in zip(info["decoded"], info["labels"]):
        print(f"untrained decode: {text!r} (conf {conf:.3f}) for label {label!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
