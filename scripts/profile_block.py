"""Where the GPU time of one DA-Mamba block goes: the ops (with input shapes/dtypes) of a bf16
autocast call, grouped, sorted by CUDA time.

    python3 scripts/profile_block.py --dim 128 --batch 64 --hw 8 512 --kind infer
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from openrec.modeling.encoders.dassm import DASSMBlock  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hw", type=int, nargs=2, default=[8, 512])
    p.add_argument("--kind", choices=["infer", "train"], default="infer")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--rows", type=int, default=40)
    a = p.parse_args()
    block = DASSMBlock(a.dim).cuda().to(memory_format=torch.channels_last)
    amp = a.dtype == "bf16"
    # Under bf16 autocast the residual stream between blocks is bf16 (post-norm LayerNorms return bf16).
    x = torch.randn(a.batch, a.dim, *a.hw, device="cuda", dtype=torch.bfloat16 if amp else torch.float32)
    x = x.to(memory_format=torch.channels_last)
    if a.kind == "train":
        block.train()
        x.requires_grad_(True)
    else:
        block.eval()

    def call():
        if a.kind == "train":
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                y = block(x)
            y.float().square().mean().backward()
        else:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                block(x)

    for _ in range(5):
        call()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        call()
    end.record()
    torch.cuda.synchronize()
    print(f"== block dim {a.dim} B{a.batch} {a.hw[0]}x{a.hw[1]} {a.kind} {a.dtype}: "
          f"{start.elapsed_time(end) / 10:.3f} ms per call (wall, incl. host)")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        call()
        torch.cuda.synchronize()
    ev = prof.key_averages(group_by_input_shape=True)
    print(ev.table(sort_by="self_cuda_time_total", row_limit=a.rows, max_name_column_width=40,
                   max_shapes_column_width=70))
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(k.device_time_total for k in kernels)
    print(f"{len(kernels)} kernels, {total / 1000:.3f} ms GPU")
    for k in kernels:
        print(f"  {k.device_time_total:8.1f} us  {k.name[:110]}")


if __name__ == "__main__":
    main()
