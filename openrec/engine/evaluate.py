"""Evaluation over several sets: per-set accuracy and 1-NED, Combined and Average."""
from __future__ import annotations

import torch

from ..metrics import RecMetric, summarize_sets

__all__ = ["evaluate_loader", "evaluate_sets", "format_table"]


@torch.no_grad()
def evaluate_loader(model, loader, post, metric: RecMetric, device, autocast, keep_samples: bool = False) -> dict:
    """acc, norm_edit_dis, samples and skipped of one set. With ``keep_samples`` also ``errors``, the
    (label, prediction) pairs of the misread samples, and ``predictions``, one (index, label, prediction,
    correct) per sample, sorted by the dataset index (for a one-folder set: the LMDB record number - 1),
    so that two models' runs over the same set pair up sample by sample."""
    model.eval()
    metric.reset()
    skipped: dict[str, int] = {}
    indices: list[int] = []
    for batch in loader:
        for k, v in batch["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
        if batch["image"] is None:
            continue
        with autocast():
            outputs = model(batch["image"].to(device, non_blocking=True))
        metric.update(post(outputs)["text"], batch["text"])
        indices.extend(batch["index"])
    result = metric.compute()
    result["skipped"] = skipped
    if keep_samples:
        result["errors"] = metric.errors
        result["predictions"] = sorted((i, *o) for i, o in zip(indices, metric.outcomes))
    return result


def evaluate_sets(model, loaders: dict, post, metric: RecMetric, device, autocast, keep_samples: bool = False) -> dict:
    per_set = {name: evaluate_loader(model, loader, post, metric, device, autocast, keep_samples)
               for name, loader in loaders.items()}
    return summarize_sets(per_set)


def format_table(summary: dict) -> str:
    width = max([22] + [len(name) for name in summary["sets"]])  # long names (full paths, "[holdout]") stay aligned
    lines = [f"{'Dataset':<{width}} {'samples':>8} {'accuracy':>9} {'1-NED':>8}"]
    for name, r in summary["sets"].items():
        lines.append(f"{name:<{width}} {r['samples']:>8} {100 * r['acc']:>8.2f}% {100 * r['norm_edit_dis']:>7.2f}%")
    for name in ("combined", "average"):
        r = summary[name]
        lines.append(f"{name.capitalize():<{width}} {r['samples']:>8} {100 * r['acc']:>8.2f}% {100 * r['norm_edit_dis']:>7.2f}%")
    return "\n".join(lines)
