"""SVTRv2Mamba: SVTRv2 whose global mixers may be DA-Mamba blocks.

Per block the ``mixer`` key picks the kind: ``Conv`` (ConvBlock, local), ``Mamba`` (DASSMBlock),
``Global`` (attention on tokens) and ``FGlobal`` (the same attention, named where OpenOCR flattens the
map). ``FMamba`` is an old alias of ``Mamba``. With every global mixer set to ``Global``/``FGlobal``
the model is the attention SVTRv2 baseline. Blocks declare the layout they work in and the stage
converts between (B, C, H, W) maps and (B, H*W, C) tokens only where the layout changes.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...config import ConfigError
from ...registry import ENCODERS
from ..common import Block, ConvBNLayer, DropPath, LayerNorm, LayerNorm2d, Mlp, drop_path_rates
from .dassm import DASSMBlock

__all__ = ["SVTRv2Mamba", "POPatchEmbed", "ConvBlock", "SubSample2DTo2D", "SVTRStage", "LastStage", "MIXERS"]

MIXERS = ("Conv", "Mamba", "Global", "FGlobal", "FMamba")
_fmamba_warned = False


def _warn_fmamba() -> None:
    global _fmamba_warned
    if not _fmamba_warned:
        _fmamba_warned = True
        warnings.warn("mixer 'FMamba' is a deprecated alias of 'Mamba' (DA-Mamba blocks take and return 2-D maps, "
                      "so no flatten point is needed); use 'Mamba'", FutureWarning, stacklevel=3)


class POPatchEmbed(nn.Module):
    """Two stride-2 3x3 Conv-BN-GELU layers (4x down); optional learned position map."""

    def __init__(self, in_channels: int, embed_dim: int, use_pos_embed: bool = False, max_size: tuple[int, int] = (8, 32)):
        super().__init__()
        self.patch_embed = nn.Sequential(
            ConvBNLayer(in_channels, embed_dim // 2, 3, 2, 1),
            ConvBNLayer(embed_dim // 2, embed_dim, 3, 2, 1),
        )
        self.abs_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *max_size)) if use_pos_embed else None
        if self.abs_pos_embed is not None:
            nn.init.trunc_normal_(self.abs_pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.abs_pos_embed is not None:
            pos = self.abs_pos_embed
            if pos.shape[-2:] != x.shape[-2:]:  # OpenOCR crops, which breaks for ratio buckets; we resize
                pos = F.interpolate(pos, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + pos
        return x


class ConvBlock(nn.Module):
    """SVTRv2's local mixer: ``x += grouped convs(x)``, then post-norm LN and MLP on tokens. (B,C,H,W) in/out."""

    layout = "2d"

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 num_conv: int = 2, kernel_size: int = 3, eps: float = 1e-6):
        super().__init__()
        self.mixer = nn.Sequential(*[nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=num_heads)
                                     for _ in range(num_conv)])
        self.norm1 = LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x + self.drop_path(self.mixer(x))
        t = self.norm1(x.flatten(2).transpose(1, 2))
        t = self.norm2(t + self.drop_path(self.mlp(t)))
        return t.transpose(1, 2).reshape(b, c, h, w)


class SubSample2DTo2D(nn.Module):
    """Strided 3x3 conv + LayerNorm over channels between stages; (B,C,H,W) in/out."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int] = (2, 1)):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, tuple(stride), 1)
        self.norm = LayerNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class _AttentionBlock(Block):
    layout = "tokens"


class _MambaBlock(DASSMBlock):
    layout = "2d"


class SVTRStage(nn.Module):
    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x: (B, C, H, W); returns (B, C', H', W') after the optional downsample."""
        h, w = size
        tokens = False
        for blk in self.blocks:
            if blk.layout == "tokens" and not tokens:
                x, tokens = x.flatten(2).transpose(1, 2), True
            elif blk.layout == "2d" and tokens:
                x, tokens = x.transpose(1, 2).reshape(x.shape[0], -1, h, w), False
            x = blk(x)
        if tokens:
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return self.downsample(x) if self.downsample is not None else x


class LastStage(nn.Module):
    """Mean over height -> Linear (no bias) -> Hardswish -> Dropout: (B,C,H,W) -> (B, W, out_channels)."""

    def __init__(self, in_channels: int, out_channels: int, last_drop: float):
        super().__init__()
        self.last_conv = nn.Linear(in_channels, out_channels, bias=False)
        self.hardswish = nn.Hardswish()
        self.dropout = nn.Dropout(last_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=2).transpose(1, 2)
        return self.dropout(self.hardswish(self.last_conv(x)))


