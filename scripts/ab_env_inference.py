"""A/B of an environment switch on CPU inference speed, in one process, calls interleaved.

    python scripts/ab_env_inference.py --env OPENREC_DWCONV --values auto torch \
        --configs configs/rec/svtrv2/svtrv2_mamba_tiny_gtc_rctc.yml configs/rec/svtrv2/svtrv2_tiny_gtc_rctc.yml
    python scripts/ab_env_inference.py --configs A.yml B.yml     # no switch: the configs side by side

For switches that openrec reads at every call (e.g. ``OPENREC_DWCONV``; not the ``*_KERNELS`` ones,
read once at import): each round times one forward of the first config under every value of the switch, then (for
scale) one of every other config, so all arms see the same machine state. On the shared 2-core CPU
machines, separate processes differed by more than the effect (the allocator's state and the
neighbours' load move between runs); interleaving within one process is what made A/Bs repeatable.
Settings read once per process (``OPENREC_MALLOC_TUNING``) are A/B'd by running this without
``--env`` in one process per value (``scripts/ab_malloc.sh``).
Prints the median ms per forward, each arm's ratio to the first and its minor page faults per
forward (memory handed back to the kernel and faulted in again); ``--json`` keeps them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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
    parser.add_argument("--env", default=None, help="the switch, e.g. OPENREC_DWCONV (none: time the configs only)")
    parser.add_argument("--values", nargs="+", default=None, help="its values; the first is the reference")
    parser.add_argument("--configs", nargs="+", required=True, help="the first is A/B'd, the others timed for scale")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=20.0, help="per batch size, roughly")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if (args.env is None) != (args.values is None):
        parser.error("--env and --values go together")
    malloc_tuned = tune_malloc()  # reuse freed tensor memory (openrec/engine/host_memory.py)
    models = []
    for path in args.configs:
        cfg = load_config(path)
        models.append((os.path.basename(path).removesuffix(".yml"),
                       build_model(cfg["Architecture"], charset_from_config(cfg)).eval()))
    if args.env is None:
        arms = [(name, model, None) for name, model in models]
    else:
        arms = [(f"{models[0][0]} {args.env}={v}", models[0][1], v) for v in args.values]
        arms += [(name, model, None) for name, model in models[1:]]
    before = os.environ.get(args.env) if args.env else None
    results = []
    print(f"{describe_cpu_run(malloc_tuned)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    try:
        with torch.inference_mode():
            for batch in args.batches:
                x = torch.randn(batch, 3, 32, args.width)
                times = {name: [] for name, _, _ in arms}
                faults = {name: 0 for name, _, _ in arms}  # minor page faults in the timed forwards
                deadline = time.perf_counter() + args.seconds
                rounds = 0
                while rounds < 3 or (time.perf_counter() < deadline and rounds < 200):
                    for name, model, value in arms:
                        if value is not None:
                            os.environ[args.env] = value
                        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        start = time.perf_counter()
                        model(x)
                        if rounds:  # the first round warms up
                            times[name].append((time.perf_counter() - start) * 1e3)
                            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
                    rounds += 1
                reference = statistics.median(times[arms[0][0]])
                for name, _, _ in arms:
                    ms = statistics.median(times[name])
                    per_forward = faults[name] / len(times[name])
                    results.append({"batch": batch, "arm": name, "ms": ms, "ratio_to_first": ms / reference,
                                    "faults_per_forward": per_forward, "rounds": rounds - 1})
                    print(f"B{batch:<4d} {name:60s} {ms:9.2f} ms  {ms / reference:5.2f}x of the first "
                          f"({rounds - 1} rounds, {per_forward:.0f} faults per forward)")
    finally:
        if args.env is not None and before is None:
            os.environ.pop(args.env, None)
        elif args.env is not None:
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
