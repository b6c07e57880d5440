"""Depthwise 3x3 convolution with its bias and epilogue fused, as a ``torch.library`` custom op with a
CUDA kernel for channels-last maps and a C++ CPU kernel for its forward.

Semantics (the specification the kernel must match), for x (N, C, H, W), weight (C, 1, 3, 3), bias (C),
stride 1, zero padding 1, math in fp32 (float64 for float64 inputs)::

    z = conv2d(x, weight, bias, padding=1, groups=C)
    y = z            (epilogue "none",     mode 0: DAS's offset branch)
    y = x + z        (epilogue "residual", mode 1: ResDWC, the position encoding and the ConvFFN's conv)
    y = silu(z)      (epilogue "silu",     mode 2: DASSM's conv + SiLU)
    y = g + conv2d(g, weight, bias, padding=1, groups=C) with g = gelu(x) rounded to x's dtype
                     (epilogue "gelu_residual", mode 3: the ConvFFN's GELU -> ResDWC; x is the
                     hidden layer's pre-activation, g what the unfused path would store)

    backward: g = grad_y, or for "silu" g = grad_y * silu'(z) rounded to x's dtype (as the unfused
    autograd graph holds it); grad_x = conv_transpose2d(g, weight) (+ grad_y for "residual"),
    grad_weight[c, tap] = sum over N, H, W of g * x shifted by the tap, grad_bias = sum of g.
    "gelu_residual": grad_x = (grad_y + conv_transpose2d(grad_y, weight)) * gelu'(x), and the weight
    gradient takes gelu(x) (rounded as above) in place of x.

Outputs are channels-last. Why a kernel: with cuDNN every such convolution on a channels-last map is
a convolution, a separate broadcast kernel for the bias and a separate add or SiLU, and in training
two more convolutions and a slow column sum for the bias gradient (perf note 34).

:func:`dwconv3x3` runs every call the kernel takes (CUDA, fp32/fp16/bf16, channels divisible by 4,
weight and bias fp32 or x's dtype, not under ``torch.compile``) on the kernel. Not cuDNN for small
eager calls either: cuDNN builds a plan for each new input shape of a channels-last depthwise
convolution, about 0.1 s a call on the host, so every batch shape seen for the first time (a
bucket's partial batch in training, each batch size and width in evaluation and inference) cost
Mamba-T ~4 s (H100, 2026-12-07, perf note 64). On the CPU, calls that want no gradient take the C++
kernel (:func:`dwconv3x3_cpu_kernel_applies`; perf note 49). Everything else is ``F.conv2d`` plus
the epilogue, exactly the modules' previous code. ``OPENREC_DWCONV=torch`` never uses a kernel;
``=auto`` is the earlier rule (:func:`openrec.ops.kernels.kernel_routing`): the CUDA kernel inside
CUDA-graph captures and for eager calls of at least ``DWCONV_EAGER_MIN_PIXELS`` pixels (N*H*W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import has_cpu_kernel, kernel_routing, routing_mode
from .selective_scan import export_formulation

__all__ = ["dwconv3x3", "dwconv3x3_torch", "dwconv3x3_backward_torch", "dwconv3x3_kernel_applies",
           "dwconv3x3_cpu_kernel_applies", "EPILOGUES", "DWCONV_EAGER_MIN_PIXELS"]

EPILOGUES = {"none": 0, "residual": 1, "silu": 2, "gelu_residual": 3}
DWCONV_EAGER_MIN_PIXELS = 131072  # OPENREC_DWCONV=auto only: e.g. B64 8x256 (perf note 34)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _gelu_rounded(x: torch.Tensor, cd: torch.dtype) -> torch.Tensor:
    """gelu(x) in the compute dtype, rounded to x's dtype as the unfused path stores it."""
    return F.gelu(x.to(cd)).to(x.dtype).to(cd)


def _gelu_grad(x: torch.Tensor) -> torch.Tensor:
    """d gelu(x) / dx = Phi(x) + x phi(x) (the exact, erf GELU)."""
    return 0.5 * (1 + torch.erf(x * 0.5 ** 0.5)) + x * torch.exp(-0.5 * x * x) * (2 * torch.pi) ** -0.5


