"""Post-processing: model outputs (dict) -> texts with confidences (dict of lists)."""
from __future__ import annotations

import torch

from ..registry import POSTPROCESSORS
from .charset import Charset

__all__ = ["CTCLabelDecode", "SMTRLabelDecode", "GTCLabelDecode", "ctc_greedy_decode", "smtr_greedy_decode"]


def ctc_greedy_decode(probs: torch.Tensor, charset: Charset) -> tuple[list[str], list[float]]:
    """Argmax per frame, collapse repeats, drop blanks; confidence = mean probability of kept frames."""
    conf, idx = probs.max(dim=-1)
    texts, confs = [], []
    for seq, p in zip(idx.tolist(), conf.tolist()):
        chars, kept, prev = [], [], None
        for c, q in zip(seq, p):
            if c != 0 and c != prev:
                chars.append(charset.characters[c - 1])
                kept.append(q)
            prev = c
        texts.append("".join(chars))
        confs.append(sum(kept) / len(kept) if kept else 0.0)
    return texts, confs


def smtr_greedy_decode(probs: torch.Tensor, charset: Charset) -> tuple[list[str], list[float]]:
    """Read tokens until EOS (skipping BOS); confidence = mean probability of the tokens read, EOS included."""
    conf, idx = probs.max(dim=-1)
    texts, confs = [], []
    n = len(charset)
    for seq, p in zip(idx.tolist(), conf.tolist()):
        chars, kept = [], []
        for c, q in zip(seq, p):
            kept.append(q)
            if c == charset.smtr_eos:
                break
            if 1 <= c <= n:
                chars.append(charset.characters[c - 1])
        texts.append("".join(chars))
        confs.append(sum(kept) / len(kept) if kept else 0.0)
    return texts, confs


@POSTPROCESSORS.register("CTCLabelDecode")
class CTCLabelDecode:
    """Decodes ``ctc_logits`` into ``{'text': [...], 'conf': [...]}``."""

    def __init__(self, charset: Charset):
        self.charset = charset

    def __call__(self, outputs: dict) -> dict:
        probs = outputs["ctc_logits"].float().softmax(-1)
        texts, confs = ctc_greedy_decode(probs, self.charset)
        return {"text": texts, "conf": confs}


@POSTPROCESSORS.register("SMTRLabelDecode")
class SMTRLabelDecode:
    """Decodes ``smtr_probs`` (greedy inference of the SMTR head) into ``{'text', 'conf'}``."""

    def __init__(self, charset: Charset):
        self.charset = charset

    def __call__(self, outputs: dict) -> dict:
        texts, confs = smtr_greedy_decode(outputs["smtr_probs"].float(), self.charset)
        return {"text": texts, "conf": confs}


@POSTPROCESSORS.register("GTCLabelDecode")
class GTCLabelDecode:
    """CTC branch as ``text``/``conf`` (the deployed path); SMTR as ``smtr_text``/``smtr_conf`` when present."""

    def __init__(self, charset: Charset):
        self.ctc = CTCLabelDecode(charset)
        self.smtr = SMTRLabelDecode(charset)

    def __call__(self, outputs: dict) -> dict:
        result = self.ctc(outputs)
        if "smtr_probs" in outputs:
            smtr = self.smtr(outputs)
            result["smtr_text"], result["smtr_conf"] = smtr["text"], smtr["conf"]
        return result
