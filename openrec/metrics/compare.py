"""Two models on the same evaluation samples: per-set differences with paired statistics.

The input is ``tools/eval_rec.py --predictions`` output (TSV: set, index, label, prediction, correct),
one file per model. Pairing by sample matters: two models that read the same images make correlated
mistakes, so comparing their accuracies as if independent overstates the noise. Per set this reports
the samples only one model reads correctly and McNemar's exact test on them; for the plain Average over
sets, a paired bootstrap interval (samples resampled within each set, both models together). Both
speak to test-set sampling only, not to training noise (another seed).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["PREDICTION_COLUMNS", "write_predictions", "read_predictions", "read_prediction_rows", "mcnemar_exact_p",
           "compare_predictions", "format_comparison"]

PREDICTION_COLUMNS = ("set", "index", "label", "prediction", "correct")


def _field(text: str) -> str:
    return " ".join(text.split("\t")).replace("\n", " ").replace("\r", " ")


def write_predictions(path: str, sets: dict[str, list[tuple[int, str, str, bool]]]) -> None:
    """``sets``: set name -> (index, label, prediction, correct) per sample (``evaluate_loader``'s ``predictions``)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(PREDICTION_COLUMNS) + "\n")
        for name, rows in sets.items():
            f.writelines(f"{_field(name)}\t{i}\t{_field(label)}\t{_field(pred)}\t{int(ok)}\n" for i, label, pred, ok in rows)


def read_predictions(path: str) -> dict[str, dict[int, bool]]:
    """set name -> {sample index: correct}, in the file's set order."""
    return {name: {i: ok for i, (_, _, ok) in rows.items()} for name, rows in read_prediction_rows(path).items()}


def read_prediction_rows(path: str) -> dict[str, dict[int, tuple[str, str, bool]]]:
    """set name -> {sample index: (label, prediction, correct)}, in the file's set order. Errors name the
    file and line."""
    sets: dict[str, dict[int, tuple[str, str, bool]]] = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if tuple(header) != PREDICTION_COLUMNS:
            raise ValueError(f"{path}: not a predictions file (header {header!r}; expected "
                             f"{'/'.join(PREDICTION_COLUMNS)} from tools/eval_rec.py --predictions)")
        for line_no, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != len(PREDICTION_COLUMNS) or not parts[1].isdigit() or parts[4] not in ("0", "1"):
                raise ValueError(f"{path}:{line_no}: expected {len(PREDICTION_COLUMNS)} tab-separated fields "
                                 f"with a whole-number index and correct 0/1, got {line.rstrip()!r}")
            rows = sets.setdefault(parts[0], {})
            index = int(parts[1])
            if index in rows:
                raise ValueError(f"{path}:{line_no}: sample {index} of {parts[0]} appears twice")
            rows[index] = (parts[2], parts[3], parts[4] == "1")
    return sets


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar test: the chance of a split at least this uneven of the ``only_a + only_b``
    discordant samples if each were equally likely to favour either model (binomial, p = 1/2)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def compare_predictions(a: dict[str, dict[int, bool]], b: dict[str, dict[int, bool]], resamples: int = 10000,
                        seed: int = 0, confidence: float = 0.95) -> dict:
    """Per set: samples, acc_a, acc_b, diff (a - b), only_a, only_b, mcnemar_p; ``average``: the plain
    mean over sets of acc_a, acc_b and diff, with a paired bootstrap interval of the diff (``low``, ``high``)."""
    if list(a) != list(b):
        raise ValueError(f"the two files hold different sets: {list(a)} vs {list(b)}")
    rng = np.random.default_rng(seed)
    per_set, boot = {}, np.zeros(resamples)
    for name in a:
        if a[name].keys() != b[name].keys():
            missing = sorted(a[name].keys() ^ b[name].keys())
            raise ValueError(f"{name}: the two files do not cover the same samples ({len(missing)} differ, "
                             f"e.g. index {missing[0]}); evaluate both models on the same folders")
        order = sorted(a[name])
        ca = np.array([a[name][i] for i in order], dtype=np.int8)
        cb = np.array([b[name][i] for i in order], dtype=np.int8)
        n = len(order)
        only_a, only_b = int(np.sum(ca > cb)), int(np.sum(cb > ca))
        per_set[name] = {"samples": n, "acc_a": float(ca.mean()), "acc_b": float(cb.mean()),
                         "diff": float(ca.mean() - cb.mean()),
                         "only_a": only_a, "only_b": only_b, "mcnemar_p": mcnemar_exact_p(only_a, only_b)}
        diff = (ca - cb).astype(np.float64)
        for start in range(0, resamples, 1000):  # chunks bound the index array (1000 x n)
            stop = min(resamples, start + 1000)
            boot[start:stop] += diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    k = len(per_set)
    boot /= max(k, 1)
    tail = (1 - confidence) / 2
    average = {"acc_a": sum(r["acc_a"] for r in per_set.values()) / k, "acc_b": sum(r["acc_b"] for r in per_set.values()) / k,
               "diff": sum(r["diff"] for r in per_set.values()) / k,
               "low": float(np.quantile(boot, tail)), "high": float(np.quantile(boot, 1 - tail)), "confidence": confidence}
    return {"sets": per_set, "average": average}


def format_comparison(result: dict, name_a: str = "A", name_b: str = "B") -> str:
    lines = [f"{'Dataset':<22} {'samples':>7} {name_a[:10]:>10} {name_b[:10]:>10} {'A - B':>7} {'A only':>7} "
             f"{'B only':>7} {'McNemar p':>10}"]
    for name, r in result["sets"].items():
        lines.append(f"{name:<22} {r['samples']:>7} {100 * r['acc_a']:>9.2f}% {100 * r['acc_b']:>9.2f}% "
                     f"{100 * r['diff']:>+7.2f} {r['only_a']:>7} {r['only_b']:>7} {r['mcnemar_p']:>10.3g}")
    av = result["average"]
    lines.append(f"{'Average':<22} {'':>7} {100 * av['acc_a']:>9.2f}% {100 * av['acc_b']:>9.2f}% {100 * av['diff']:>+7.2f}"
                 f"   {100 * av['confidence']:.0f}% interval (paired bootstrap): {100 * av['low']:+.2f} to {100 * av['high']:+.2f}")
    return "\n".join(lines)
