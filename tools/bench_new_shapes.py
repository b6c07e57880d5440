"""What an input shape costs the first time a model sees it, against a repeat (eager, one process).

    python tools/bench_new_shapes.py --configs configs/rec/svtrv2/svtrv2_mamba_tiny_real.yml \
        configs/rec/svtrv2/svtrv2_tiny_real.yml --env OPENREC_DWCONV --values torch kernel

A training run with bucketed batches meets a new batch shape at every bucket's partial batch (its
encoder runs eagerly under ``Global.cuda_graphs``), and evaluation and ``infer_rec.py`` meet one at
every new batch size or width. Libraries that build a plan per shape (cuDNN) pay for it there, on the
host. For each config, and for each value of an environment switch that openrec reads at every call
(``--env``; e.g. ``OPENREC_DWCONV``), this times ``--shapes`` batch sizes the process has not run
before (``--sdpa-without-cudnn``: one more arm with attention off cuDNN's backend, that is
``OPENREC_CUDNN_ATTENTION=0``): the first eager train step (bf16 autocast, model + loss + backward +
AdamW) and the first inference forward (bf16, no grad), then the same call again. Wall clock after a device sync, ms;
prints medians and writes --json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402

from tools.bench_rec import Subject, load  # noqa: E402


def timed_ms(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start)


def first_and_repeat(make, sizes, device) -> dict:
    """make(batch_size) -> a callable; medians of the first call and of the second, over sizes."""
    first, repeat = [], []
    for batch_size in sizes:
        fn = make(batch_size)
        first.append(timed_ms(fn, device))
        repeat.append(timed_ms(fn, device))
    return {"first_ms": statistics.median(first), "repeat_ms": statistics.median(repeat), "batch_sizes": list(sizes),
            "first_all_ms": first}


def restore(saved: dict) -> None:
    """Environment variables back to ``saved`` (name -> value, None: unset)."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--env", default=None, help="a switch openrec reads at every call, e.g. OPENREC_DWCONV")
    parser.add_argument("--values", nargs="*", default=[], help="the switch's values, one arm each")
    parser.add_argument("--sdpa-without-cudnn", action="store_true",
                        help="one more arm: scaled_dot_product_attention kept off cuDNN's backend")
    parser.add_argument("--shapes", type=int, default=3, help="new batch sizes per arm and kind")
    parser.add_argument("--batch", type=int, default=256, help="batch sizes count down from here")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if bool(args.env) != bool(args.values):
        raise SystemExit("bench_new_shapes: --env and --values go together")
    device = torch.device(args.device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    arms = [(args.env, v) for v in args.values] or [(None, None)]
    if args.sdpa_without_cudnn:  # one more arm: the default switch, attention kept off cuDNN's backend
        arms.append(("sdpa", "no-cudnn"))
    results, next_size = [], args.batch
    switches = [name for name in (args.env, "OPENREC_CUDNN_ATTENTION") if name]
    saved = {name: os.environ.get(name) for name in switches}
    try:
        for path in args.configs:
            subject = Subject(load(path, False, []), device)
            warm = subject.train_step_fn(8, args.width, amp)  # lazy initialisation, outside the timings
            warm()
            for env, value in arms:
                restore(saved)  # the caller's switches, then this arm's
                if env == "sdpa":  # the default switch; openrec's attention helper keeps SDPA off cuDNN
                    if args.env:
                        os.environ.pop(args.env, None)
                    os.environ["OPENREC_CUDNN_ATTENTION"] = "0"
                elif env:
                    os.environ[env] = value
                for kind in ("train", "infer"):
                    sizes = list(range(next_size, next_size - args.shapes, -1))
                    next_size -= args.shapes
                    make = ((lambda b: subject.train_step_fn(b, args.width, amp)) if kind == "train" else
                            (lambda b: subject.infer_fn(b, args.width, amp)))
                    row = {"config": os.path.basename(path), "arm": f"{env}={value}" if env else "-", "kind": kind,
                           **first_and_repeat(make, sizes, device)}
                    results.append(row)
                    print(f"{row['config']:<34} {row['arm']:<22} {kind:<6} first {row['first_ms']:9.1f} ms  "
                          f"repeat {row['repeat_ms']:7.1f} ms  (B {sizes[0]}..{sizes[-1]}, 32x{args.width})", flush=True)
            del subject
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        restore(saved)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                       "torch": torch.__version__, "rows": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
