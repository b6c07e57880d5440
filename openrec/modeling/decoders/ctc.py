"""CTC heads: a plain linear classifier and RCTC (feature rearrangement, SVTRv2's FRM)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ...registry import DECODERS
from ...text.charset import Charset
from ..common import Block

__all__ = ["CTCDecoder", "RCTCDecoder"]


@DECODERS.register("CTCDecoder")
class CTCDecoder(nn.Module):
    """Linear (optionally Linear-Linear) classifier over frames.

    Takes tokens (B, T, C) (e.g. from ``last_stage``) or a map (B, C, H, W), averaged over H into
    W frames. Returns ``{'ctc_logits': (B, T, N+1)}`` in train and eval alike.
    """

    def __init__(self, in_channels: int, charset: Charset, mid_channels: int | None = None):
        super().__init__()
        num_classes = charset.num_ctc_classes
        if mid_channels is None:
            self.fc = nn.Linear(in_channels, num_classes)
        else:
            self.fc = nn.Sequential(nn.Linear(in_channels, mid_channels), nn.Linear(mid_channels, num_classes))

    def forward(self, feats: torch.Tensor, batch: dict | None = None) -> dict:
        if feats.dim() == 4:
            feats = feats.mean(dim=2).transpose(1, 2)
        return {"ctc_logits": self.fc(feats)}


@DECODERS.register("RCTCDecoder")
class RCTCDecoder(nn.Module):
    """Feature rearrangement + CTC: a pre-norm transformer block along each row, then a learned
    character token attends over H within each column (softmax over H, no scaling) to pool one
    feature per column. Needs a (B, C, H, W) map (encoder ``feat2d: true``)."""

    requires_feat2d = True

    def __init__(self, in_channels: int, charset: Charset):
        super().__init__()
        if in_channels % 32:
            raise ValueError(f"RCTCDecoder: in_channels {in_channels} must be a multiple of 32 (heads = C // 32)")
        self.char_token = nn.Parameter(torch.zeros(1, 1, in_channels))
        nn.init.trunc_normal_(self.char_token, std=0.02)
        self.w_atten_block = Block(in_channels, in_channels // 32, mlp_ratio=4.0, qkv_bias=False, prenorm=True, eps=1e-5)
        self.fc_kv = nn.Linear(in_channels, 2 * in_channels)
        self.fc = nn.Linear(in_channels, charset.num_ctc_classes)

    def no_weight_decay(self) -> set[str]:
        return {"char_token"}

    def forward(self, feats: torch.Tensor, batch: dict | None = None) -> dict:
        if feats.dim() != 4:
            raise ValueError(f"RCTCDecoder needs (B, C, H, W) features (set the encoder's feat2d: true), got {tuple(feats.shape)}")
        b, c, h, w = feats.shape
        rows = self.w_atten_block(feats.permute(0, 2, 3, 1).reshape(b * h, w, c))
        k, v = self.fc_kv(rows.reshape(b, h * w, c)).chunk(2, dim=-1)
        attn = (k @ self.char_token.transpose(1, 2)).reshape(b, h, w).softmax(dim=1)
        pooled = torch.einsum("bhw,bhwc->bwc", attn, v.reshape(b, h, w, c))
        return {"ctc_logits": self.fc(pooled)}