def dwconv3x3_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mode: int) -> torch.Tensor:
    """The op's PyTorch implementation (see the module docstring)."""
    cd = _compute_dtype(x)
    xf = _gelu_rounded(x, cd) if mode == 3 else x.to(cd)
    z = F.conv2d(xf, weight.to(cd), bias.to(cd), padding=1, groups=x.shape[1])
    if mode in (1, 3):
        z = xf + z
    elif mode == 2:
        z = F.silu(z)
    return _channels_last(z.to(x.dtype))


def dwconv3x3_backward_torch(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             mode: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward op's PyTorch implementation: (grad_x, grad_weight, grad_bias)."""
    cd = _compute_dtype(x)
    xf, gy, w = (_gelu_rounded(x, cd) if mode == 3 else x.to(cd)), grad_y.to(cd), weight.to(cd)
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    g = gy
    if mode == 2:
        z = F.conv2d(xf, w, bias.to(cd), padding=1, groups=channels)
        s = torch.sigmoid(z)
        g = (gy * s * (1 + z * (1 - s))).to(x.dtype).to(cd)
    grad_x = F.conv_transpose2d(g, w, padding=1, groups=channels)
    if mode in (1, 3):
        grad_x = grad_x + gy
    if mode == 3:
        grad_x = grad_x * _gelu_grad(x.to(cd))
    padded = F.pad(xf, (1, 1, 1, 1))
    taps = [(g * padded[:, :, i:i + height, j:j + width]).sum((0, 2, 3)) for i in range(3) for j in range(3)]
    grad_weight = torch.stack(taps, 1).reshape(weight.shape)
    grad_bias = g.sum((0, 2, 3))
    return _channels_last(grad_x.to(x.dtype)), grad_weight.to(weight.dtype), grad_bias.to(bias.dtype)


def _check(x, weight, bias, mode) -> None:
    channels = x.shape[1] if x.dim() == 4 else None
    if x.dim() != 4 or weight.shape != (channels, 1, 3, 3) or bias.shape != (channels,):
        raise ValueError(f"openrec::dwconv3x3: x must be (N, C, H, W) with weight (C, 1, 3, 3) and bias (C,), got "
                         f"{tuple(x.shape)}, {tuple(weight.shape)} and {tuple(bias.shape)}")
    if mode not in (0, 1, 2, 3):
        raise ValueError(f"openrec::dwconv3x3: mode must be 0 (none), 1 (residual), 2 (silu) or 3 (gelu_residual), "
                         f"got {mode}")


@torch.library.custom_op("openrec::dwconv3x3", mutates_args=())
def _dwconv3x3_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mode: int) -> torch.Tensor:
    _check(x, weight, bias, mode)
    return dwconv3x3_torch(x, weight, bias, mode)


@_dwconv3x3_op.register_fake
def _(x, weight, bias, mode):
    _check(x, weight, bias, mode)
    return torch.empty_like(x, memory_format=torch.channels_last)


