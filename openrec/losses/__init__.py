"""Losses, kept outside the heads: ``loss(outputs, batch) -> {'loss': total, <parts>...}``."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import LOSSES
from ..text.charset import Charset

__all__ = ["CTCLoss", "SMTRLoss", "GTCLoss", "build_loss"]


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor, zero_infinity: bool) -> torch.Tensor:
    """Per-sample CTC negative log-likelihood (blank 0), averaged over the batch; computed in fp32."""
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, K)
    t, b = log_probs.shape[:2]
    input_lengths = torch.full((b,), t, dtype=torch.long, device=logits.device)
    loss = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="none",
                      zero_infinity=zero_infinity)
    return loss.mean()


@LOSSES.register("CTCLoss")
class CTCLoss(nn.Module):
    """CTC on ``ctc_logits`` against ``ctc_label``/``ctc_length``. ``zero_infinity`` zeroes samples whose
    label cannot be aligned (more characters than frames) instead of returning inf."""

    def __init__(self, zero_infinity: bool = True):
        super().__init__()
        self.zero_infinity = zero_infinity

    def forward(self, outputs: dict, batch: dict) -> dict:
        loss = ctc_loss(outputs["ctc_logits"], batch["ctc_label"], batch["ctc_length"], self.zero_infinity)
        return {"loss": loss, "ctc_loss": loss.detach()}


@LOSSES.register("SMTRLoss")
class SMTRLoss(nn.Module):
    """Cross-entropy of the next and pre sub-string predictions (padding ignored), one mean over both."""

    def __init__(self, charset: Charset):
        super().__init__()
        self.ignore_index = charset.smtr_pad

    def forward(self, outputs: dict, batch: dict) -> dict:
        n = outputs["smtr_next_logits"].shape[1]
        n_pre = outputs["smtr_pre_logits"].shape[1]
        logits = torch.cat([outputs["smtr_next_logits"], outputs["smtr_pre_logits"]], dim=1).float()
        targets = torch.cat([batch["smtr_next_label"][:, :n], batch["smtr_pre_label"][:, :n_pre]], dim=1)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=self.ignore_index)
        return {"loss": loss, "smtr_loss": loss.detach()}


@LOSSES.register("GTCLoss")
class GTCLoss(nn.Module):
    """``ctc_weight * CTC + gtc_weight * SMTR``; in eval (no SMTR logits) the CTC part alone."""

    def __init__(self, charset: Charset, ctc_weight: float = 0.1, gtc_weight: float = 1.0, zero_infinity: bool = True):
        super().__init__()
        self.ctc = CTCLoss(zero_infinity)
        self.smtr = SMTRLoss(charset)
        self.ctc_weight = ctc_weight
        self.gtc_weight = gtc_weight

    def forward(self, outputs: dict, batch: dict) -> dict:
        ctc = self.ctc(outputs, batch)["loss"]
        if "smtr_next_logits" not in outputs:
            return {"loss": ctc, "ctc_loss": ctc.detach()}
        smtr = self.smtr(outputs, batch)["loss"]
        return {"loss": self.ctc_weight * ctc + self.gtc_weight * smtr, "ctc_loss": ctc.detach(), "smtr_loss": smtr.detach()}


def build_loss(cfg: dict, charset: Charset) -> nn.Module:
    return LOSSES.build(cfg, where="Loss", charset=charset)
