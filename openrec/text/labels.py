"""Label encoders: text -> named tensors for the CTC and SMTR heads.

Every encoder returns a dict of fixed-size tensors (so default collation stacks them) or raises
:class:`LabelRejected` with a reason, which the data pipeline counts. Characters outside the
dictionary are dropped and counted (``unknown_chars`` in the result), or rejected when
``drop_unknown`` is False.
"""
from __future__ import annotations

import random
from typing import Literal

import numpy as np
import torch

from ..registry import LABEL_ENCODERS
from .charset import Charset

__all__ = ["LabelRejected", "CTCLabelEncode", "SMTRLabelEncode", "GTCLabelEncode", "collate_labels"]


class LabelRejected(ValueError):
    def __init__(self, reason: str, text: str):
        super().__init__(f"{reason}: {text!r}")
        self.reason = reason


def _long(values) -> torch.Tensor:
    """An int64 tensor of a Python int or (nested) list, through numpy: 2-5x cheaper than torch.tensor on
    lists, and label encoding runs for every training sample in the loader's workers."""
    return torch.from_numpy(np.array(values, dtype=np.int64))


class _BaseEncode:
    def __init__(self, charset: Charset, drop_unknown: bool = True):
        self.charset = charset
        self.drop_unknown = drop_unknown

    def to_indices(self, text: str) -> tuple[list[int], int]:
        """Dictionary indices (0-based) of the kept characters and the number dropped."""
        kept = [self.charset.index[c] for c in text if c in self.charset.index]
        unknown = len(text) - len(kept)
        if unknown and not self.drop_unknown:
            raise LabelRejected("out_of_charset", text)
        if not kept:
            raise LabelRejected("empty", text)
        if len(kept) > self.charset.max_text_length:
            raise LabelRejected("too_long", text)
        return kept, unknown


@LABEL_ENCODERS.register("CTCLabelEncode")
class CTCLabelEncode(_BaseEncode):
    """``ctc_label`` (max_len,) with characters at 1..N and 0 (blank) padding; ``ctc_length``."""

    def __call__(self, text: str, rng: random.Random | None = None) -> dict:
        idx, unknown = self.to_indices(text)
        # one tensor per field from a Python list: per-element tensor writes cost more than the encoding
        label = [i + 1 for i in idx] + [0] * (self.charset.max_text_length - len(idx))
        return {"ctc_label": _long(label), "ctc_length": _long(len(idx)), "unknown_chars": _long(unknown)}


@LABEL_ENCODERS.register("SMTRLabelEncode")
class SMTRLabelEncode(_BaseEncode):
    """Sub-string matching targets in both directions.

    ``next``: the ``sub_str_len`` tokens before position i (left-padded with INF) predict char i;
    the last context predicts EOS. ``pre``: the tokens after position i (right-padded with INB)
    predict char i, scanning from the end; the first context predicts EOS.

    ``substring_noise`` regularises full-length contexts: ``"openocr"`` appends a copy with one
    random character replaced *and* replaces one character of the original in place (what OpenOCR
    does, so clean full contexts never reach training); ``"append"`` only appends the noisy copy;
    ``"off"`` leaves the substrings clean.
    """

    def __init__(self, charset: Charset, sub_str_len: int = 5, drop_unknown: bool = True,
                 substring_noise: Literal["openocr", "append", "off"] = "openocr"):
        super().__init__(charset, drop_unknown)
        self.sub_str_len = sub_str_len
        self.substring_noise = substring_noise
        self.slots = 2 * charset.max_text_length + 2

    def _noisy(self, pairs: list[tuple[list[int], int]], rng: random.Random) -> list[tuple[list[int], int]]:
        if self.substring_noise == "off":
            return pairs
        out = [(list(s), t) for s, t in pairs]
        seen = {tuple(s) for s, _ in out}
        for i in range(self.sub_str_len, len(pairs)):
            sub, target = pairs[i]
            copy = list(sub)
            copy[rng.randrange(self.sub_str_len)] = rng.randint(1, len(self.charset))
            if tuple(copy) not in seen:
                out.append((copy, target))
                seen.add(tuple(copy))
            if self.substring_noise == "openocr":
                out[i][0][rng.randrange(self.sub_str_len)] = rng.randint(1, len(self.charset))
        return out[: self.slots]

    def pairs(self, tokens: list[int]) -> tuple[list, list]:
        """Clean (context, target) pairs for both directions; tokens are SMTR ids (chars at 1..N)."""
        s, cs = self.sub_str_len, self.charset
        eos = cs.smtr_eos
        nxt = []
        for i in range(len(tokens) + 1):
            ctx = tokens[max(0, i - s): i]
            nxt.append(([cs.smtr_inf] * (s - len(ctx)) + ctx, tokens[i] if i < len(tokens) else eos))
        pre = []
        for i in range(len(tokens) - 1, -2, -1):
            ctx = tokens[i + 1: i + 1 + s]
            pre.append((ctx + [cs.smtr_inb] * (s - len(ctx)), tokens[i] if i >= 0 else eos))
        return nxt, pre

    def _pack(self, pairs, prefix: str) -> dict:
        pad, empty = self.charset.smtr_pad, self.slots - len(pairs)
        subs = [ctx for ctx, _ in pairs] + [[pad] * self.sub_str_len] * empty
        targets = [target for _, target in pairs] + [pad] * empty
        return {f"smtr_{prefix}_subs": _long(subs), f"smtr_{prefix}_label": _long(targets),
                f"smtr_{prefix}_count": _long(len(pairs))}

    def __call__(self, text: str, rng: random.Random | None = None) -> dict:
        idx, unknown = self.to_indices(text)
        rng = rng or random.Random()
        tokens = [i + 1 for i in idx]
        nxt, pre = self.pairs(tokens)
        label = [self.charset.smtr_bos] + tokens + [self.charset.smtr_eos]
        label += [self.charset.smtr_pad] * (self.charset.max_text_length + 2 - len(label))
        out = {"smtr_label": _long(label), "unknown_chars": _long(unknown)}
        out.update(self._pack(self._noisy(nxt, rng), "next"))
        out.update(self._pack(self._noisy(pre, rng), "pre"))
        return out


@LABEL_ENCODERS.register("GTCLabelEncode")
class GTCLabelEncode:
    """CTC fields plus SMTR fields (for GTC training: an RCTC/CTC head guided by SMTR)."""

    def __init__(self, charset: Charset, sub_str_len: int = 5, drop_unknown: bool = True,
                 substring_noise: Literal["openocr", "append", "off"] = "openocr"):
        self.ctc = CTCLabelEncode(charset, drop_unknown)
        self.smtr = SMTRLabelEncode(charset, sub_str_len, drop_unknown, substring_noise)

    def __call__(self, text: str, rng: random.Random | None = None) -> dict:
        out = self.ctc(text, rng)
        out.update(self.smtr(text, rng))
        return out


def collate_labels(encoder, texts: list[str], rng: random.Random | None = None) -> dict:
    """Encode and stack a list of texts (all must be accepted); keeps the raw texts under ``text``."""
    rows = [encoder(t, rng) for t in texts]
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    batch["text"] = list(texts)
    return batch