@torch.library.custom_op("openrec::dwconv3x3_backward", mutates_args=())
def _dwconv3x3_backward_op(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mode: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(x, weight, bias, mode)
    return dwconv3x3_backward_torch(grad_y, x, weight, bias, mode)


@_dwconv3x3_backward_op.register_fake
def _(grad_y, x, weight, bias, mode):
    _check(x, weight, bias, mode)
    return (torch.empty_like(x, memory_format=torch.channels_last),
            torch.empty_like(weight, memory_format=torch.contiguous_format), torch.empty_like(bias))


def _setup_context(ctx, inputs, output):
    x, weight, bias, mode = inputs
    ctx.mode = mode
    ctx.save_for_backward(x, weight, bias)


def _backward(ctx, grad_y):
    x, weight, bias = ctx.saved_tensors
    grad_x, grad_weight, grad_bias = torch.ops.openrec.dwconv3x3_backward(grad_y, x, weight, bias, ctx.mode)
    return grad_x, grad_weight, grad_bias, None


_dwconv3x3_op.register_autograd(_backward, setup_context=_setup_context)


def dwconv3x3_kernel_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`dwconv3x3` runs this call on the CUDA kernel (x in the dtype it will run in)."""
    if not (x.is_cuda and x.dim() == 4 and bias is not None and x.shape[1] % 4 == 0 and x.numel() > 0
            and x.dtype in _KERNEL_DTYPES and weight.dtype == bias.dtype and weight.dtype in (torch.float32, x.dtype)
            and tuple(weight.shape) == (x.shape[1], 1, 3, 3) and not torch.compiler.is_compiling()):
        return False
    return kernel_routing("OPENREC_DWCONV", "kernel", "openrec::dwconv3x3", x.shape[0] * x.shape[2] * x.shape[3],
                          DWCONV_EAGER_MIN_PIXELS)


def dwconv3x3_cpu_kernel_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`dwconv3x3` runs this call on the C++ CPU kernel (``csrc/cpu/dwconv_cpu.cpp``):
    inference calls (no gradient wanted) in fp32/float64 outside autocast, export and ``torch.compile``.
    Training keeps F.conv2d and its autograd (the op's backward has no CPU kernel)."""
    if not (x.device.type == "cpu" and x.dim() == 4 and bias is not None and x.dtype in (torch.float32, torch.float64)
            and weight.dtype == bias.dtype == x.dtype and tuple(weight.shape) == (x.shape[1], 1, 3, 3)):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return False
    if (torch.is_autocast_enabled("cpu") or export_formulation.active or torch.compiler.is_compiling()
            or routing_mode("OPENREC_DWCONV", "kernel") == "torch"):
        return False
    return has_cpu_kernel("openrec::dwconv3x3")


def dwconv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, epilogue: str = "none") -> torch.Tensor:
    """``epilogue(F.conv2d(x, weight, bias, padding=1, groups=C))`` for a depthwise 3x3 weight
    (C, 1, 3, 3); epilogue "none", "residual" (x + ...) or "silu"; "gelu_residual" is
    ``g + F.conv2d(g, ...)`` with ``g = F.gelu(x)``. On the fused CUDA kernel where it applies; under
    CUDA autocast x then runs in the autocast dtype, as F.conv2d would."""
    if epilogue not in EPILOGUES:
        raise ValueError(f"dwconv3x3: epilogue must be one of {sorted(EPILOGUES)}, got {epilogue!r}")
    xk = x
    autocast = x.is_cuda and torch.is_autocast_enabled("cuda")
    if autocast:
        xk = x.to(torch.get_autocast_dtype("cuda"))
    # gelu_residual takes the kernel only where it keeps the unfused dtypes: x already in the dtype it runs in.
    if dwconv3x3_kernel_applies(xk, weight, bias) and (epilogue != "gelu_residual" or xk.dtype == x.dtype):
        if not autocast:
            return torch.ops.openrec.dwconv3x3(xk, weight, bias, EPILOGUES[epilogue])
        # The unfused path adds the residual in x's dtype (fp32 x + bf16 conv -> fp32): a residual
        # stream that reaches the block in fp32 stays fp32, as it would without the kernel.
        split_residual = epilogue == "residual" and x.dtype != xk.dtype
        with torch.autocast("cuda", enabled=False):
            z = torch.ops.openrec.dwconv3x3(xk, weight, bias, EPILOGUES["none" if split_residual else epilogue])
        return x + z if split_residual else z
    if dwconv3x3_cpu_kernel_applies(x, weight, bias):
        return torch.ops.openrec.dwconv3x3(x, weight, bias, EPILOGUES[epilogue])
    if epilogue == "gelu_residual":
        x, epilogue = F.gelu(x), "residual"
    z = F.conv2d(x, weight, bias, padding=1, groups=x.shape[1])
    if epilogue == "residual":
        return x + z
    return F.silu(z) if epilogue == "silu" else z
