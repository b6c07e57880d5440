"""Driver for Nsight Compute: one forward and one backward of each op (DAS, scan) per dtype at
B256 C256 4x32 (inputs as in tools/bench_ops.py), so `ncu -k regex:...` sees exactly these launches
(plus the one scan forward that makes the saved states).

    ncu --clock-control none -k regex:"scan_|das_" --section SpeedOfLight --section Occupancy \
        --section WarpStateStats python3 scripts/ncu_ops.py [das] [scan]
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]
import torch  # noqa: E402

from bench_ops import das_inputs, scan_inputs  # noqa: E402  (importing openrec.ops registers the kernels)


def run(shape, dtype, ops):
    if "das" in ops:
        x, off, grad = das_inputs(*shape, dtype)
        torch.ops.openrec.das_sample(x, off)
        torch.ops.openrec.das_sample_backward(grad, x, off, False)
    if "scan" in ops:
        args, grad, states = scan_inputs(*shape, dtype)
        torch.ops.openrec.selective_scan(*args, True)
        torch.ops.openrec.selective_scan_backward(grad, *args, states, True)
    torch.cuda.synchronize()


if __name__ == "__main__":
    ops = sys.argv[1:] or ["das", "scan"]
    for dtype in (torch.float32, torch.bfloat16):
        run((256, 256, 4, 32), dtype, ops)
