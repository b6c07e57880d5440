"""The recognition dataset: several sources, per-sample seeded loading, counted skips, collation."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import torch

from ..text.labels import LabelRejected
from .transforms import DecodeError, to_tensor

__all__ = ["RecDataset", "collate_samples"]


class RecDataset(torch.utils.data.Dataset):
    """Concatenation of sources. ``repeats[k]`` > 1 lists source k that many times per epoch (to
    oversample a small real set; each repetition draws its own augmentation); ``fractions[k]`` < 1
    uses that share of source k (after repetition) per epoch (a fresh subset each epoch). Items are
    ``(index, width, height, epoch)`` tuples from the sampler; a sample's randomness (augmentation,
    label noise) is drawn from (seed, epoch, index), so results do not depend on worker count or order. Unusable samples come back as ``{'skip': reason}``."""

    def __init__(self, sources: list, label_encoder=None, fractions: list[float] | None = None, augment=None,
                 max_ratio: int = 12, seed: int = 0, repeats: list[int] | None = None):
        self.sources = sources
        self.label_encoder = label_encoder
        self.fractions = fractions or [1.0] * len(sources)
        self.repeats = repeats or [1] * len(sources)
        self.augment = augment
        self.max_ratio = max_ratio
        self.seed = seed
        self.offsets = np.cumsum([0] + [len(s) * r for s, r in zip(sources, self.repeats)])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def epoch_items(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        all_idx, all_ratio = [], []
        for k, (src, frac, times) in enumerate(zip(self.sources, self.fractions, self.repeats)):
            ratios = np.tile(src.aspect_ratios(epoch, self.max_ratio), times)
            size = len(src) * times
            local = np.arange(size)
            if frac < 1.0:
                rng = np.random.default_rng([self.seed, epoch, k])
                local = np.sort(rng.choice(size, size=max(1, int(round(frac * size))), replace=False))
            all_idx.append(local + self.offsets[k])
            all_ratio.append(ratios[local])
        return np.concatenate(all_idx), np.concatenate(all_ratio)

    def locate(self, index: int) -> tuple[object, int]:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.sources[k], (index - int(self.offsets[k])) % len(self.sources[k])

    def __getitem__(self, item) -> dict:
        index, width, height, epoch = item
        source, local = self.locate(index)
        rng = random.Random(f"sample:{self.seed}:{epoch}:{index}")
        try:
            image, text = source.load(local, epoch, rng)
            sample = {"text": text, "index": int(index)}
            if self.label_encoder is not None:
                sample.update(self.label_encoder(text, rng))
            elif not text.strip():
                raise LabelRejected("empty", text)
            if self.augment is not None:
                image = self.augment(image, rng)
            sample["image"] = to_tensor(image, width, height)
            return sample
        except (DecodeError, LabelRejected) as e:
            return {"skip": e.reason}
        except Exception as e:  # anything else in one record must not kill a long run; it is counted
            # with the start of its message, so that a skip count in the log can be traced to a cause
            message = " ".join(str(e).split())[:60]
            return {"skip": f"error:{type(e).__name__}" + (f": {message}" if message else "")}


def collate_samples(samples: list[dict]) -> dict:
    """Stack usable samples; ``skipped`` counts the others by reason; ``image`` is None if none is usable.
    ``text`` and ``index`` (each sample's dataset index, for per-sample reports) stay lists."""
    good = [s for s in samples if "skip" not in s]
    skipped = Counter(s["skip"] for s in samples if "skip" in s)
    batch: dict = {"skipped": dict(skipped), "text": [s["text"] for s in good], "index": [s.get("index") for s in good]}
    if not good:
        batch["image"] = None
        return batch
    for key in good[0]:
        if key not in ("text", "index"):
            batch[key] = torch.stack([s[key] for s in good])
    if "unknown_chars" in batch:
        dropped = int(batch.pop("unknown_chars").sum())
        if dropped:
            batch["skipped"]["unknown_chars_dropped"] = dropped
    return batch
