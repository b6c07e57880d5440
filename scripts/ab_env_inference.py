"""A/B of an environment switch on CPU inference speed, in one process, calls interleaved.

    python scripts/ab_env_inference.py --env OPENREC_DWCONV --values auto torch \
        --configs configs/rec/svtrv2/svtrv2_mamba_tiny_gtc_rctc.yml configs/rec/svtrv2/svtrv2_tiny_gtc_rctc.yml

For switches that openrec reads at every call (e.g. ``OPENREC_DWCONV``; not the ``*_KERNELS`` ones,
read once at import): each round times one forward of the first config under every value of the switch, then (for
scale) one of every other config, so all arms see the same machine state. On the shared 2-core CPU
machines, separate processes differed by more than the effect (the allocator's state and the
neighbours' load move between runs); interleaving within one process is what made A/Bs repeatable.
Prints the median ms per forward and each arm's ratio to the first value; ``--json`` keeps them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from openrec.config import load_config  # noqa: E402
from openrec.engine.describe import describe_cpu, describe_cpu_run  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.modeling import build_model  # noqa: E402
from openrec.text import charset_from_config  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="the switch, e.g. OPENREC_DWCONV")
    parser.add_argument("--values", nargs="+", required=True, help="its values; the first is the reference")
    parser.add_argument("--configs", nargs="+", required=True, help="the first is A/B'd, the others timed for scale")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20.0, help="per batch size, roughly")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    malloc_tuned = tune_malloc()  # reuse freed tensor memory (openrec/engine/host_memory.py)
    models = []
    for path in args.configs:
        cfg = load_config(path)
        models.append((os.path.basename(path).removesuffix(".yml"),
                       build_model(cfg["Architecture"], charset_from_config(cfg)).eval()))
    arms = [(f"{models[0][0]} {args.env}={v}", models[0][1], v) for v in args.values]
    arms += [(name, model, None) for name, model in models[1:]]
    before = os.environ.get(args.env)
    results = []
    print(f"{describe_cpu_run(malloc_tuned)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    try:
        with torch.inference_mode():
            for batch in args.batches:
                x = torch.randn(batch, 3, 32, args.width)
                times = {name: [] for name, _, _ in arms}
                deadline = time.perf_counter() + args.seconds
                rounds = 0
                while rounds < 3 or (time.perf_counter() < deadline and rounds < 200):
                    for name, model, value in arms:
                        if value is not None:
                            os.environ[args.env] = value
                        start = time.perf_counter()
                        model(x)
                        if rounds:  # the first round warms up
                            times[name].append((time.perf_counter() - start) * 1e3)
                    rounds += 1
                reference = statistics.median(times[arms[0][0]])
                for name, _, _ in arms:
                    ms = statistics.median(times[name])
                    results.append({"batch": batch, "arm": name, "ms": ms, "ratio_to_first": ms / reference,
                                    "rounds": rounds - 1})
                    print(f"B{batch:<4d} {name:60s} {ms:9.2f} ms  {ms / reference:5.2f}x of the first ({rounds - 1} rounds)")
    finally:
        if before is None:
            os.environ.pop(args.env, None)
        else:
            os.environ[args.env] = before
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"device": describe_cpu(), "threads": torch.get_num_threads(), "malloc_tuned": malloc_tuned,
                       "torch": torch.__version__,
                       "date": time.strftime("%Y-%m-%d"), "env": args.env, "values": args.values,
                       "configs": args.configs, "rows": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