@ENCODERS.register("SVTRv2Mamba")
class SVTRv2Mamba(nn.Module):
    """SVTRv2 / SVTRv2Mamba encoder.

    Input (B, in_channels, H, W) (or (B, n, in_channels, H, W)) with H and W multiples of 4. Output:
    ``feat2d`` -> (B, C, H', W'); ``last_stage`` -> (B, W', out_channels); otherwise tokens (B, H'W', C).
    """

    def __init__(self, in_channels: int = 3,
                 dims: tuple[int, ...] = (64, 128, 256),
                 depths: tuple[int, ...] = (3, 6, 3),
                 num_heads: tuple[int, ...] = (2, 4, 8),
                 mixer: tuple[tuple[str, ...], ...] | None = None,
                 head_dim: int = 16,
                 mlp_ratio: float = 4.0,
                 sub_k: tuple[tuple[int, int], ...] = ((1, 1), (2, 1)),
                 num_conv: int = 2,
                 kernel_size: int = 3,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1,
                 use_pos_embed: bool = False,
                 max_sz: tuple[int, int] = (32, 128),
                 last_stage: bool = False,
                 out_channels: int = 192,
                 last_drop: float = 0.1,
                 feat2d: bool = False,
                 eps: float = 1e-6,
                 channels_last: bool = True):
        super().__init__()
        # On CUDA, run the feature maps in channels-last memory: convolutions use cuDNN's NHWC kernels and
        # every (B,C,H,W) <-> tokens / NHWC change in the blocks (LayerNorm2d, DAS, the scan, attention)
        # becomes a free view instead of a copy. Same numbers either way.
        self.channels_last = channels_last
        num_stages = len(dims)
        mixer = mixer if mixer is not None else [["Conv"] * d for d in depths]
        self._validate(dims, depths, num_heads, mixer, head_dim, sub_k, last_stage, feat2d)
        self.feat2d = feat2d
        self.mixer_spec = [list(m) for m in mixer]  # kept for checkpoint conversion
        self.pope = POPatchEmbed(in_channels, dims[0], use_pos_embed, (max_sz[0] // 4, max_sz[1] // 4))
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            blocks = []
            for j, kind in enumerate(mixer[i]):
                rate = dpr[sum(depths[:i]) + j]
                if kind == "Conv":
                    blk = ConvBlock(dims[i], num_heads[i], mlp_ratio, drop_rate, rate, num_conv, kernel_size, eps)
                elif kind in ("Mamba", "FMamba"):
                    if kind == "FMamba":
                        _warn_fmamba()
                    blk = _MambaBlock(dims[i], head_dim, mlp_ratio, drop_rate, rate)
                else:
                    blk = _AttentionBlock(dims[i], num_heads[i], mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rate, eps=eps)
                blocks.append(blk)
            down = SubSample2DTo2D(dims[i], dims[i + 1], sub_k[i]) if i < num_stages - 1 else None
            self.stages.append(SVTRStage(blocks, down))
        self.last_stage = LastStage(dims[-1], out_channels, last_drop) if last_stage else None
        self.out_channels = out_channels if last_stage else dims[-1]
        self.apply(self._init_weights)
        for m in self.modules():
            if m is not self and hasattr(m, "init_special_weights"):
                m.init_special_weights()

    @staticmethod
    def _validate(dims, depths, num_heads, mixer, head_dim, sub_k, last_stage, feat2d) -> None:
        where = "Architecture.Encoder"
        n = len(dims)
        if n == 0:
            raise ConfigError(f"{where}.dims must name at least one stage")
        for key, value in (("depths", depths), ("num_heads", num_heads), ("mixer", mixer)):
            if len(value) != n:
                raise ConfigError(f"{where}.{key} has {len(value)} entries but dims has {n} stages")
        if len(sub_k) < n - 1:
            raise ConfigError(f"{where}.sub_k needs a stride for each of the {n - 1} downsamplers, got {len(sub_k)}")
        for i in range(n):
            if len(mixer[i]) != depths[i]:
                raise ConfigError(f"{where}.mixer[{i}] lists {len(mixer[i])} mixers but depths[{i}] = {depths[i]}")
            for kind in mixer[i]:
                if kind not in MIXERS:
                    raise ConfigError(f"{where}.mixer[{i}]: unknown mixer {kind!r} (accepted: {', '.join(MIXERS)})")
            if dims[i] % num_heads[i]:
                raise ConfigError(f"{where}.dims[{i}] = {dims[i]} is not divisible by num_heads[{i}] = {num_heads[i]}")
            if any(k in ("Mamba", "FMamba") for k in mixer[i]) and dims[i] % head_dim:
                raise ConfigError(f"{where}.dims[{i}] = {dims[i]} is not divisible by head_dim = {head_dim} "
                                  f"(DA-Mamba groups = dim // head_dim)")
        for i in range(n - 1):
            if len(sub_k[i]) != 2 or any(s < 1 for s in sub_k[i]):
                raise ConfigError(f"{where}.sub_k[{i}] must be two positive strides [h, w], got {sub_k[i]}")
        if last_stage and feat2d:
            raise ConfigError(f"{where}: last_stage and feat2d are mutually exclusive (choose the output layout)")

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def no_weight_decay(self) -> set[str]:
        """Name fragments excluded from weight decay (OpenOCR matches them as substrings)."""
        return {"patch_embed", "downsample", "abs_pos_embed", "A_log"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x.flatten(0, 1)
        if x.dim() != 4 or x.shape[-2] % 4 or x.shape[-1] % 4:
            raise ValueError(f"SVTRv2Mamba expects (B, C, H, W) images with H and W multiples of 4, got {tuple(x.shape)}")
        if self.channels_last and x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.pope(x)
        for stage in self.stages:
            x = stage(x, (x.shape[2], x.shape[3]))
        if self.last_stage is not None:
            return self.last_stage(x)
        if self.feat2d:
            return x
        return x.flatten(2).transpose(1, 2)
