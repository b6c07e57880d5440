"""Ratio batching: batches of equal-size images bucketed by aspect ratio.

Every sample appears exactly once per epoch (no bucket or remainder is dropped, nothing is
padded), batches for wide buckets are smaller (``batch_size * 4 / r`` for r >= 5, so the pixel
count per batch stays about constant), the order is a function of (seed, epoch) only, and under
DDP each rank gets a disjoint shard with the same number of batches. ``start_batch`` skips the
batches a resumed run has already trained on.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .transforms import bucket_size

__all__ = ["RatioBatchSampler", "bucket_batch_size"]


def bucket_batch_size(batch_size: int, ratio: int) -> int:
    return batch_size if ratio < 5 else max(1, int(batch_size * 4 / ratio))


class RatioBatchSampler:
    """Yields lists of ``(index, width, height, epoch)``.

    ``epoch_items(epoch) -> (indices, ratios)`` gives the dataset indices used in an epoch and their
    aspect buckets. ``batch_size`` is per process. A bucket with fewer than ``min_batch`` samples is
    merged into the nearest narrower (else wider) bucket and a remainder smaller than ``min_batch``
    joins the bucket's previous batch, with ``min_batch = max(min_batch, world_size)``: every rank gets
    a non-empty part of every global batch, and for world sizes up to ``min_batch`` the global batches
    depend only on the global batch size, so N processes see exactly what one process with an N-times
    larger batch sees.
    """

    def __init__(self, epoch_items: Callable[[int], tuple[np.ndarray, np.ndarray]], batch_size: int, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1, min_batch: int = 8):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.epoch_items = epoch_items
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.min_batch = max(min_batch, world_size)
        self.epoch = 0
        self.start_batch = 0
        self._cache: tuple[int, list] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def _merge_small_buckets(self, buckets: dict[int, list]) -> dict[int, list]:
        for r in sorted(buckets):
            if r in buckets and len(buckets[r]) < self.min_batch:
                others = sorted((k for k in buckets if k != r), key=lambda k: (k > r, abs(k - r)))
                if others:
                    buckets[others[0]].extend(buckets.pop(r))
        return buckets

    def global_batches(self, epoch: int) -> list[list[tuple[int, int, int, int]]]:
        """This rank's part of every global batch of an epoch, in training order."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        indices, ratios = self.epoch_items(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        buckets: dict[int, list] = {}
        for r in np.unique(ratios):
            members = indices[ratios == r]
            if self.shuffle:
                members = rng.permutation(members)
            buckets[int(r)] = list(members)
        buckets = self._merge_small_buckets(buckets)
        batches = []
        for r in sorted(buckets):
            members = np.asarray(buckets[r])
            w, h = bucket_size(r)
            per_rank = bucket_batch_size(self.batch_size, r)
            step = per_rank * self.world_size
            starts = list(range(0, len(members), step))
            if len(starts) > 1 and len(members) - starts[-1] < self.min_batch:
                starts.pop()  # fold a small remainder into the previous global batch
            for k, s in enumerate(starts):
                end = starts[k + 1] if k + 1 < len(starts) else len(members)
                part = np.array_split(members[s:end], self.world_size)[self.rank]
                batches.append([(int(i), w, h, epoch) for i in part])
        if self.shuffle:
            order = rng.permutation(len(batches))
            batches = [batches[i] for i in order]
        self._cache = (epoch, batches)
        return batches

    def __iter__(self):
        batches = self.global_batches(self.epoch)
        yield from batches[self.start_batch:]

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch)) - self.start_batch
