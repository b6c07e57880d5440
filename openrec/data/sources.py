"""Where samples come from: LMDB folders in the standard layout and the on-the-fly synthetic engine.

A source has ``name``, ``__len__``, ``aspect_ratios(epoch, max_ratio)`` (for bucketing without
decoding images) and ``load(index, epoch, rng) -> (image RGB uint8, label)``. Loading may raise
``DecodeError``/``MissingRecord`` with a reason, which the dataset counts as a skip.
"""
from __future__ import annotations

import os
import random

import numpy as np

from .transforms import DecodeError, decode_image

__all__ = ["LMDBSource", "SynthSource", "MissingRecord", "split_records"]


class MissingRecord(DecodeError):
    pass


_ENVS: dict[str, object] = {}


def _open_lmdb(path: str):
    """One read-only, lock-free environment per folder, shared by the process and the DataLoader
    workers it forks: py-lmdb refuses to open a folder a second time in a process, and a forked
    worker counts as the process that opened it (so it must reuse the inherited handle, never reopen)."""
    import lmdb
    key = os.path.realpath(path)
    env = _ENVS.get(key)
    if env is None:
        env = _ENVS[key] = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False, max_readers=126)
    return env


def split_records(num_records: int, holdout: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of records 0..n-1 into (kept, held out), ``round(holdout * n)`` held out,
    both sorted. It depends only on n, ``holdout`` and ``seed``, so a training entry (``part: train``) and
    an evaluation entry (``part: holdout``) of the same folder and split never share a record."""
    order = np.random.default_rng(seed).permutation(num_records)
    k = int(round(holdout * num_records))
    return np.sort(order[k:]), np.sort(order[:k])


class LMDBSource:
    """An LMDB folder with ``num-samples``, ``image-%09d``, ``label-%09d`` and optional ``wh-%09d``
    ("W_H") keys, 1-indexed. Opened read-only without locks; re-opened lazily in each worker.
    ``split={'holdout': f, 'part': 'train'|'holdout', 'seed': s}`` uses one side of a fixed random split
    (:func:`split_records`), e.g. to validate on part of a real training set; the name then ends in
    ``[train]`` or ``[holdout]``, and sample i is the i-th record of that side."""

    def __init__(self, path: str, name: str | None = None, split: dict | None = None):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"LMDB dataset folder not found: {path}")
        self.path = path
        self.name = name or os.path.basename(os.path.normpath(path)) + (f"[{split['part']}]" if split else "")
        with _open_lmdb(path).begin(write=False) as txn:
            raw = txn.get(b"num-samples")
            if raw is None:
                raise ValueError(f"{path}: missing 'num-samples' key (not an STR LMDB?)")
            try:
                claimed = int(raw.decode())
            except ValueError:
                raise ValueError(f"{path}: 'num-samples' is not an integer: {raw[:20]!r}") from None
            self.num_samples = claimed
            self.sizes = np.zeros((claimed, 2), dtype=np.float32)  # (w, h); 0 = unknown
            self.missing_wh = 0
            for i in range(claimed):
                wh = txn.get(b"wh-%09d" % (i + 1))
                try:
                    w, h = (float(v) for v in wh.decode().split("_"))
                    self.sizes[i] = (w, h)
                except Exception:
                    self.missing_wh += 1
        self.records = np.arange(claimed)  # sample i -> record records[i] (0-based)
        if split:
            kept, held = split_records(claimed, split["holdout"], split.get("seed", 0))
            self.records = held if split["part"] == "holdout" else kept
            self.sizes = self.sizes[self.records]
            self.num_samples = len(self.records)

    def __len__(self) -> int:
        return self.num_samples

    def _txn(self):
        return _open_lmdb(self.path).begin(write=False)

    def aspect_ratios(self, epoch: int, max_ratio: int) -> np.ndarray:
        """Buckets from the ``wh`` keys; records without one are assumed to be 4:1 until loaded."""
        w, h = self.sizes[:, 0], self.sizes[:, 1]
        known = (w > 0) & (h > 0)
        ratios = np.full(len(self), min(4, max_ratio), dtype=np.int64)
        ratios[known] = np.clip(np.round(w[known] / h[known]), 1, max_ratio)
        return ratios

    def load(self, index: int, epoch: int, rng: random.Random) -> tuple[np.ndarray, str]:
        record = int(self.records[index]) + 1
        with self._txn() as txn:
            image = txn.get(b"image-%09d" % record)
            label = txn.get(b"label-%09d" % record)
        if image is None or label is None:
            raise MissingRecord("missing_record", f"{self.name}[{record}]")
        try:
            text = label.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("invalid_utf8_label", f"{self.name}[{record}]") from None
        return decode_image(image), text


class SynthSource:
    """``num_samples`` synthetic word images per epoch; the texts of epoch e are drawn from
    ``seed`` and e, and sample i from (seed, e, i), so any sample is reproducible on its own.
    ``fixed: true`` keeps the same texts and images every epoch (a held-out validation set)."""

    def __init__(self, characters: str, max_len: int, num_samples: int, seed: int = 0, preset: str = "default",
                 style: dict | None = None, font_dirs: tuple[str, ...] = (), fixed: bool = False, name: str = "synth"):
        from .synth import PRESETS, SynthRenderer, SynthStyle, TextSampler, discover_fonts
        if preset not in PRESETS:
            raise KeyError(f"unknown synth preset {preset!r} (accepted: {', '.join(PRESETS)})")
        self.name = name
        self.num_samples = num_samples
        self.seed = seed
        self.fixed = fixed
        self.fonts = discover_fonts(characters, tuple(font_dirs))
        st = SynthStyle.from_dict({**PRESETS[preset], **(style or {})})
        self.text_sampler = TextSampler(characters, max_len, temperature=st.word_temperature, mix=st.text_mix,
                                        case_weights=st.case_weights, max_random_len=st.max_random_len)
        clutter = "".join(c for c in characters if c.isalnum()) or characters
        self.renderer = SynthRenderer(self.fonts, st, seed=seed, clutter_chars=clutter)
        self._texts_epoch = None
        self._texts: list[str] = []

    def __len__(self) -> int:
        return self.num_samples

    def texts(self, epoch: int) -> list[str]:
        epoch = 0 if self.fixed else epoch
        if self._texts_epoch != epoch:
            rng = random.Random(f"synth-text:{self.seed}:{epoch}")
            self._texts = [self.text_sampler.sample(rng) for _ in range(self.num_samples)]
            self._texts_epoch = epoch
        return self._texts

    def aspect_ratios(self, epoch: int, max_ratio: int) -> np.ndarray:
        # Rendered width is about 0.6 of the height per character, plus margins.
        lengths = np.array([len(t) for t in self.texts(epoch)], dtype=np.float64)
        return np.clip(np.round(0.6 * lengths + 0.4), 1, max_ratio).astype(np.int64)

    def load(self, index: int, epoch: int, rng: random.Random) -> tuple[np.ndarray, str]:
        text = self.texts(epoch)[index]
        render_rng = random.Random(f"synth-image:{self.seed}:{0 if self.fixed else epoch}:{index}")
        return self.renderer.render(text, render_rng), text

