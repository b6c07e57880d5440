"""Model building: ``build_model(config['Architecture'])`` -> encoder + decoder recognizer."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ConfigError
from ..registry import DECODERS, ENCODERS
from ..text.charset import Charset, build_charset
from . import decoders, encoders  # noqa: F401  (registers the components)

__all__ = ["Recognizer", "build_model"]

_ARCH_KEYS = {
    "model_type": "informational (OpenOCR compatibility), must be 'rec'",
    "algorithm": "informational name of the model",
    "in_channels": "image channels (default 3)",
    "Transform": "must be null (no rectification module is provided)",
    "Encoder": "encoder config with 'name'",
    "Decoder": "decoder config with 'name'",
}


class Recognizer(nn.Module):
    """images (B, 3, H, W) -> encoder -> decoder -> dict of named outputs (same type in train and eval)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, images: torch.Tensor, batch: dict | None = None) -> dict:
        return self.decoder(self.encoder(images), batch)

    def no_weight_decay(self) -> set[str]:
        """Name fragments (matched as substrings of parameter names) excluded from weight decay."""
        names: set[str] = set()
        for module in (self.encoder, self.decoder):
            if hasattr(module, "no_weight_decay"):
                names |= set(module.no_weight_decay())
        return names


def build_model(arch_cfg: dict, charset: Charset | None = None) -> Recognizer:
    """Build the recognizer of an ``Architecture`` section.

    ``charset`` sizes the heads; by default the built-in 94-symbol English set with
    ``max_text_length`` 25 (the trainer passes the one from ``Global``).
    """
    if not isinstance(arch_cfg, dict):
        raise ConfigError("Architecture must be a mapping with Encoder and Decoder sections")
    for key in arch_cfg:
        if key not in _ARCH_KEYS:
            raise ConfigError(f"Architecture: unknown key {key!r} (accepted: {', '.join(_ARCH_KEYS)})")
    for key in ("Encoder", "Decoder"):
        if key not in arch_cfg:
            raise ConfigError(f"Architecture: missing section {key!r}")
    if arch_cfg.get("model_type", "rec") != "rec":
        raise ConfigError(f"Architecture.model_type: only 'rec' is supported, got {arch_cfg['model_type']!r}")
    if arch_cfg.get("Transform") is not None:
        raise ConfigError("Architecture.Transform: no transform modules exist; set it to null or remove it")
    in_channels = arch_cfg.get("in_channels", 3)
    charset = charset or build_charset()
    encoder = ENCODERS.build(arch_cfg["Encoder"], where="Architecture.Encoder", in_channels=in_channels)
    decoder = DECODERS.build(arch_cfg["Decoder"], where="Architecture.Decoder",
                             in_channels=encoder.out_channels, charset=charset)
    if getattr(decoder, "requires_feat2d", False) and not getattr(encoder, "feat2d", True):
        raise ConfigError(f"Architecture.Decoder: {arch_cfg['Decoder']['name']} (RCTC) needs (B, C, H, W) features: "
                          "set Architecture.Encoder.feat2d: true")
    return Recognizer(encoder, decoder)
