"""Custom ops of the DA-Mamba block: one API, exact PyTorch implementations, CUDA kernels when built.

Both ops are ``torch.library`` custom ops (``torch.ops.openrec.*``) with autograd and fake
implementations, so they work under autograd, ``torch.compile`` and ``opcheck``. The functions named
``*_torch`` are the plain PyTorch formulations (the specification; also used for ONNX export).
"""
from .das import das_sample, das_sample_backward_torch, das_sample_torch
from .selective_scan import (export_formulation, linear_scan, linear_scan_fixed_steps, selective_scan,
                             selective_scan_backward_torch, selective_scan_torch)

__all__ = [
    "das_sample", "das_sample_torch", "das_sample_backward_torch",
    "selective_scan", "selective_scan_torch", "selective_scan_backward_torch", "linear_scan",
    "linear_scan_fixed_steps", "export_formulation",
]
