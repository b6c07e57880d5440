"""DAS: dynamic adaptive scan sampling (DCNv3 with kernel 1), as a ``torch.library`` custom op.

Semantics (the specification every kernel must match)::

    out[n, h, w, g*Cg + c] = bilinear(x[n, :, :, g*Cg + c], y = h + dy[n,h,w,g], x = w + dx[n,h,w,g])

``x`` is channels-last (N, H, W, C); ``offset`` is (N, H, W, 2G) ordered (group, xy) with the width
offset first. Integer coordinates are pixel centres and corners outside the image contribute zero.
The arithmetic follows DCNv3's bilinear kernel (floor, weights ``hh*hw, hh*lw, lh*hw, lh*lw``, summed
in that order) so fp32 results are bit-faithful, not grid_sample's normalise/unnormalise round trip.
Math runs in fp32 (float64 for float64 inputs); outputs and gradients come back in the input dtypes.

The functions below are the CPU implementation (and the fallback on CUDA tensors when the extension
is not built); ``csrc/das_kernels.cu`` registers the CUDA implementation of the same ops.
"""
from __future__ import annotations

import torch

from .kernels import deterministic_kernels, warn_pytorch_fallback

__all__ = ["das_sample", "das_sample_torch", "das_sample_backward_torch"]


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check(x: torch.Tensor, offset: torch.Tensor) -> int:
    if x.dim() != 4 or offset.dim() != 4:
        raise ValueError(f"das_sample: x must be (N,H,W,C) and offset (N,H,W,2G); got {tuple(x.shape)} and {tuple(offset.shape)}")
    if x.shape[:3] != offset.shape[:3]:
        raise ValueError(f"das_sample: x {tuple(x.shape)} and offset {tuple(offset.shape)} differ in (N,H,W)")
    if offset.shape[3] % 2:
        raise ValueError(f"das_sample: offset's last dim must be 2*groups, got {offset.shape[3]}")
    groups = offset.shape[3] // 2
    if groups == 0 or x.shape[3] % groups:
        raise ValueError(f"das_sample: channels {x.shape[3]} not divisible by groups {groups}")
    return groups


