"""LayerNorm over the last dim, as a ``torch.library`` custom op with a CUDA kernel for short rows.

Semantics (the specification the kernel must match), for x (..., C), weight and bias (C,)::

    mean = mean(x),  rstd = 1 / sqrt(mean((x - mean)^2) + eps)       over the last dim, fp32 statistics
    y    = (x - mean) * rstd * weight + bias                          in x's dtype

    backward, with xhat = (x - mean) * rstd and g = grad_y * weight:
    grad_x      = rstd * (g - mean(g) - xhat * mean(g * xhat))
    grad_weight = sum over rows of grad_y * xhat,   grad_bias = sum over rows of grad_y

Why a kernel: the rows of these encoders are short (64-384 channels) and many (B*H*W), where
PyTorch's CUDA LayerNorm is slow, above all its weight/bias gradient (perf note 33). The kernel takes
up to 512 channels, fp32/fp16/bf16 x and weights in fp32 or x's dtype; its backward is deterministic.

:func:`layer_norm` runs every call the kernel takes on it by default (``OPENREC_LAYER_NORM=kernel``).
``OPENREC_LAYER_NORM=auto`` uses it only inside CUDA-graph captures and for eager calls of at least
``LAYER_NORM_EAGER_MIN_ROWS`` rows (small eager steps are host-bound, and there the custom op's
Python autograd cost more than it saved, perf note 33). ``auto`` is not the default: with it the
warm-up passes before a capture run PyTorch's LayerNorm and the capture the kernel, and graphed
training of the attention twin then failed inside cuDNN's SDPA backward (perf note 34).
``OPENREC_LAYER_NORM=torch`` never uses the kernel. Calls the kernel does not take are
``F.layer_norm``: CPU, float64, wider rows, no affine parameters, ``torch.compile`` (Inductor fuses
its own).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from .kernels import kernel_routing

__all__ = ["layer_norm", "layer_norm_torch", "layer_norm_backward_torch", "LAYER_NORM_MAX_CHANNELS",
           "LAYER_NORM_EAGER_MIN_ROWS", "layer_norm_kernel_applies"]

LAYER_NORM_MAX_CHANNELS = 512  # kLayerNormMaxCols in csrc/openrec_kernels.h
LAYER_NORM_EAGER_MIN_ROWS = 131072  # OPENREC_LAYER_NORM=auto; e.g. B64 8x256 tokens: native LayerNorm fwd+bwd >= ~0.2 ms on an H200
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def layer_norm_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """The op's PyTorch implementation: (y, mean, rstd), statistics of shape x.shape[:-1]."""
    cd = _stat_dtype(x)
    xf = x.to(cd)
    mean = xf.mean(-1)
    centred = xf - mean.unsqueeze(-1)
    rstd = torch.rsqrt(centred.square().mean(-1) + eps)
    y = centred * rstd.unsqueeze(-1) * weight.to(cd) + bias.to(cd)
    return y.to(x.dtype), mean, rstd


def layer_norm_backward_torch(grad_y: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                              weight: torch.Tensor):
    """The backward op's PyTorch implementation: (grad_x, grad_weight, grad_bias)."""
    cd = _stat_dtype(x)
    mean, rstd = mean.to(cd).unsqueeze(-1), rstd.to(cd).unsqueeze(-1)
    xhat = (x.to(cd) - mean) * rstd
    g = grad_y.to(cd)
    gw = g * weight.to(cd)
    grad_x = rstd * (gw - gw.mean(-1, keepdim=True) - xhat * (gw * xhat).mean(-1, keepdim=True))
    rows = tuple(range(x.dim() - 1))
    grad_weight = (g * xhat).sum(rows) if rows else g * xhat
    grad_bias = g.sum(rows) if rows else g
    return grad_x.to(x.dtype), grad_weight.to(weight.dtype), grad_bias.to(weight.dtype)


def _check(x, weight, bias) -> None:
    if x.dim() < 1 or weight.shape != (x.shape[-1],) or bias.shape != weight.shape:
        raise ValueError(f"openrec::layer_norm: weight and bias must have shape ({x.shape[-1] if x.dim() else '?'},) "
                         f"for x {tuple(x.shape)}, got {tuple(weight.shape)} and {tuple(bias.shape)}")


@torch.library.custom_op("openrec::layer_norm", mutates_args=())
def _layer_norm_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(x, weight, bias)
    return layer_norm_torch(x, weight, bias, eps)


@_layer_norm_op.register_fake
def _(x, weight, bias, eps):
    _check(x, weight, bias)
    stats = x.new_empty(x.shape[:-1], dtype=_stat_dtype(x))
    return torch.empty_like(x, memory_format=torch.contiguous_format), stats, torch.empty_like(stats)


@torch.library.custom_op("openrec::layer_norm_backward", mutates_args=())
def _layer_norm_backward_op(grad_y: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                            weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer_norm_backward_torch(grad_y, x, mean, rstd, weight)


@_layer_norm_backward_op.register_fake
def _(grad_y, x, mean, rstd, weight):
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight),
            torch.empty_like(weight))


def _setup_context(ctx, inputs, output):
    x, weight, _, _ = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, mean, rstd)


def _backward(ctx, grad_y, grad_mean, grad_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    grad_x, grad_weight, grad_bias = torch.ops.openrec.layer_norm_backward(grad_y, x, mean, rstd, weight)
    return grad_x, grad_weight, grad_bias, None


_layer_norm_op.register_autograd(_backward, setup_context=_setup_context)


def layer_norm_kernel_applies(x: torch.Tensor, normalized_shape, weight, bias) -> bool:
    """Whether :func:`layer_norm` runs this call on the CUDA kernel (see the module docstring)."""
    if not (x.is_cuda and len(normalized_shape) == 1 and weight is not None and bias is not None
            and 0 < x.shape[-1] == normalized_shape[0] <= LAYER_NORM_MAX_CHANNELS and x.numel() > 0
            and x.dtype in _KERNEL_DTYPES and weight.dtype == bias.dtype and weight.dtype in (torch.float32, x.dtype)
            and not torch.compiler.is_compiling()):
        return False
    return kernel_routing("OPENREC_LAYER_NORM", "kernel", "openrec::layer_norm", x.numel() // x.shape[-1],
                          LAYER_NORM_EAGER_MIN_ROWS)


def layer_norm(x: torch.Tensor, normalized_shape, weight: torch.Tensor | None, bias: torch.Tensor | None,
               eps: float = 1e-5) -> torch.Tensor:
    """``F.layer_norm`` with the same arguments, on the CUDA kernel where it applies
    (:func:`layer_norm_kernel_applies`). Autocast is not applied: callers pass the dtype they want."""
    if layer_norm_kernel_applies(x, tuple(normalized_shape), weight, bias):
        return torch.ops.openrec.layer_norm(x, weight, bias, float(eps))[0]
    return F.layer_norm(x, normalized_shape, weight, bias, eps)
