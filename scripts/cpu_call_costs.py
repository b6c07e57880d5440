"""CPU costs behind perf note 72, measured in one process (minima over rounds; this machine's noise).

    python scripts/cpu_call_costs.py [--threads 1] [--pairs 40]

1. The depthwise kernel at power-of-two channel counts against slightly more channels (one L1 set per
   column sweep at a 4 KB stride).
2. A custom op's fixed cost under torch.no_grad and torch.inference_mode (tiny map).
3. The released model's batch-1 forward under both modes, alternated (paired ratio, median).
4. fp32 F.gelu through oneDNN (contiguous) and ATen's own kernel (torch.backends.mkldnn off).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from openrec.engine.describe import describe_cpu_run  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.engine.infer import TextRecognizer  # noqa: E402


def min_us(fn, calls: int = 1000, rounds: int = 5) -> float:
    for _ in range(max(10, calls // 10)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls // rounds):
            fn()
        best = min(best, (time.perf_counter() - start) / (calls // rounds) * 1e6)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads for parts 1, 2 and 4 (part 3 uses 2)")
    p.add_argument("--pairs", type=int, default=40, help="alternations of part 3")
    args = p.parse_args()
    malloc_tuned = tune_malloc()
    torch.set_num_threads(args.threads)
    print(describe_cpu_run(malloc_tuned), f"torch {torch.__version__}", time.strftime("%Y-%m-%d"))
    dwconv = torch.ops.openrec.dwconv3x3

    print("1. dwconv3x3 (mode 0, one 4x32 map, inference mode): channels, us, GMAC/s")
    with torch.inference_mode():
        for c in (256, 272, 512, 528, 1024, 1040):
            x = torch.randn(1, c, 4, 32).contiguous(memory_format=torch.channels_last)
            w, b = torch.randn(c, 1, 3, 3), torch.randn(c)
            us = min_us(lambda: dwconv(x, w, b, 0))
            print(f"   {c:5d} {us:7.1f} {c * 128 * 9 / us / 1e3:6.1f}")

    print("2. dwconv3x3 on 16 channels, 1x2 (fixed cost), us")
    x = torch.randn(1, 16, 1, 2).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(16, 1, 3, 3), torch.randn(16)
    for name, mode in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
        with mode():
            print(f"   {name:15s} {min_us(lambda: dwconv(x, w, b, 0), 5000):6.1f}")

    print("3. released model, batch 1 32x128, 2 threads: median ms per mode, paired ratio inference/no_grad")
    torch.set_num_threads(2)
    model = TextRecognizer.from_release().model
    image = torch.randn(1, 3, 32, 128)

    def median_ms(mode, n: int = 20) -> float:
        times = []
        for _ in range(n):
            with mode():
                start = time.perf_counter()
                model(image)
                times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    for _ in range(3):
        median_ms(torch.no_grad), median_ms(torch.inference_mode)
    pairs = [(median_ms(torch.no_grad), median_ms(torch.inference_mode)) for _ in range(args.pairs)]
    print(f"   no_grad {statistics.median(a for a, _ in pairs):.2f}, inference_mode "
          f"{statistics.median(b for _, b in pairs):.2f}, ratio {statistics.median(b / a for a, b in pairs):.3f}")
    torch.set_num_threads(args.threads)

    print("4. fp32 F.gelu, us: oneDNN (contiguous, the default), ATen's kernel (mkldnn off), max |difference|")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on oneDNN TF32 when the flags are set
        for numel in (64, 8192, 32768, 131072):
            x = torch.randn(numel)
            onednn = min_us(lambda: F.gelu(x))
            with torch.backends.mkldnn.flags(enabled=False):
                aten = min_us(lambda: F.gelu(x))
                y_aten = F.gelu(x)
            print(f"   {numel:7d} {onednn:7.1f} {aten:7.1f} {(F.gelu(x) - y_aten).abs().max().item():.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
