"""Text side: character dictionaries, label encoders and post-processing decoders."""
from .charset import BUILTIN_DICTS, Charset, build_charset, charset_from_config
from .decode import CTCLabelDecode, GTCLabelDecode, SMTRLabelDecode, ctc_greedy_decode, smtr_greedy_decode
from .labels import CTCLabelEncode, GTCLabelEncode, LabelRejected, SMTRLabelEncode, collate_labels

__all__ = [
    "BUILTIN_DICTS", "Charset", "build_charset", "charset_from_config", "CTCLabelDecode", "GTCLabelDecode", "SMTRLabelDecode",
    "ctc_greedy_decode", "smtr_greedy_decode", "CTCLabelEncode", "GTCLabelEncode", "LabelRejected",
    "SMTRLabelEncode", "collate_labels", "build_label_encoder", "build_postprocess",
]


def build_label_encoder(cfg: dict, charset: Charset):
    from ..registry import LABEL_ENCODERS
    return LABEL_ENCODERS.build(cfg, where="LabelEncode", charset=charset)


def build_postprocess(cfg: dict, charset: Charset):
    from ..registry import POSTPROCESSORS
    return POSTPROCESSORS.build(cfg, where="PostProcess", charset=charset)
