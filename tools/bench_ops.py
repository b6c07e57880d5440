"""Times the DAS, scan, LayerNorm, depthwise-conv and column-sum ops: CUDA kernels vs PyTorch.

    python tools/bench_ops.py --json output/bench_ops.json

Forward and forward+backward (the op pairs themselves, no autograd bookkeeping) at the shapes of the
issue, fp32 and bf16 (LayerNorm: rows B*H*W of C channels, against PyTorch's own CUDA LayerNorm,
``aten.native_layer_norm`` and its backward; the fused depthwise 3x3 convolution at the DA-Mamba
blocks' shapes with the "residual", "silu" and "gelu_residual" epilogues, against the unfused cuDNN
convolution + bias + epilogue and its autograd, all channels-last; the column sum behind
``openrec.ops.linear``'s bias gradient, rows B*H*W of C channels, against ``x.sum(0)``, which
autograd's linear backward runs: it has no backward, so its f+b columns time the same call). Each
timing replays a CUDA graph of many calls rotating over 3 input sets (so repeated calls do not just
hit L2), median of 20 replays. Also measures the device's copy bandwidth and reports the bytes each
op must move at least, the achieved GB/s and the fraction of that copy bandwidth. Needs a GPU and
the built extension.
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

from openrec.ops import (cuda_kernels_available, cuda_kernels_status, das_sample_backward_torch,  # noqa: E402
                         das_sample_torch)
from openrec.ops.selective_scan import (SCAN_CHUNK, selective_scan_channels_last_backward_torch,  # noqa: E402
                                        selective_scan_channels_last_torch)

SHAPES = [(256, 128, 8, 32), (256, 256, 4, 32), (256, 256, 4, 96), (64, 256, 4, 512)]  # (B, C, H, W)
# Tiny/base DA-Mamba blocks at B128 32x128 (block dim, ConvFFN hidden dim) and long text (B64 32x2048).
DWCONV_SHAPES = [(128, 128, 8, 32), (128, 512, 8, 32), (128, 1024, 4, 32), (64, 128, 8, 512)]
OPS = ["das", "scan", "layer_norm", "dwconv", "column_sum"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Issue #4 targets on an H100, fp32, B256 C256 4x32 (ms).
TARGETS = {("das", "fwd"): 0.036, ("das", "fwd+bwd"): 0.15, ("scan", "fwd"): 0.045, ("scan", "fwd+bwd"): 0.12}
SETS = 3


def time_calls(calls, reps: int = 10, replays: int = 20) -> float:
    """Median ms per call of `calls` (one callable per input set), replayed from a CUDA graph."""
    for fn in calls:
        fn()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for fn in calls:
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            for fn in calls:
                fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / (reps * len(calls)))
    del graph
    return statistics.median(times)


def copy_bandwidth() -> float:
    """GB/s of a 1 GiB device-to-device copy, counting bytes read plus bytes written."""
    src = torch.empty(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    ms = time_calls([lambda: dst.copy_(src)], reps=5, replays=10)
    return 2 * src.numel() * 4 / ms / 1e6


def das_inputs(b, c, h, w, dtype):
    """x (B, H, W, C), offsets that push some samples outside the image, and an output gradient."""
    x = torch.randn(b, h, w, c, device="cuda").to(dtype)
    off = (torch.randn(b, h, w, 2 * (c // 16), device="cuda") * 1.5).to(dtype)
    return x, off, torch.randn_like(x)


def scan_inputs(b, c, h, w, dtype):
    """(op args, output gradient, saved states) of the scan over the H*W tokens, channels-last."""
    length = h * w
    u = torch.randn(b, length, c, device="cuda").to(dtype)
    delta = (torch.randn(b, length, c, device="cuda") - 1).to(dtype)
    A = -torch.rand(c, device="cuda") - 0.5
    B, C = torch.randn(b, length, device="cuda").to(dtype), torch.randn(b, length, device="cuda").to(dtype)
    args = (u, delta, A, B, C, torch.randn(c, device="cuda"), torch.randn(c, device="cuda"))
    _, states = torch.ops.openrec.selective_scan(*args, True)
    return args, torch.randn_like(u), states


def das_case(b, c, h, w, dtype):
    sets = [das_inputs(b, c, h, w, dtype) for _ in range(SETS)]
    item, off_item = sets[0][0].element_size(), sets[0][1].element_size()
    fwd_bytes = 2 * sets[0][0].numel() * item + sets[0][1].numel() * off_item
    bwd_bytes = 3 * sets[0][0].numel() * item + 2 * sets[0][1].numel() * off_item

    def kernel_fwd(s):
        return lambda: torch.ops.openrec.das_sample(s[0], s[1])

    def kernel_both(s):
        return lambda: (torch.ops.openrec.das_sample(s[0], s[1]), torch.ops.openrec.das_sample_backward(s[2], s[0], s[1], False))

    def torch_fwd(s):
        return lambda: das_sample_torch(s[0], s[1])

    def torch_both(s):
        return lambda: (das_sample_torch(s[0], s[1]), das_sample_backward_torch(s[2], s[0], s[1]))

    return sets, fwd_bytes, fwd_bytes + bwd_bytes, (kernel_fwd, kernel_both, torch_fwd, torch_both)


def scan_case(b, c, h, w, dtype):
    length = h * w
    sets = [scan_inputs(b, c, h, w, dtype) for _ in range(SETS)]
    item = sets[0][0][0].element_size()
    full = sets[0][0][0].numel() * item
    small = 2 * b * length * item + sets[0][2].numel() * 4  # B, C and the saved states
    fwd_bytes = 3 * full + small
    bwd_bytes = 5 * full + small + 2 * b * length * item

    def kernel_fwd(s):
        return lambda: torch.ops.openrec.selective_scan(*s[0], True)

    def kernel_both(s):
        return lambda: (torch.ops.openrec.selective_scan(*s[0], True),
                        torch.ops.openrec.selective_scan_backward(s[1], *s[0], s[2], True))

    def torch_fwd(s):
        return lambda: selective_scan_channels_last_torch(*s[0], True)

    def torch_both(s):
        return lambda: (selective_scan_channels_last_torch(*s[0], True),
                        selective_scan_channels_last_backward_torch(s[1], *s[0], True))

    return sets, fwd_bytes, fwd_bytes + bwd_bytes, (kernel_fwd, kernel_both, torch_fwd, torch_both)


def layer_norm_case(b, c, h, w, dtype):
    rows = b * h * w
    sets = []
    for _ in range(SETS):
        x = torch.randn(rows, c, device="cuda").to(dtype)
        weight, bias = torch.randn(c, device="cuda").to(dtype), torch.randn(c, device="cuda").to(dtype)
        _, mean, rstd = torch.ops.openrec.layer_norm(x, weight, bias, 1e-6)
        _, mean_aten, rstd_aten = torch.ops.aten.native_layer_norm(x, [c], weight, bias, 1e-6)
        sets.append((x, weight, bias, torch.randn_like(x), mean, rstd, mean_aten, rstd_aten))
    full = rows * c * sets[0][0].element_size()
    fwd_bytes, bwd_bytes = 2 * full + 8 * rows, 3 * full + 8 * rows

    def kernel_fwd(s):
        return lambda: torch.ops.openrec.layer_norm(s[0], s[1], s[2], 1e-6)

    def kernel_both(s):
        return lambda: (torch.ops.openrec.layer_norm(s[0], s[1], s[2], 1e-6),
                        torch.ops.openrec.layer_norm_backward(s[3], s[0], s[4], s[5], s[1]))

    def torch_fwd(s):
        return lambda: torch.ops.aten.native_layer_norm(s[0], [c], s[1], s[2], 1e-6)

    def torch_both(s):
        return lambda: (torch.ops.aten.native_layer_norm(s[0], [c], s[1], s[2], 1e-6),
                        torch.ops.aten.native_layer_norm_backward(s[3], s[0], [c], s[6], s[7], s[1], s[2],
                                                                  [True, True, True]))

    return sets, fwd_bytes, fwd_bytes + bwd_bytes, (kernel_fwd, kernel_both, torch_fwd, torch_both)


def column_sum_case(b, c, h, w, dtype):
    sets = [(torch.randn(b * h * w, c, device="cuda").to(dtype),) for _ in range(SETS)]
    nbytes = sets[0][0].numel() * sets[0][0].element_size() + 4 * c

    def kernel(s):
        return lambda: torch.ops.openrec.column_sum(s[0])

    def torch_sum(s):
        return lambda: s[0].sum(0)

    return sets, nbytes, nbytes, (kernel, kernel, torch_sum, torch_sum)


def dwconv_case(b, c, h, w, dtype, epilogue):
    mode = {"residual": 1, "silu": 2, "gelu_residual": 3}[epilogue]
    sets = []
    for _ in range(SETS):
        x = torch.randn(b, c, h, w, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
        weight, bias = (0.3 * torch.randn(c, 1, 3, 3, device="cuda")).to(dtype), torch.randn(c, device="cuda").to(dtype)
        sets.append((x, weight, bias, torch.randn_like(x), x.detach().clone().requires_grad_(),
                     weight.clone().requires_grad_(), bias.clone().requires_grad_()))
    full = sets[0][0].numel() * sets[0][0].element_size()
    fwd_bytes, bwd_bytes = 2 * full, 3 * full  # x in, y out; grad_y and x in, grad_x out

    def unfused(x, weight, bias):
        if epilogue == "gelu_residual":  # the ConvFFN's GELU -> ResDWC
            x = torch.nn.functional.gelu(x)
        z = torch.nn.functional.conv2d(x, weight, bias, padding=1, groups=c)
        return x + z if epilogue == "residual" else torch.nn.functional.silu(z)

    def kernel_fwd(s):
        return lambda: torch.ops.openrec.dwconv3x3(s[0], s[1], s[2], mode)

    def kernel_both(s):
        return lambda: (torch.ops.openrec.dwconv3x3(s[0], s[1], s[2], mode),
                        torch.ops.openrec.dwconv3x3_backward(s[3], s[0], s[1], s[2], mode))

    def torch_fwd(s):
        return lambda: unfused(s[0], s[1], s[2])

    def torch_both(s):
        return lambda: torch.autograd.grad(unfused(s[4], s[5], s[6]), (s[4], s[5], s[6]), s[3])

    return sets, fwd_bytes, fwd_bytes + bwd_bytes, (kernel_fwd, kernel_both, torch_fwd, torch_both)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="write all rows here")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--skip-torch", action="store_true", help="time only the kernels")
    parser.add_argument("--ops", nargs="+", default=OPS, choices=OPS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_ops: needs a CUDA GPU")
        return 2
    if not cuda_kernels_available():
        print(f"bench_ops: CUDA kernels not available: {cuda_kernels_status()}")
        return 2
    device = torch.cuda.get_device_name()
    bandwidth = copy_bandwidth()
    print(f"{device}, torch {torch.__version__}, copy bandwidth {bandwidth:.0f} GB/s (read+write), "
          f"scan chunk {SCAN_CHUNK}, {time.strftime('%Y-%m-%d')}")
    rows = []
    cases = [("das", das_case, SHAPES), ("scan", scan_case, SHAPES), ("layer_norm", layer_norm_case, SHAPES)]
    cases += [(f"dwconv_{e[:3]}", lambda *a, e=e: dwconv_case(*a, e), DWCONV_SHAPES) for e in ("residual", "silu")]
    cases += [("dwconv_gelu", lambda *a: dwconv_case(*a, "gelu_residual"), DWCONV_SHAPES[1:3])]
    cases += [("column_sum", column_sum_case, DWCONV_SHAPES)]
    for op, case, shapes in cases:
        if op.split("_")[0] not in args.ops and op not in args.ops:
            continue
        for shape in shapes:
            for dname in args.dtypes:
                sets, fwd_bytes, both_bytes, (kf, kb, tf, tb) = case(*shape, DTYPES[dname])
                row = {"op": op, "shape": "B{} C{} {}x{}".format(*shape), "dtype": dname,
                       "kernel_fwd_ms": time_calls([kf(s) for s in sets]),
                       "kernel_fwd_bwd_ms": time_calls([kb(s) for s in sets]),
                       "fwd_bytes": fwd_bytes, "fwd_bwd_bytes": both_bytes}
                if not args.skip_torch:
                    row["torch_fwd_ms"] = time_calls([tf(s) for s in sets], reps=2, replays=5)
                    row["torch_fwd_bwd_ms"] = time_calls([tb(s) for s in sets], reps=2, replays=5)
                for key, nbytes in (("fwd", fwd_bytes), ("fwd_bwd", both_bytes)):
                    gbs = nbytes / row[f"kernel_{key}_ms"] / 1e6
                    row[f"{key}_GBps"] = gbs
                    row[f"{key}_copy_fraction"] = gbs / bandwidth
                rows.append(row)
                del sets
                torch.cuda.empty_cache()
    print(f"\n{'op':10s} {'shape':17s} {'dtype':5s} {'fwd ms':>8s} {'f+b ms':>8s} {'torch fwd':>9s} {'torch f+b':>9s} "
          f"{'fwd GB/s':>8s} {'%copy':>6s} {'f+b GB/s':>8s} {'%copy':>6s}")
    for r in rows:
        print(f"{r['op']:10s} {r['shape']:17s} {r['dtype']:5s} {r['kernel_fwd_ms']:8.4f} {r['kernel_fwd_bwd_ms']:8.4f} "
              f"{r.get('torch_fwd_ms', float('nan')):9.4f} {r.get('torch_fwd_bwd_ms', float('nan')):9.4f} "
              f"{r['fwd_GBps']:8.0f} {100 * r['fwd_copy_fraction']:5.0f}% {r['fwd_bwd_GBps']:8.0f} "
              f"{100 * r['fwd_bwd_copy_fraction']:5.0f}%")
    checks = []
    for (op, kind), target in TARGETS.items():
        fp32 = [r for r in rows if r["op"] == op and r["shape"] == "B256 C256 4x32" and r["dtype"] == "fp32"]
        bf16 = [r for r in rows if r["op"] == op and r["shape"] == "B256 C256 4x32" and r["dtype"] == "bf16"]
        key = "kernel_fwd_ms" if kind == "fwd" else "kernel_fwd_bwd_ms"
        if fp32:
            checks.append((f"{op} {kind} fp32 <= {target} ms", fp32[0][key], fp32[0][key] <= target))
            if bf16:
                ratio = bf16[0][key] / fp32[0][key]
                checks.append((f"{op} {kind} bf16/fp32 <= 0.6", ratio, ratio <= 0.6))
    print("\ntargets (B256 C256 4x32):")
    for name, value, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {name}: {value:.4f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
                       "copy_GBps": bandwidth, "rows": rows,
                       "targets": [{"name": n, "value": v, "met": ok} for n, v, ok in checks]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
