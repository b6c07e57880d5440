"""Console + file logging, TensorBoard scalars, a JSONL history and a PNG plot of the curves."""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections import deque

import torch

__all__ = ["setup_logger", "SmoothedValues", "RunRecorder"]


def setup_logger(output_dir: str | None, is_main: bool) -> logging.Logger:
    logger = logging.getLogger("openrec")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.ERROR)
    fmt = logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if output_dir and is_main:
        os.makedirs(output_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(output_dir, "train.log"), encoding="utf-8")
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


class SmoothedValues:
    """Median of the last ``window`` finite values per key. Values may be 0-d tensors: they are read only
    when a median is asked for (reading a GPU value every step would stall the host on the GPU)."""

    def __init__(self, window: int = 20):
        self.window = window
        self.values: dict[str, deque] = {}

    def update(self, **kwargs) -> None:
        for k, v in kwargs.items():
            self.values.setdefault(k, deque(maxlen=self.window)).append(v.detach() if torch.is_tensor(v) else v)

    def median(self, key: str) -> float:
        raw = self.values.get(key, ())
        vals = sorted(v for v in map(float, raw) if math.isfinite(v))
        return vals[len(vals) // 2] if vals else (float("nan") if raw else 0.0)


class RunRecorder:
    """Appends train/eval records to ``history.jsonl``, mirrors them to TensorBoard, draws ``curves.png``."""

    def __init__(self, output_dir: str, use_tensorboard: bool, plot: bool, logger: logging.Logger, resume: bool):
        self.output_dir = output_dir
        self.plot_enabled = plot
        self.path = os.path.join(output_dir, "history.jsonl")
        if not resume and os.path.exists(self.path):
            os.remove(self.path)
        self.writer = None
        if use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))
            except ImportError:
                logger.info("tensorboard is not installed: TensorBoard scalars are off (pip install tensorboard)")

    def record(self, kind: str, step: int, values: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)

    def history(self) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_to(self, step: int) -> None:
        """On resume: drop records written after the checkpoint's step (they will be redone)."""
        rows = [r for r in self.history() if r["step"] <= step]
        with open(self.path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def plot(self) -> str | None:
        if not self.plot_enabled:
            return None
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = self.history()
        train = [r for r in rows if r["kind"] == "train"]
        evals = [r for r in rows if r["kind"] == "eval"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        if train:
            axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
        axes[0].set(xlabel="step", ylabel="training loss (smoothed)", yscale="log", title="loss")
        for key in sorted({k for r in evals for k in r if k.endswith("/acc")}):
            pts = [(r["step"], 100 * r[key]) for r in evals if key in r]
            axes[1].plot(*zip(*pts), marker="o", ms=3, label=key[:-4])
        axes[1].set(xlabel="step", ylabel="word accuracy (%)", title="evaluation", ylim=(0, 100))
        if evals:
            axes[1].legend(fontsize=8)
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(self.output_dir, "curves.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
