"""Driver for Nsight Compute: one forward and one backward of each op (DAS, scan) per dtype at
B256 C256 4x32, after a warm-up at a different shape, so `ncu -k regex:...` sees exactly these launches.

    ncu --clock-control none -k regex:"scan_|das_" --launch-skip-before-match 0 \
        --section SpeedOfLight --section Occupancy --section WarpStateStats python3 scripts/ncu_ops.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

import openrec.ops  # noqa: E402,F401  (registers the kernels)


def run(b, c, h, w, dtype, ops):
    g = c // 16
    length = h * w
    if "das" in ops:
        x = torch.randn(b, h, w, c, device="cuda").to(dtype)
        off = (torch.randn(b, h, w, 2 * g, device="cuda") * 1.5).to(dtype)
        torch.ops.openrec.das_sample(x, off)
        torch.ops.openrec.das_sample_backward(torch.randn_like(x), x, off, False)
    if "scan" in ops:
        u = torch.randn(b, length, c, device="cuda").to(dtype)
        delta = (torch.randn(b, length, c, device="cuda") - 1).to(dtype)
        A = -torch.rand(c, device="cuda") - 0.5
        B, C = torch.randn(b, length, device="cuda").to(dtype), torch.randn(b, length, device="cuda").to(dtype)
        args = (u, delta, A, B, C, torch.randn(c, device="cuda"), torch.randn(c, device="cuda"))
        _, states = torch.ops.openrec.selective_scan(*args, True)
        torch.ops.openrec.selective_scan_backward(torch.randn_like(u), *args, states, True)
    torch.cuda.synchronize()


if __name__ == "__main__":
    ops = sys.argv[1:] or ["das", "scan"]
    for dtype in (torch.float32, torch.bfloat16):
        run(256, 256, 4, 32, dtype, ops)
