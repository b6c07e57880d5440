"""DA-Mamba block: a dynamic adaptive scan (DAS) followed by a d_state=1 selective scan.

All modules take and return (B, C, H, W) maps. Parameter names follow the original SVTRv2Mamba
fork where that costs nothing (``pos_embed``, ``token_mixer``, ``da_scan`` ...) so checkpoint
import is a short rename table.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...ops import das_sample, dwconv3x3, export_formulation, linear, selective_scan
from ..common import DropPath, LayerNorm, LayerNorm2d
from .dassm_cpu import cpu_inference_applies, dassm_block_cpu_inference

__all__ = ["pointwise", "depthwise3x3", "ResDWC", "ConvFFN", "DynamicAdaptiveScan", "DASSM", "DASSMBlock"]


# On CPU, oneDNN's 1x1 convolution loses to a plain GEMM on small maps (batch 1-2 of a 32x128 image:
# -6% / -9% of tiny Mamba's forward) and draws level from about 1024 rows (perf note 57). The
# crossover depends on the CPU: OPENREC_POINTWISE_CPU_GEMM_ROWS overrides it (0: always the convolution).
CPU_GEMM_MAX_ROWS = 512


def cpu_gemm_max_rows() -> int:
    value = os.environ.get("OPENREC_POINTWISE_CPU_GEMM_ROWS")
    if value is None:
        return CPU_GEMM_MAX_ROWS
    if not value.isdigit():
        raise ValueError(f"OPENREC_POINTWISE_CPU_GEMM_ROWS must be a whole number of rows (0: never), got {value!r}")
    return int(value)


def _nhwc_view_ok(x: torch.Tensor) -> bool:
    """x is a channels-last (B, C, H, W) map, so its NHWC view is contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def pointwise_gemm(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The 1x1 convolution as F.linear over the NHWC view of a channels-last map (_nhwc_view_ok)."""
    return F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution, as one GEMM over the NHWC view of a channels-last map where that is faster
    (same parameters, same result up to rounding):
    - in 16-bit (autocast) on any device: cuDNN's channels-last 1x1 convolution adds the bias in a
      separate, slow broadcast kernel, while the GEMM fuses it; with a bias, its gradient runs on the
      column-sum kernel where ``openrec.ops.linear`` takes it. fp32 on CUDA keeps the convolution,
      which may use TF32 (an fp32 GEMM does not by default);
    - on CPU for maps of at most cpu_gemm_max_rows() pixels in all (batch x H x W)."""
    low_precision = x.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(x.device.type)
    if low_precision and _nhwc_view_ok(x):
        return linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1), conv.bias).permute(0, 3, 1, 2)
    # Not while exporting or compiling: a size test on a dynamic batch would pin the batch.
    if (not low_precision and x.device.type == "cpu" and not export_formulation.active
            and not torch.compiler.is_compiling() and _nhwc_view_ok(x)
            and x.shape[0] * x.shape[2] * x.shape[3] <= cpu_gemm_max_rows()):
        return pointwise_gemm(conv, x)
    return conv(x)


def depthwise3x3(conv: nn.Conv2d, x: torch.Tensor, epilogue: str = "none") -> torch.Tensor:
    """``conv(x)``, ``x + conv(x)`` (epilogue "residual"), ``silu(conv(x))`` ("silu") or ``g + conv(g)``
    with ``g = gelu(x)`` ("gelu_residual") for a depthwise convolution. A 3x3, stride-1, zero-padded one
    runs through ``openrec.ops.dwconv3x3``: on CUDA the fused kernel (bias, GELU and epilogue in the
    convolution, one kernel each way), elsewhere F.conv2d."""
    if (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == conv.in_channels == conv.out_channels and conv.padding_mode == "zeros"):
        return dwconv3x3(x, conv.weight, conv.bias, epilogue)
    if epilogue == "gelu_residual":
        x, epilogue = F.gelu(x), "residual"
    y = conv(x)
    return x + y if epilogue == "residual" else F.silu(y) if epilogue == "silu" else y


class ResDWC(nn.Module):
    """Residual depthwise 3x3 convolution: ``x + dwconv(x)`` (a conditional position encoding)."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise3x3(self.conv, x, "residual")


class ConvFFN(nn.Module):
    """1x1 conv -> GELU -> ResDWC -> 1x1 conv, with dropout after the activation and the output.

    Without that dropout (p = 0, or eval mode) the GELU runs inside the ResDWC's fused op: its output
    never makes a round trip through memory, and the backward reads the pre-activation once."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.conv = ResDWC(hidden_dim)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pointwise(self.fc1, x)
        if self.drop.p == 0 or not self.training:
            x = depthwise3x3(self.conv.conv, x, "gelu_residual")
        else:
            x = self.conv(self.drop(self.act(x)))
        return self.drop(pointwise(self.fc2, x))


