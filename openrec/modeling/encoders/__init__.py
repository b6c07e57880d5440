"""Encoders, registered by name in ``openrec.registry.ENCODERS``."""
from .dassm import DASSM, ConvFFN, DASSMBlock, DynamicAdaptiveScan, ResDWC
from .svtrv2_mamba import MIXERS, ConvBlock, LastStage, POPatchEmbed, SubSample2DTo2D, SVTRStage, SVTRv2Mamba

__all__ = ["DASSM", "ConvFFN", "DASSMBlock", "DynamicAdaptiveScan", "ResDWC", "MIXERS", "ConvBlock", "LastStage",
           "POPatchEmbed", "SubSample2DTo2D", "SVTRStage", "SVTRv2Mamba"]
