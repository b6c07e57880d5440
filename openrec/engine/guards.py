"""Guards that stop a run whose steps or data have gone bad, instead of letting it train on quietly."""
from __future__ import annotations

import logging

import torch

__all__ = ["TrainingStopped", "NonFiniteGuard", "SkipWindow"]


class TrainingStopped(RuntimeError):
    """Raised when training cannot go on (e.g. too many consecutive non-finite steps)."""


class NonFiniteGuard:
    """Counts the steps whose loss or gradients were not finite (their update was skipped).

    The counters live where the step's ``ok`` flag lives: on the GPU when the optimizer skips bad
    updates on the device, so that recording a step never waits for the GPU; ``check`` reads them
    (one synchronisation) and is called at log steps and before checkpoints."""

    def __init__(self, max_in_a_row: int, device: torch.device, checkpoint_path: str, logger: logging.Logger):
        self.max_in_a_row = max_in_a_row
        self.checkpoint_path = checkpoint_path
        self.logger = logger
        self.in_a_row = torch.zeros((), dtype=torch.int64, device=device)
        self.unreported = torch.zeros((), dtype=torch.int64, device=device)

    def record(self, ok: torch.Tensor) -> None:
        bad = (~ok).to(self.in_a_row.device, torch.int64)
        self.in_a_row = (self.in_a_row + 1) * bad
        self.unreported += bad

    def check(self, step: int, state: dict) -> None:
        """Adds the new bad steps to ``state['bad_steps_total']``; raises after ``max_in_a_row`` in a row."""
        in_a_row, new = torch.stack([self.in_a_row, self.unreported]).tolist()
        if new:
            self.unreported.zero_()
            state["bad_steps_total"] += new
            self.logger.info(f"step {step}: {new} step(s) skipped since the last check (non-finite loss or "
                             f"gradients), {in_a_row} in a row")
        if in_a_row >= self.max_in_a_row:
            raise TrainingStopped(f"{in_a_row} consecutive non-finite steps; stopping. The last good checkpoint is "
                                  f"{self.checkpoint_path}")


class SkipWindow:
    """Samples used and skipped (by reason) since the last check of the skip fraction."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.used, self.skipped, self.reasons = 0, 0, {}

    def add(self, batch: dict, totals: dict[str, int]) -> None:
        """Counts the batch into the window and every skip reason into the run's ``totals`` too."""
        for reason, count in batch["skipped"].items():
            totals[reason] = totals.get(reason, 0) + count
            if not reason.endswith("_dropped"):  # "unknown_chars_dropped" counts characters, not samples
                self.skipped += count
                self.reasons[reason] = self.reasons.get(reason, 0) + count
        self.used += len(batch["text"])

    def top_reasons(self, n: int = 3) -> str:
        return ", ".join(f"{k} ({v})" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:n])
