"""A block's fixed cost on the CPU: DA-Mamba block against attention block, layered and flat forwards.

    OMP_NUM_THREADS=1 python scripts/block_overhead_cpu.py          # perf notes 60 and 61

Times one block of each family (eval, inference mode, median of --rounds calls) on a map of 1x2
pixels, where almost everything is per-call cost (Python layers, dispatch, the ops' set-up), and at
tiny's stage shapes (128 channels at 8x32, 256 at 4x32). The flat forwards are switched by
OPENREC_DASSM_CPU_FLAT / OPENREC_ATTENTION_CPU_FLAT, as in the models.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from openrec.engine.describe import describe_cpu_run  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.modeling.common import Block  # noqa: E402
from openrec.modeling.encoders.dassm import DASSMBlock  # noqa: E402

SWITCHES = {"DASSMBlock": "OPENREC_DASSM_CPU_FLAT", "attention Block": "OPENREC_ATTENTION_CPU_FLAT"}


def median_us(fn, rounds: int) -> float:
    for _ in range(max(10, rounds // 10)):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args(argv)
    malloc_tuned = tune_malloc()
    print(f"{describe_cpu_run(malloc_tuned)}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"{'block':16s} {'map (C, HxW)':14s} {'layered us':>11s} {'flat us':>9s}")
    torch.manual_seed(0)
    for channels, h, w in ((32, 1, 2), (128, 8, 32), (256, 4, 32)):
        blocks = {"DASSMBlock": (DASSMBlock(channels).eval(),
                                 torch.randn(1, channels, h, w).to(memory_format=torch.channels_last)),
                  "attention Block": (Block(channels, max(1, channels // 32)).eval(), torch.randn(1, h * w, channels))}
        for name, (block, x) in blocks.items():
            row = []
            for flat in ("0", "1"):
                os.environ[SWITCHES[name]] = flat
                with torch.inference_mode():
                    row.append(median_us(lambda: block(x), args.rounds))
            os.environ.pop(SWITCHES[name])
            print(f"{name:16s} {f'{channels}, {h}x{w}':14s} {row[0]:11.0f} {row[1]:9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
