"""Word accuracy and 1 - normalised edit distance (1-NED).

Standard scoring (the default): drop spaces, keep only ``[0-9a-zA-Z]``, lower-case, on both sides.
``case_sensitive: true`` keeps case and symbols (spaces still dropped when ``ignore_space``).
NED of a pair = Levenshtein distance / max(len(pred), len(gt)) (0 when both are empty).
"""
from __future__ import annotations

import string

from ..registry import METRICS

__all__ = ["RecMetric", "edit_distance", "normalize_text", "summarize_sets", "edge_error_counts"]

_ALNUM = set(string.digits + string.ascii_letters)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit costs) with a two-row dynamic programme."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalize_text(text: str, case_sensitive: bool = False, ignore_space: bool = True) -> str:
    if ignore_space:
        text = text.replace(" ", "")
    if not case_sensitive:
        text = "".join(c for c in text if c in _ALNUM).lower()
    return text


@METRICS.register("RecMetric")
class RecMetric:
    """Accumulates over ``update`` calls; ``compute()`` returns acc, norm_edit_dis and samples."""

    def __init__(self, case_sensitive: bool = False, ignore_space: bool = True, main_indicator: str = "acc"):
        self.case_sensitive = case_sensitive
        self.ignore_space = ignore_space
        self.main_indicator = main_indicator
        self.reset()

    def reset(self) -> None:
        self.correct = 0
        self.ned_sum = 0.0
        self.samples = 0
        self.outcomes: list[tuple[str, str, bool]] = []  # (label, prediction, correct) of every sample, as given

    def update(self, preds: list[str], labels: list[str]) -> None:
        if len(preds) != len(labels):
            raise ValueError(f"RecMetric.update: {len(preds)} predictions for {len(labels)} labels")
        for pred, label in zip(preds, labels):
            p = normalize_text(pred, self.case_sensitive, self.ignore_space)
            g = normalize_text(label, self.case_sensitive, self.ignore_space)
            self.correct += p == g
            self.outcomes.append((label, pred, p == g))
            longest = max(len(p), len(g))
            self.ned_sum += edit_distance(p, g) / longest if longest else 0.0
            self.samples += 1

    @property
    def errors(self) -> list[tuple[str, str]]:
        """(label, prediction) of each misread sample, in order."""
        return [(label, pred) for label, pred, ok in self.outcomes if not ok]

    def compute(self) -> dict:
        n = self.samples
        return {"acc": self.correct / n if n else 0.0, "norm_edit_dis": 1.0 - self.ned_sum / n if n else 0.0, "samples": n}


def summarize_sets(per_set: dict[str, dict]) -> dict:
    """Per-set results -> ``{'sets', 'combined' (sample-weighted), 'average' (plain mean over sets)}``."""
    total = sum(r["samples"] for r in per_set.values())
    combined = {
        "samples": total,
        "acc": sum(r["acc"] * r["samples"] for r in per_set.values()) / total if total else 0.0,
        "norm_edit_dis": sum(r["norm_edit_dis"] * r["samples"] for r in per_set.values()) / total if total else 0.0,
    }
    k = len(per_set)
    average = {
        "samples": total,
        "acc": sum(r["acc"] for r in per_set.values()) / k if k else 0.0,
        "norm_edit_dis": sum(r["norm_edit_dis"] for r in per_set.values()) / k if k else 0.0,
    }
    return {"sets": dict(per_set), "combined": combined, "average": average}


def edge_error_counts(errors: list[tuple[str, str]], case_sensitive: bool = False) -> dict:
    """Misreads whose only fault is the first or the last character (compared after normalisation):
    ``dropped`` (the prediction lacks it) and ``wrong`` (another character in its place)."""
    counts = {"errors": len(errors), "dropped": 0, "wrong": 0}
    for label, pred in errors:
        g, p = normalize_text(label, case_sensitive), normalize_text(pred, case_sensitive)
        if len(g) < 2:
            continue
        if p in (g[1:], g[:-1]):
            counts["dropped"] += 1
        elif len(p) == len(g) and (p[1:] == g[1:] or p[:-1] == g[:-1]):
            counts["wrong"] += 1
    return counts