class _Corners:
    """Bilinear corner rows, weights and validity for every (n, h, w, g) sample point."""

    def __init__(self, offset: torch.Tensor, height: int, width: int, groups: int, dtype: torch.dtype):
        n = offset.shape[0]
        dev = offset.device
        off = offset.to(dtype).reshape(n, height, width, groups, 2)
        base_w = torch.arange(width, device=dev, dtype=dtype).view(1, 1, width, 1)
        base_h = torch.arange(height, device=dev, dtype=dtype).view(1, height, 1, 1)
        loc_w = base_w + off[..., 0]
        loc_h = base_h + off[..., 1]
        w_low = torch.floor(loc_w)
        h_low = torch.floor(loc_h)
        self.lw = loc_w - w_low
        self.lh = loc_h - h_low
        self.hw = 1 - self.lw
        self.hh = 1 - self.lh
        w_low = w_low.long()
        h_low = h_low.long()
        # Flat row index of (n, h, w, g) in x.reshape(N*H*W*G, Cg).
        n_idx = torch.arange(n, device=dev).view(n, 1, 1, 1)
        g_idx = torch.arange(groups, device=dev).view(1, 1, 1, groups)
        self.rows = []
        self.valid = []
        for dh, dw in ((0, 0), (0, 1), (1, 0), (1, 1)):
            hh_, ww_ = h_low + dh, w_low + dw
            valid = (hh_ >= 0) & (hh_ < height) & (ww_ >= 0) & (ww_ < width)
            row = ((n_idx * height + hh_.clamp(0, height - 1)) * width + ww_.clamp(0, width - 1)) * groups + g_idx
            self.rows.append(row.reshape(-1))
            self.valid.append(valid.to(dtype))
        self.weights = [self.hh * self.hw, self.hh * self.lw, self.lh * self.hw, self.lh * self.lw]

    def gather(self, x_rows: torch.Tensor, k: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Corner k's values (N,H,W,G,Cg) in the compute dtype, zero where the corner is outside."""
        return x_rows.index_select(0, self.rows[k]).reshape(shape).to(dtype) * self.valid[k].unsqueeze(-1)


def das_sample_torch(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Exact PyTorch DAS forward. Differentiable by autograd too (used for export)."""
    groups = _check(x, offset)
    n, height, width, channels = x.shape
    cd = _compute_dtype(x, offset)
    corners = _Corners(offset, height, width, groups, cd)
    x_rows = x.reshape(n * height * width * groups, channels // groups)
    shape = (n, height, width, groups, channels // groups)
    out = None
    for k in range(4):
        term = corners.weights[k].unsqueeze(-1) * corners.gather(x_rows, k, shape, cd)
        out = term if out is None else out + term
    return out.reshape(n, height, width, channels).to(x.dtype)


def das_sample_backward_torch(grad_out: torch.Tensor, x: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact PyTorch DAS backward: (grad_x, grad_offset), accumulated deterministically."""
    groups = _check(x, offset)
    n, height, width, channels = x.shape
    cg = channels // groups
    cd = _compute_dtype(x, offset, grad_out)
    corners = _Corners(offset, height, width, groups, cd)
    shape = (n, height, width, groups, cg)
    x_rows = x.reshape(-1, cg)
    go = grad_out.reshape(shape).to(cd)
    grad_rows = torch.zeros(n * height * width * groups, cg, dtype=cd, device=x.device)
    dots = []
    for k in range(4):
        w = (corners.weights[k] * corners.valid[k]).unsqueeze(-1)
        grad_rows.index_put_((corners.rows[k],), (go * w).reshape(-1, cg), accumulate=True)
        dots.append((go * corners.gather(x_rows, k, shape, cd)).sum(-1))
    d1, d2, d3, d4 = dots
    grad_w = corners.hh * (d2 - d1) + corners.lh * (d4 - d3)
    grad_h = corners.hw * (d3 - d1) + corners.lw * (d4 - d2)
    grad_offset = torch.stack([grad_w, grad_h], dim=-1).reshape(offset.shape)
    return grad_rows.reshape(x.shape).to(x.dtype), grad_offset.to(offset.dtype)


@torch.library.custom_op("openrec::das_sample", mutates_args=())
def _das_sample_op(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    warn_pytorch_fallback("das_sample", x)
    return das_sample_torch(x, offset)


@_das_sample_op.register_fake
def _(x, offset):
    _check(x, offset)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("openrec::das_sample_backward", mutates_args=())
def _das_sample_backward_op(grad_out: torch.Tensor, x: torch.Tensor, offset: torch.Tensor,
                            deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
    # ``deterministic`` selects the CUDA kernel's atomic-free path; this implementation always is.
    warn_pytorch_fallback("das_sample_backward", x)
    return das_sample_backward_torch(grad_out, x, offset)


@_das_sample_backward_op.register_fake
def _(grad_out, x, offset, deterministic):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(offset, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output):
    x, offset = inputs
    ctx.save_for_backward(x, offset)


def _backward(ctx, grad_out):
    x, offset = ctx.saved_tensors
    grad_x, grad_offset = torch.ops.openrec.das_sample_backward(grad_out, x, offset, deterministic_kernels())
    return grad_x, grad_offset


_das_sample_op.register_autograd(_backward, setup_context=_setup_context)


def das_sample(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample each channel group of ``x`` (N,H,W,C) at (h+dy, w+dx).

    ``offset`` is (N,H,W,2G) laid out (group, xy) with the width offset first; zeros outside.
    Dispatches to the CUDA kernel when one is registered, otherwise to :func:`das_sample_torch`.
    """
    from .selective_scan import export_formulation
    if export_formulation.active or (x.is_cuda and x.dtype == torch.float64):  # no float64 kernel
        return das_sample_torch(x, offset)
    if x.stride(-1) != 1:
        # The CUDA kernel reads any strides, but 16-byte loads need contiguous channels: one copy
        # here is cheaper than uncoalesced corner loads (e.g. an NCHW map viewed as NHWC).
        x = x.contiguous()
    return torch.ops.openrec.das_sample(x, offset)
