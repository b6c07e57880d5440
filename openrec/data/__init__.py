"""Data: LMDB and synthetic sources, ratio batching, augmentation, loaders built from config.

A ``Train``/``Eval`` section::

    datasets:                       # each: an LMDB folder or the synthetic engine
      - {type: lmdb, path: /data/IIIT5k_3000, name: IIIT5k, fraction: 1.0}
      - {type: lmdb, path: /data/real, split: {holdout: 0.2, part: train, seed: 0}}  # 80%; part: holdout, the rest
      - {type: synth, num_samples: 100000, preset: default, seed: 0}
    batch_size: 128                 # for buckets up to 4:1; wider buckets get fewer images
    num_workers: 4
    max_ratio: 12
    augment: true                   # RandAugment (train only), or a mapping of its options
"""
from __future__ import annotations

import os

import torch

from ..config import ConfigError
from ..registry import validate_kwargs
from .augment import TextRandAugment
from .dataset import RecDataset, collate_samples
from .sampler import RatioBatchSampler
from .sources import LMDBSource, SynthSource

__all__ = ["RecDataset", "RatioBatchSampler", "LMDBSource", "SynthSource", "collate_samples", "build_sources",
           "build_dataset", "build_loader", "validate_section"]


def _section_spec(datasets: list, batch_size: int = 128, num_workers: int = 2, max_ratio: int = 12,
                  augment: bool | dict = False):
    """Accepted keys of a Train/Eval section."""


def _lmdb_spec(path: str, name: str | None = None, fraction: float = 1.0, repeat: int = 1, split: dict | None = None):
    """Accepted keys of an LMDB dataset entry."""


def _split_spec(holdout: float, part: str, seed: int = 0):
    """Accepted keys of an LMDB entry's ``split``."""


def _synth_spec(num_samples: int, seed: int = 0, preset: str = "default", style: dict | None = None,
                font_dirs: list[str] | None = None, fixed: bool = False, name: str = "synth", fraction: float = 1.0,
                repeat: int = 1):
    """Accepted keys of a synthetic dataset entry."""


_SOURCES = {"lmdb": _lmdb_spec, "synth": _synth_spec}


def validate_section(cfg: dict, where: str) -> dict:
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where} must be a mapping")
    validate_kwargs(_section_spec, cfg, where)
    if not cfg["datasets"]:
        raise ConfigError(f"{where}.datasets is empty: list at least one LMDB folder or a synth entry")
    for i, entry in enumerate(cfg["datasets"]):
        here = f"{where}.datasets[{i}]"
        if isinstance(entry, str):
            entry = {"type": "lmdb", "path": entry}
        if not isinstance(entry, dict) or entry.get("type") not in _SOURCES:
            raise ConfigError(f"{here}: needs 'type' (accepted: {', '.join(_SOURCES)}), got {entry!r}")
        validate_kwargs(_SOURCES[entry["type"]], {k: v for k, v in entry.items() if k != "type"}, here)
        if entry["type"] == "lmdb" and not os.path.isdir(entry["path"]):
            raise ConfigError(f"{here}.path: LMDB folder not found: {entry['path']}")
        if entry.get("split") is not None:
            split = entry["split"]
            if not isinstance(split, dict):
                raise ConfigError(f"{here}.split must be a mapping like {{holdout: 0.2, part: train}}, got {split!r}")
            validate_kwargs(_split_spec, split, f"{here}.split")
            if not 0.0 < split["holdout"] < 1.0:
                raise ConfigError(f"{here}.split.holdout must be in (0, 1), got {split['holdout']}")
            if split["part"] not in ("train", "holdout"):
                raise ConfigError(f"{here}.split.part must be 'train' or 'holdout', got {split['part']!r}")
        if entry["type"] == "synth":
            from .synth import PRESETS
            if entry.get("preset", "default") not in PRESETS:
                raise ConfigError(f"{here}.preset: unknown preset {entry['preset']!r} (accepted: {', '.join(PRESETS)})")
            for d in entry.get("font_dirs") or []:
                if not os.path.isdir(d):
                    raise ConfigError(f"{here}.font_dirs: folder not found: {d} (the recipe's fonts: python "
                                      "scripts/fetch_fonts.py --out data/fonts --manifest configs/rec/svtrv2/fonts_manifest.tsv)")
        if not 0.0 < entry.get("fraction", 1.0) <= 1.0:
            raise ConfigError(f"{here}.fraction must be in (0, 1], got {entry['fraction']}")
        repeat = entry.get("repeat", 1)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise ConfigError(f"{here}.repeat must be an integer >= 1, got {repeat!r}")
    for key in ("batch_size", "max_ratio"):
        if cfg.get(key, 1) < 1:
            raise ConfigError(f"{where}.{key} must be >= 1, got {cfg[key]}")
    return cfg


def build_sources(cfg: dict, charset) -> tuple[list, list[float], list[int]]:
    """Sources of a section with their per-epoch ``fraction`` and ``repeat``."""
    characters = "".join(charset.characters)
    sources, fractions, repeats = [], [], []
    for entry in cfg["datasets"]:
        entry = {"type": "lmdb", "path": entry} if isinstance(entry, str) else dict(entry)
        kind = entry.pop("type")
        fractions.append(entry.pop("fraction", 1.0))
        repeats.append(entry.pop("repeat", 1))
        if kind == "lmdb":
            sources.append(LMDBSource(entry["path"], entry.get("name"), entry.get("split")))
        else:
            font_dirs = tuple(entry.pop("font_dirs", None) or ())
            sources.append(SynthSource(characters, charset.max_text_length, font_dirs=font_dirs, **entry))
    return sources, fractions, repeats


def build_dataset(cfg: dict, charset, label_encoder, train: bool, seed: int, sources=None) -> RecDataset:
    """One dataset over all of a section's sources (training), or over the given ``sources``."""
    if sources is None:
        sources, fractions, repeats = build_sources(cfg, charset)
    else:
        fractions, repeats = [1.0] * len(sources), [1] * len(sources)
    augment = cfg.get("augment", False) if train else False
    augmenter = TextRandAugment(**augment) if isinstance(augment, dict) else (TextRandAugment() if augment else None)
    return RecDataset(sources, label_encoder, fractions, augmenter, cfg.get("max_ratio", 12), seed, repeats)


def _worker_init(_):
    torch.set_num_threads(1)


def build_loader(dataset: RecDataset, cfg: dict, train: bool, seed: int, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> torch.utils.data.DataLoader:
    sampler = RatioBatchSampler(dataset.epoch_items, cfg.get("batch_size", 128), seed=seed, shuffle=train,
                                rank=rank, world_size=world_size)
    workers = cfg.get("num_workers", 2)
    if workers:
        # One OpenCV thread per worker process, set before the workers are forked: many workers x
        # many OpenCV threads oversubscribe the CPU, and changing the pool inside a forked child
        # can deadlock on a lock held at fork time.
        import cv2
        cv2.setNumThreads(1)
    # A private generator: creating an iterator must not consume the global RNG that dropout and
    # drop-path use, or a resumed run would drift from the uninterrupted one.
    generator = torch.Generator().manual_seed(seed)
    # Training workers live for the whole run, so that their synthetic engines keep the font cache
    # warm across epochs (perf note 66). Safe: every item carries its epoch (the sampler's), and a
    # sample is a function of (seed, epoch, index), so a worker never reads a stale epoch.
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_samples,
                                       pin_memory=pin_memory, worker_init_fn=_worker_init if workers else None,
                                       persistent_workers=bool(train and workers), prefetch_factor=4 if workers else None,
                                       generator=generator)
