"""Times the C++ CPU kernels (DAS, the scan, the depthwise 3x3 convolution) against their PyTorch code.

    python tools/bench_ops_cpu.py --json output/bench_ops_cpu.json

CPU counterpart of ``tools/bench_ops.py``. Inference-style calls at batch 1 and 32 of the tiny
DA-Mamba blocks' shapes: DAS and the scan forward (``torch.ops.openrec.*``, the C++ kernels, against
``das_sample_torch`` / ``selective_scan_channels_last_torch``), and the depthwise convolution with
each epilogue (the kernel against ``F.conv2d`` + bias + epilogue on a channels-last map, the code
``openrec.ops.dwconv3x3`` runs without it), after checking that both give the same result. Wall
clock, the kernel and the PyTorch call interleaved round by round (this shared machine drifts by
10-50% between minutes), median of the rounds.
Needs the built extension ``openrec._C_cpu``.
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
import torch.nn.functional as F  # noqa: E402

from openrec.engine.describe import describe_cpu_run  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.ops import cpu_kernels_status, das_sample_torch  # noqa: E402
from openrec.ops.kernels import has_cpu_kernel  # noqa: E402
from openrec.ops.selective_scan import selective_scan_channels_last_torch  # noqa: E402

# (B, C, H, W): the tiny model's DA-Mamba stages at 32x128 (8x32 with 128 channels, 4x32 with 256);
# the depthwise convolution also at the ConvFFN's hidden widths (4x the block's channels).
SCAN_DAS_SHAPES = [(1, 128, 8, 32), (32, 128, 8, 32), (32, 256, 4, 32)]
DWCONV_SHAPES = [(1, 128, 8, 32), (1, 512, 8, 32), (1, 1024, 4, 32), (32, 128, 8, 32), (32, 512, 8, 32)]
EPILOGUES = {"none": 0, "residual": 1, "silu": 2, "gelu_residual": 3}


def interleaved_ms(kernel, reference, rounds: int, calls: int) -> tuple[float, float]:
    """Median ms per call of each function over `rounds` rounds of `calls` calls, alternating."""
    for fn in (kernel, reference):
        fn()
    times = ([], [])
    for _ in range(rounds):
        for fn, out in ((kernel, times[0]), (reference, times[1])):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            out.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def unfused_dwconv(x, weight, bias, epilogue):
    if epilogue == "gelu_residual":
        x, epilogue = F.gelu(x), "residual"
    z = F.conv2d(x, weight, bias, padding=1, groups=x.shape[1])
    return x + z if epilogue == "residual" else F.silu(z) if epilogue == "silu" else z


def cases(ops):
    gen = torch.Generator().manual_seed(0)
    if "das" in ops:
        for b, c, h, w in SCAN_DAS_SHAPES:
            x = torch.randn(b, h, w, c, generator=gen)
            offset = torch.randn(b, h, w, 2 * (c // 16), generator=gen) * 1.5
            yield ("das", (b, c, h, w), "", lambda x=x, o=offset: torch.ops.openrec.das_sample(x, o),
                   lambda x=x, o=offset: das_sample_torch(x, o))
    if "scan" in ops:
        for b, c, h, w in SCAN_DAS_SHAPES:
            length = h * w
            u, delta = torch.randn(b, length, c, generator=gen), torch.randn(b, length, c, generator=gen) - 1
            args = (u, delta, -torch.rand(c, generator=gen) - 0.5, torch.randn(b, length, generator=gen),
                    torch.randn(b, length, generator=gen), torch.randn(c, generator=gen), torch.randn(c, generator=gen))
            yield ("scan", (b, c, h, w), "", lambda a=args: torch.ops.openrec.selective_scan(*a, True),
                   lambda a=args: selective_scan_channels_last_torch(*a, True))
    if "dwconv" in ops:
        for b, c, h, w in DWCONV_SHAPES:
            x = torch.randn(b, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
            weight, bias = 0.3 * torch.randn(c, 1, 3, 3, generator=gen), torch.randn(c, generator=gen)
            for epilogue, mode in EPILOGUES.items():
                if epilogue == "gelu_residual" and c == 128:
                    continue  # the ConvFFN's GELU runs at its hidden width only
                yield ("dwconv", (b, c, h, w), epilogue,
                       lambda x=x, m=mode: torch.ops.openrec.dwconv3x3(x, weight, bias, m),
                       lambda x=x, e=epilogue: unfused_dwconv(x, weight, bias, e))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", default=["das", "scan", "dwconv"], choices=["das", "scan", "dwconv"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default=None, help="write all rows here")
    args = parser.parse_args(argv)
    malloc_tuned = tune_malloc()  # reuse freed tensor memory (openrec/engine/host_memory.py)
    needed = {"das": "openrec::das_sample", "scan": "openrec::selective_scan", "dwconv": "openrec::dwconv3x3"}
    missing = [op for op in args.ops if not has_cpu_kernel(needed[op])]
    if missing:
        print(f"bench_ops_cpu: no C++ CPU kernel for {', '.join(missing)}: {cpu_kernels_status()}")
        return 2
    device = describe_cpu_run(malloc_tuned)
    print(f"{device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"{'op':7s} {'shape (B, C, HxW)':18s} {'epilogue':13s} {'kernel ms':>10s} {'PyTorch ms':>11s} {'speed-up':>9s}")
    rows = []
    with torch.inference_mode():
        for op, (b, c, h, w), epilogue, kernel, reference in cases(args.ops):
            # Time like with like: the two calls must compute the same thing (to rounding).
            torch.testing.assert_close(kernel(), reference(), rtol=1e-4, atol=1e-4)
            calls = max(5, int(2e6 // (b * c * h * w)))  # about the same wall time per row
            kernel_ms, torch_ms = interleaved_ms(kernel, reference, args.rounds, calls)
            row = {"op": op, "shape": f"{b}, {c}, {h}x{w}", "epilogue": epilogue, "kernel_ms": kernel_ms,
                   "torch_ms": torch_ms, "speedup": torch_ms / kernel_ms}
            rows.append(row)
            print(f"{op:7s} {row['shape']:18s} {epilogue:13s} {kernel_ms:10.4f} {torch_ms:11.4f} {row['speedup']:8.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
