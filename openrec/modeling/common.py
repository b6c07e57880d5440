"""Layers shared by encoders and decoders."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..ops import layer_norm, linear
from ..ops.kernels import env_switch
from .cpu_flat import attention_block_cpu_inference, cpu_inference_fixed

__all__ = ["DropPath", "Mlp", "Attention", "Block", "ConvBNLayer", "LayerNorm", "LayerNorm2d", "drop_path_rates",
           "attention"]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, kept off cuDNN's backend on CUDA (flash, memory-efficient or
    math instead) unless ``OPENREC_CUDNN_ATTENTION=1``. cuDNN builds a graph for every new input shape,
    0.2-0.4 s on the host, and the SMTR decoder's shapes change with nearly every batch (the batch's
    substring count); at the recipe's shapes the other backends were no slower (H100, 2026-12-07,
    perf note 64). A user who switched cuDNN attention off keeps it off."""
    if (q.is_cuda and torch.backends.cuda.cudnn_sdp_enabled() and not torch.compiler.is_compiling()
            and not env_switch("OPENREC_CUDNN_ATTENTION", "0")):
        torch.backends.cuda.enable_cudnn_sdp(False)  # a flag read when SDPA picks its backend; restored below
        try:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        finally:
            torch.backends.cuda.enable_cudnn_sdp(True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


def drop_path_rates(drop_path_rate: float, total_depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``drop_path_rate`` over all blocks."""
    if total_depth <= 1:
        return [0.0] * total_depth
    return [drop_path_rate * i / (total_depth - 1) for i in range(total_depth)]


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval or at rate 0)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout on tokens (B, N, C)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.drop(self.act(linear(x, self.fc1.weight, self.fc1.bias)))
        return self.drop(linear(hidden, self.fc2.weight, self.fc2.bias))


class Attention(nn.Module):
    """Multi-head self-attention on tokens (B, N, C) through ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = linear(x, self.qkv.weight, self.qkv.bias).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(linear(x.transpose(1, 2).reshape(b, n, c), self.proj.weight, self.proj.bias))


class Block(nn.Module):
    """Transformer block on tokens. ``prenorm=False`` is SVTRv2's post-norm form:
    ``x = norm1(x + attn(x)); x = norm2(x + mlp(x))``; ``prenorm=True`` the usual pre-norm form."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, prenorm: bool = False, eps: float = 1e-6):
        super().__init__()
        self.prenorm = prenorm
        self.norm1 = LayerNorm(dim, eps=eps)
        self.mixer = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not self.training and cpu_inference_fixed(self, x, "OPENREC_ATTENTION_CPU_FLAT"):
            return attention_block_cpu_inference(self, x)  # the same calls without the layers (cpu_flat.py)
        if self.prenorm:
            x = x + self.drop_path(self.mixer(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop_path(self.mixer(x)))
        return self.norm2(x + self.drop_path(self.mlp(x)))


class ConvBNLayer(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


_optimizer_steps = 0  # bumped after every optimizer step: see LayerNorm._bf16_affine


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that keeps bf16 under CUDA bf16 autocast: it takes and returns bf16 (the kernel
    still accumulates its statistics in fp32). Plain autocast runs LayerNorm in fp32, which costs a
    cast pass in, an fp32 output twice the size, and a cast pass back in the GEMM that reads it.
    On CUDA the norm runs on openrec's LayerNorm kernel where it applies (``openrec.ops.layer_norm``:
    rows of up to 512 channels, not under torch.compile). Same parameters and state_dict keys; on the
    CPU and under fp16 autocast it is nn.LayerNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and torch.is_autocast_enabled("cuda"):
            if torch.get_autocast_dtype("cuda") != torch.bfloat16:  # fp16 autocast: its fp32 LayerNorm
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            weight, bias = self._bf16_affine()
            with torch.autocast("cuda", enabled=False):  # autocast would run the norm in fp32
                return layer_norm(x.to(torch.bfloat16), self.normalized_shape, weight, bias, self.eps)
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def train(self, mode: bool = True):
        self.__dict__.pop("_bf16_cache", None)  # every switch (model.eval() before an evaluation) recasts
        return super().train(mode)

    def _bf16_affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """bf16 copies of weight and bias: cast on every call when gradients flow (the casts are part
        of the graph); cached between calls without grad (inference) until the parameters change.
        A change is a new version of a parameter (copy_, load_state_dict, in-place arithmetic) or any
        optimizer step: fused AdamW updates parameters without bumping their version counters, and a
        cache keyed on versions alone served stale weights to evaluations during training."""
        params = (self.weight, self.bias)
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return tuple(None if p is None else p.to(torch.bfloat16) for p in params)
        key = (_optimizer_steps,) + tuple(None if p is None else (p.data_ptr(), p._version) for p in params)
        cached = self.__dict__.get("_bf16_cache")
        if cached is None or cached[0] != key:
            cached = (key, tuple(None if p is None else p.detach().to(torch.bfloat16) for p in params))
            self.__dict__["_bf16_cache"] = cached
        return cached[1]


class LayerNorm2d(LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