class DynamicAdaptiveScan(nn.Module):
    """Predicts one (dx, dy) per pixel and channel group from the block input and resamples ``x``.

    Offsets come from DWConv3x3 -> LayerNorm -> GELU -> Linear(C, 2G). The Linear starts at zero,
    so DAS is exactly the identity at initialisation (see :meth:`init_special_weights`).
    """

    def __init__(self, dim: int, groups: int):
        super().__init__()
        self.groups = groups
        self.dw_conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm = LayerNorm(dim)
        self.act = nn.GELU()
        self.offset = nn.Linear(dim, 2 * groups)
        self.init_special_weights()

    def init_special_weights(self) -> None:
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, block_input: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """block_input: (B, C, H, W) normalised block input; x: (B, H, W, C) -> (B, H, W, C)."""
        feats = depthwise3x3(self.dw_conv, block_input).permute(0, 2, 3, 1)
        offset = linear(self.act(self.norm(feats)), self.offset.weight, self.offset.bias)
        return das_sample(x, offset)


class DASSM(nn.Module):
    """in_proj -> DWConv3x3 + SiLU -> DAS -> selective scan over the H*W tokens -> LayerNorm -> out_proj."""

    def __init__(self, dim: int, groups: int, drop: float = 0.0, dt_min: float = 1e-3, dt_max: float = 0.1):
        super().__init__()
        self.dim = dim
        self.dt_rank = math.ceil(dim / 16)
        self.in_proj = nn.Conv2d(dim, dim, 1, bias=False)
        self.conv2d = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.act = nn.SiLU()
        self.da_scan = DynamicAdaptiveScan(dim, groups)
        # x_proj produces [dt (dt_rank), B (1), C (1)] per token; dt_proj lifts dt back to dim channels.
        self.x_proj_weight = nn.Parameter(torch.empty(self.dt_rank + 2, dim))
        self.dt_proj_weight = nn.Parameter(torch.empty(dim, self.dt_rank))
        self.dt_proj_bias = nn.Parameter(torch.empty(dim))
        self.A_log = nn.Parameter(torch.empty(dim, 1))
        self.D = nn.Parameter(torch.empty(dim))
        self.out_norm = LayerNorm(dim)
        self.out_proj = nn.Conv2d(dim, dim, 1, bias=False)
        self.drop = nn.Dropout(drop)
        self.dt_min, self.dt_max = dt_min, dt_max
        self.init_special_weights()

    @torch.no_grad()
    def init_special_weights(self) -> None:
        """Mamba's initialisation: dt log-uniform in [dt_min, dt_max] through the bias, A = -1, D = 1."""
        nn.init.uniform_(self.x_proj_weight, -self.dim ** -0.5, self.dim ** -0.5)
        nn.init.uniform_(self.dt_proj_weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(self.dim) * (math.log(self.dt_max) - math.log(self.dt_min)) + math.log(self.dt_min))
        dt = dt.clamp(min=1e-4)
        self.dt_proj_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log.zero_()
        self.D.fill_(1.0)

    def ssm(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) channels-last -> y: (B, L, C) with L = H*W in row-major order."""
        b, h, w, c = x.shape
        tokens = x.reshape(b, h * w, c)
        x_dbl = F.linear(tokens, self.x_proj_weight)  # (B, L, R+2)
        dts = F.linear(x_dbl[..., : self.dt_rank], self.dt_proj_weight)  # (B, L, C)
        Bs = x_dbl[..., self.dt_rank].unsqueeze(1)
        Cs = x_dbl[..., self.dt_rank + 1].unsqueeze(1)
        A = -torch.exp(self.A_log.float())
        y = selective_scan(tokens.transpose(1, 2), dts.transpose(1, 2), A, Bs, Cs, self.D.float(),
                           self.dt_proj_bias.float(), delta_softplus=True)
        return y.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        feats = depthwise3x3(self.conv2d, pointwise(self.in_proj, x), "silu").permute(0, 2, 3, 1)  # self.act fused
        feats = self.da_scan(x, feats)
        y = self.out_norm(self.ssm(feats))
        # (B, L, C) -> a channels-last (B, C, H, W) view. Not transpose+reshape: at batch 1 that leaves a
        # batch stride of C, which oneDNN does not take as channels-last (its out_proj output came back
        # NCHW, and the residual add then mixed layouts; 4% of batch-1 CPU latency, perf note 53).
        y = y.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.drop(pointwise(self.out_proj, y))


class DASSMBlock(nn.Module):
    """``x = ResDWC(x); x += drop_path(DASSM(LN2d(x))); x += drop_path(ConvFFN(BN(x)))``; (B,C,H,W) in/out."""

    def __init__(self, dim: int, head_dim: int = 16, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.pos_embed = ResDWC(dim)
        self.norm1 = LayerNorm2d(dim)
        self.token_mixer = DASSM(dim, groups=dim // head_dim, drop=drop)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not self.training and cpu_inference_applies(self, x):
            return dassm_block_cpu_inference(self, x)  # the same calls without the layers (dassm_cpu.py)
        x = self.pos_embed(x)
        x = x + self.drop_path(self.token_mixer(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
