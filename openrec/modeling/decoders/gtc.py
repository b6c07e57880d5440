"""GTC: a CTC-family head (CTC or RCTC) trained with SMTR guidance; SMTR is optional at inference."""
from __future__ import annotations

import torch
import torch.nn as nn

from ...config import ConfigError
from ...registry import DECODERS
from ...text.charset import Charset

__all__ = ["GTCDecoder"]


@DECODERS.register("GTCDecoder")
class GTCDecoder(nn.Module):
    """``ctc_decoder`` always runs; ``gtc_decoder`` (SMTR) runs in training and, if ``infer_gtc``, in eval.

    ``gtc_decoder: null`` builds the deployment model (CTC branch only; a trained GTC checkpoint
    loads into it with the ``decoder.gtc_decoder.*`` keys reported as unexpected). ``detach`` stops
    the CTC loss from reaching the encoder. Returns the union of both branches' dicts.
    """

    def __init__(self, in_channels: int, charset: Charset, ctc_decoder: dict, gtc_decoder: dict | None = None,
                 detach: bool = False, infer_gtc: bool = False):
        super().__init__()
        if infer_gtc and gtc_decoder is None:
            raise ConfigError("Architecture.Decoder.infer_gtc: true needs a gtc_decoder")
        self.ctc_decoder = DECODERS.build(ctc_decoder, where="Architecture.Decoder.ctc_decoder",
                                          in_channels=in_channels, charset=charset)
        self.gtc_decoder = (DECODERS.build(gtc_decoder, where="Architecture.Decoder.gtc_decoder",
                                           in_channels=in_channels, charset=charset) if gtc_decoder else None)
        self.detach = detach
        self.infer_gtc = infer_gtc
        self.requires_feat2d = getattr(self.ctc_decoder, "requires_feat2d", False)

    def no_weight_decay(self) -> set[str]:
        names: set[str] = set()
        for branch in (self.ctc_decoder, self.gtc_decoder):
            if branch is not None and hasattr(branch, "no_weight_decay"):
                names |= set(branch.no_weight_decay())
        return names

    def forward(self, feats: torch.Tensor, batch: dict | None = None) -> dict:
        out = dict(self.ctc_decoder(feats.detach() if self.detach else feats, batch))
        if self.gtc_decoder is not None and (self.training or self.infer_gtc):
            out.update(self.gtc_decoder(feats, batch))
        return out
