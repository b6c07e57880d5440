"""``F.linear`` whose bias gradient (the column sum of grad_out) runs on a deterministic CUDA kernel.

Semantics (the specification the kernel must match)::

    column_sum(x) = x.sum(0) for x (rows, cols), summed and returned in float32 (float64 for float64 x)

Why: autograd's linear backward sums the bias gradient with PyTorch's generic reduction, 27-31 us a
call at 32k rows of 128-512 bf16 channels on an H100, where the data moves in 3-13 us; it was 9% of a
tiny SVTRv2Mamba graphed bf16 train step and 15% of its attention twin's (profile of 2026-12-06).
:func:`linear` is used by both encoder families (the ConvFFN's 1x1 convolutions, the attention
blocks' qkv/proj/MLP, the DAS offset layer), so the comparison between them stays like for like.

:func:`linear` takes the kernel path only where it pays and changes nothing else: a CUDA call that
needs gradients, with a bias, outside ``torch.compile``, inside a CUDA-graph capture or with at least
``LINEAR_EAGER_MIN_ROWS`` rows (``OPENREC_LINEAR=auto``, the default: small eager steps are
host-bound, and the Python backward costs host time); ``OPENREC_LINEAR=kernel`` takes it for every
such call, ``torch`` never. The forward is ``F.linear`` (cuBLAS with the bias in its epilogue) in the
autocast dtype, as before; the backward is two matrix products, as autograd's, plus the column sum,
which returns the bias gradient in float32 straight away.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import kernel_routing

__all__ = ["linear", "column_sum", "column_sum_torch", "linear_kernel_applies", "LINEAR_EAGER_MIN_ROWS"]

LINEAR_EAGER_MIN_ROWS = 131072  # the LayerNorm's rule (OPENREC_LAYER_NORM=auto), same reason
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def column_sum_torch(x: torch.Tensor) -> torch.Tensor:
    """The op's PyTorch implementation."""
    return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32).sum(0)


def _check(x: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"openrec::column_sum: x must be (rows, cols), got shape {tuple(x.shape)}")


@torch.library.custom_op("openrec::column_sum", mutates_args=())
def _column_sum_op(x: torch.Tensor) -> torch.Tensor:
    _check(x)
    return column_sum_torch(x)


@_column_sum_op.register_fake
def _(x):
    _check(x)
    return x.new_empty((x.shape[1],), dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)


def column_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the rows of a (rows, cols) matrix, in float32 (float64 for float64 input)."""
    return torch.ops.openrec.column_sum(x)


class _LinearFunction(torch.autograd.Function):
    """y = x W^T + b with x and W in the compute dtype and b in its own (float32 under autocast); the
    backward returns grad_b from the column-sum op in b's dtype."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = bias.dtype
        return F.linear(x, weight, bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        g = grad_y.reshape(-1, grad_y.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g @ weight).view(x.shape)  # a fresh (rows, in) product: any x shape views it
        if ctx.needs_input_grad[1]:
            grad_w = g.t() @ x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[2]:
            grad_b = torch.ops.openrec.column_sum(g).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b


def linear_kernel_applies(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`linear` takes the column-sum path for this call (see the module docstring)."""
    if not (bias is not None and x.is_cuda and torch.is_grad_enabled()
            and (x.requires_grad or weight.requires_grad or bias.requires_grad)
            and x.dtype in _KERNEL_DTYPES and x.numel() > 0 and not torch.compiler.is_compiling()):
        return False
    return kernel_routing("OPENREC_LINEAR", "auto", "openrec::column_sum", x.numel() // x.shape[-1],
                          LINEAR_EAGER_MIN_ROWS)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, with the bias gradient on the column-sum kernel where
    :func:`linear_kernel_applies`. Autocast is honoured as by ``F.linear``."""
    if not linear_kernel_applies(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        return _LinearFunction.apply(x, weight, bias)
