"""Recognition heads, registered by name in ``openrec.registry.DECODERS``."""
from .ctc import CTCDecoder, RCTCDecoder
from .gtc import GTCDecoder
from .smtr import SMTRDecoder

__all__ = ["CTCDecoder", "RCTCDecoder", "GTCDecoder", "SMTRDecoder"]
