"""Custom ops (DAS, the scan and the fused depthwise 3x3 convolution of the DA-Mamba block; LayerNorm;
the column sum behind ``linear``'s bias gradient):
one API, exact PyTorch implementations, CUDA kernels and C++ CPU kernels when built.

The ops are ``torch.library`` custom ops (``torch.ops.openrec.*``) with autograd and fake
implementations, so they work under autograd, ``torch.compile`` and ``opcheck``. The functions named
``*_torch`` are the plain PyTorch formulations (the specification; also used for ONNX export). The
CUDA extension built from ``csrc/`` registers itself as the CUDA implementation of the same ops, and
``csrc/cpu`` as the CPU implementation of DAS and the scan.
"""
from .das import das_sample, das_sample_backward_torch, das_sample_torch
from .dwconv import dwconv3x3, dwconv3x3_backward_torch, dwconv3x3_kernel_applies, dwconv3x3_torch
from .linear import column_sum, column_sum_torch, linear, linear_kernel_applies
from .layer_norm import layer_norm, layer_norm_backward_torch, layer_norm_kernel_applies, layer_norm_torch
from .kernels import (cpu_kernels_available, cpu_kernels_status, cuda_kernels_available, cuda_kernels_status,
                      deterministic_kernels, use_deterministic_kernels)
from .selective_scan import (SCAN_CHUNK, export_formulation, linear_scan, linear_scan_fixed_steps, selective_scan,
                             selective_scan_backward_torch, selective_scan_torch)

cuda_kernels_available()  # registers the CUDA implementations now that the ops are defined
cpu_kernels_available()  # and the C++ CPU ones of DAS and the scan
__all__ = [
    "das_sample", "das_sample_torch", "das_sample_backward_torch",
    "selective_scan", "selective_scan_torch", "selective_scan_backward_torch", "linear_scan",
    "linear_scan_fixed_steps", "export_formulation", "SCAN_CHUNK",
    "dwconv3x3", "dwconv3x3_torch", "dwconv3x3_backward_torch", "dwconv3x3_kernel_applies",
    "linear", "column_sum", "column_sum_torch", "linear_kernel_applies",
    "layer_norm", "layer_norm_torch", "layer_norm_backward_torch", "layer_norm_kernel_applies",
    "cuda_kernels_available", "cuda_kernels_status", "cpu_kernels_available", "cpu_kernels_status", "use_deterministic_kernels", "deterministic_kernels",
]
