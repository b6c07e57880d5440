"""Paired comparison of two models (openrec/metrics/compare.py, tools/compare_rec.py) and the per-sample
predictions of tools/eval_rec.py that feed it."""

import json
import os

import cv2
import numpy as np
import pytest

from openrec.data.lmdb_writer import LMDBWriter
from openrec.metrics.compare import compare_predictions, mcnemar_exact_p, read_predictions, write_predictions
from tests.test_trainer import _run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mcnemar_exact_p_known_values():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 0) == pytest.approx(2 / 32)  # all five discordant samples favour A
    assert mcnemar_exact_p(0, 5) == mcnemar_exact_p(5, 0)
    assert mcnemar_exact_p(10, 3) == pytest.approx(2 * (1 + 13 + 78 + 286) / 2 ** 13)
    assert mcnemar_exact_p(4, 4) == 1.0  # capped


def _sets(pattern: dict[str, list[int]]) -> dict[str, dict[int, bool]]:
    return {name: {i: bool(v) for i, v in enumerate(values)} for name, values in pattern.items()}


def test_compare_counts_discordant_samples_and_brackets_the_average():
    a = _sets({"s1": [1, 1, 1, 0, 1, 0] * 50, "s2": [1, 1, 0, 1] * 25})
    b = _sets({"s1": [1, 0, 1, 0, 0, 1] * 50, "s2": [1, 1, 0, 0] * 25})
    r = compare_predictions(a, b, resamples=2000)
    s1, s2 = r["sets"]["s1"], r["sets"]["s2"]
    assert (s1["samples"], s1["only_a"], s1["only_b"]) == (300, 100, 50)
    assert s1["diff"] == pytest.approx(4 / 6 - 3 / 6)
    assert (s2["only_a"], s2["only_b"]) == (25, 0) and s2["mcnemar_p"] == pytest.approx(2 / 2 ** 25)
    av = r["average"]
    assert av["diff"] == pytest.approx((s1["diff"] + s2["diff"]) / 2)
    assert 0 < av["low"] < av["diff"] < av["high"]
    same = compare_predictions(a, a, resamples=500)["average"]
    assert same["diff"] == same["low"] == same["high"] == 0.0


def test_compare_refuses_files_over_different_samples():
    a = _sets({"s1": [1, 0, 1]})
    with pytest.raises(ValueError, match="different sets"):
        compare_predictions(a, _sets({"other": [1, 0, 1]}))
    with pytest.raises(ValueError, match="s1: the two files do not cover the same samples"):
        compare_predictions(a, _sets({"s1": [1, 0]}))


def test_predictions_file_round_trip_and_bad_lines(tmp_path):
    path = tmp_path / "p.tsv"
    write_predictions(str(path), {"setA": [(0, "a\tb", "ab", False), (1, "x", "x", True)], "setB": [(4, "y", "z", False)]})
    assert read_predictions(str(path)) == {"setA": {0: False, 1: True}, "setB": {4: False}}  # the tab became a space
    bad = tmp_path / "bad.tsv"
    bad.write_text(path.read_text() + "setB\tseven\ty\ty\t1\n")
    with pytest.raises(ValueError, match=r"bad.tsv:5: expected 5 tab-separated fields"):
        read_predictions(str(bad))
    with pytest.raises(ValueError, match="not a predictions file"):
        (tmp_path / "errors.tsv").write_text("setA\tabc\tab\n")
        read_predictions(str(tmp_path / "errors.tsv"))


def test_eval_predictions_pair_up_with_compare_rec(tmp_path):
    """The shipped model on the demo images, one of them under a wrong label: every sample is listed in
    LMDB order with its outcome, and compare_rec reads two such files."""
    demo = os.path.join(ROOT, "docs", "demo")
    records = [("open.png", "OPEN"), ("coffee.png", "Coffee"), ("mamba.png", "Mamba"), ("coffee.png", "Tea")]
    with LMDBWriter(str(tmp_path / "demo_set")) as w:
        for name, label in records:
            image = cv2.imread(os.path.join(demo, name))
            with open(os.path.join(demo, name), "rb") as f:
                w.add(f.read(), label, image.shape[1], image.shape[0])
    res = _run_cli(["tools/eval_rec.py", "--sets", str(tmp_path / "demo_set"), "--predictions", str(tmp_path / "a.tsv")])
    assert res.returncode == 0, res.stderr[-2000:]
    lines = (tmp_path / "a.tsv").read_text().splitlines()
    assert lines[0] == "set\tindex\tlabel\tprediction\tcorrect"
    rows = [line.split("\t") for line in lines[1:]]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [("demo_set", "0", "OPEN", "1"), ("demo_set", "1", "Coffee", "1"),
                                                        ("demo_set", "2", "Mamba", "1"), ("demo_set", "3", "Tea", "0")]
    assert rows[3][3] == "Coffee"
    b = tmp_path / "b.tsv"  # a model that reads only the first sample
    b.write_text(lines[0] + "\n" + "".join(f"demo_set\t{i}\tx\ty\t{int(i == 0)}\n" for i in range(4)))
    res = _run_cli(["tools/compare_rec.py", str(tmp_path / "a.tsv"), str(b), "--names", "shipped", "other",
                    "--json", str(tmp_path / "c.json")])
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads((tmp_path / "c.json").read_text())
    s = data["sets"]["demo_set"]
    assert (s["samples"], s["only_a"], s["only_b"]) == (4, 2, 0) and s["diff"] == pytest.approx(0.5)
    assert "McNemar p" in res.stdout.splitlines()[0]
    res = _run_cli(["tools/compare_rec.py", str(tmp_path / "a.tsv"), str(tmp_path / "missing.tsv")])
    assert res.returncode == 2 and "missing.tsv" in res.stderr


def test_accuracy_by_geometry_bands_samples_by_width_per_character(tmp_path):
    """(W / H) / characters: 100x50 'abcdefgh' = 0.25, 'abcd' = 0.5, 'ab' = 1.0 (the top band), 64x32 'a-b-c' = 0.67
    (three characters after normalisation)."""
    from tests.helpers import load_script
    geometry = load_script("scripts", "accuracy_by_geometry.py")
    records = [(100, 50, "abcdefgh", False), (100, 50, "abcd", True), (100, 50, "ab", True), (64, 32, "a-b-c", False)]
    with LMDBWriter(str(tmp_path / "setG")) as w:
        for width, height, label, _ in records:
            ok, buf = cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))
            w.add(buf.tobytes(), label, width, height)
    write_predictions(str(tmp_path / "p.tsv"), {"setG": [(i, r[2], "x", r[3]) for i, r in enumerate(records)]})
    rows = geometry.band_table(geometry.read_sizes(str(tmp_path / "setG")), [geometry.read_outcomes(str(tmp_path / "p.tsv"))["setG"]])
    assert [r["samples"] for r in rows] == [1, 0, 2, 0, 1]
    assert [r["acc"][0] for r in rows if r["samples"]] == [0.0, 0.5, 1.0]
    assert [r["misread_share"][0] for r in rows] == [0.5, 0.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="not the same set"):
        geometry.band_table(geometry.read_sizes(str(tmp_path / "setG")), [{0: ("ab", True)}])
