"""End-to-end CLIs on a tiny trained model: eval_rec (table + JSON), infer_rec (files, folders, globs,
bad files), plus EMA, CPU bf16 autocast and pretrained-weight loading in the trainer; bench_rec's
--profile specs and --shape-mix; scripts/recipe_shape_mix.py."""

import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

from openrec.data.lmdb_writer import LMDBWriter
from openrec.engine.checkpoint import load_pretrained
from openrec.engine.trainer import Trainer
from tests.helpers import load_script
from tests.test_trainer import _run_cli, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    cfg = tiny_config(root / "out", max_steps=3, ema_decay=0.5)
    Trainer(cfg).train()
    cfg_path = root / "cfg.yml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    return root, cfg_path


def test_ema_weights_are_saved_and_used(trained):
    root, _ = trained
    best = torch.load(root / "out" / "best.pth", weights_only=False)
    assert best["ema"] is not None
    differs = [k for k in best["model"] if best["model"][k].dtype.is_floating_point
               and not torch.equal(best["model"][k], best["ema"][k])]
    assert differs  # an EMA with decay 0.5 lags the raw weights


def test_eval_tool_prints_table_and_writes_json(trained, tmp_path):
    root, cfg_path = trained
    sets = []
    for name, words in (("setA", ["abc", "Hello"]), ("setB", ["42"])):
        with LMDBWriter(str(tmp_path / name)) as w:
            for word in words:
                ok, buf = cv2.imencode(".jpg", np.full((32, 96, 3), 180, np.uint8))
                w.add(buf.tobytes(), word, 96, 32)
        sets.append(str(tmp_path / name))
    res = _run_cli(["tools/eval_rec.py", "--c", str(cfg_path), "--o", f"Global.checkpoints={root / 'out' / 'best.pth'}",
                    "--sets", *sets, "--json", str(tmp_path / "r.json")])
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].split() == ["Dataset", "samples", "accuracy", "1-NED"]
    assert [line.split()[0] for line in lines[1:]] == ["setA", "setB", "Combined", "Average"]
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data) >= {"sets", "combined", "average"}
    assert data["sets"]["setA"]["samples"] == 2 and set(data["sets"]["setB"]) == {"samples", "acc", "norm_edit_dis"}
    assert data["combined"]["samples"] == 3


def test_infer_tool_reads_files_folders_globs_and_reports_bad_files(trained, tmp_path):
    root, cfg_path = trained
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "imgs" / f"w{i}.png"), np.full((32, 64 + 32 * i, 3), 40 * i, np.uint8))
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
    from openrec.data.fuzz import _huge_header_png
    (tmp_path / "imgs" / "huge.png").write_bytes(_huge_header_png())  # claims 100000 x 100000 pixels
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    res = _run_cli(["tools/infer_rec.py", "--c", str(cfg_path), "--o", f"Global.checkpoints={root / 'out' / 'best.pth'}",
                    "--image", str(tmp_path / "imgs"), str(tmp_path / "imgs" / "w*.png"), str(tmp_path / "missing.jpg")])
    assert res.returncode == 4, res.stderr[-2000:]  # broken.png, huge.png, notes.txt and missing.jpg
    out = [line.split("\t") for line in res.stdout.strip().splitlines()]
    assert len(out) == 6 and all(len(row) == 3 and 0.0 <= float(row[2]) <= 1.0 for row in out)
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 4 and "broken.png\terror: corrupt_image" in errors[0]
    assert "huge.png\terror: image_too_large" in errors[1] and "notes.txt\terror: corrupt_image" in errors[2]
    assert "missing.jpg\terror:" in errors[3]


def test_pretrained_loading_reports_keys(trained, tmp_path):
    root, _ = trained
    cfg = tiny_config(tmp_path / "out2")
    cfg["Architecture"]["Decoder"] = {"name": "CTCDecoder"}  # a different head: its keys do not match
    trainer = Trainer(cfg)
    report = load_pretrained(trainer.raw_model, str(root / "out" / "best.pth"))
    own = set(trainer.raw_model.state_dict())
    assert {k for k in own if k.startswith("encoder.")} <= set(report["loaded"])
    assert "decoder.fc.weight" in report["loaded"] and report["missing"] == []  # CTC's fc has RCTC's shape
    assert any(k.startswith("decoder.w_atten_block") for k in report["unexpected"])


def test_cpu_bf16_autocast_training_steps(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_steps=2, cpu_amp=True))
    assert trainer.use_amp and trainer.amp_dtype == torch.bfloat16
    summary = trainer.train()
    assert summary["global_step"] == 2 and summary["bad_steps"] == 0
    assert all(p.dtype == torch.float32 for p in trainer.raw_model.parameters())


def test_bench_rec_profile_specs_are_checked():
    bench = load_script("tools", "bench_rec.py")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert bench.parse_profile("train:128:128:fp32", cpu) == ("train", 128, 128, None, 32)
    assert bench.parse_profile("train_graph:64:256:bf16", cuda) == ("train_graph", 64, 256, torch.bfloat16, 32)
    assert bench.parse_profile("graph:1:128:fp32", cuda) == ("graph", 1, 128, None, 32)
    assert bench.parse_profile("train_graph:256:40x112:bf16", cuda) == ("train_graph", 256, 112, torch.bfloat16, 40)
    for bad, match in [("train:128:fp32", "expected"), ("fit:1:128:fp32", "expected"), ("infer:1:128:bf16", "need a GPU"),
                       ("train_graph:1:128:fp32", "need a GPU"), ("train:8:40x:fp32", "expected"),
                       ("train:8:4x4x4:fp32", "expected"), ("infer:8:40x112:fp32", "only train kinds")]:
        with pytest.raises(SystemExit, match=match):
            bench.parse_profile(bad, cpu)


def test_bench_rec_shape_mix_weights_each_shape_by_its_batches(tmp_path):
    """--shape-mix: shapes below the share are dropped, batches scaled, and the mix row is all images
    over all batches' time (not a mean of the rows' img/s)."""
    bench = load_script("tools", "bench_rec.py")
    mix = {"shapes": [{"batch": 256, "height": 32, "width": 128, "batches": 10},
                      {"batch": 128, "height": 32, "width": 256, "batches": 10},
                      {"batch": 8, "height": 64, "width": 64, "batches": 1}]}
    path = tmp_path / "mix.json"
    path.write_text(json.dumps(mix))
    shapes = bench.load_shape_mix(str(path), min_share=0.01, batch_scale=0.5)
    assert [(s["batch"], s["height"], s["width"]) for s in shapes] == [(128, 32, 128), (64, 32, 256)]
    assert shapes[0]["share"] == pytest.approx(2560 / 3848)

    class FakeSubject:  # a step of B images at HxW takes B * H * W / 4096 ms
        def train_step_fn(self, batch_size, width, amp, graphs=False, height=32):
            return batch_size * height * width / 4096

    class FakeTimer:
        def median_ms(self, ms):
            return ms

    rows = bench.measure_mix(FakeSubject(), FakeTimer(), torch.device("cpu"), shapes)
    assert rows["mix train fp32 B128 32x128"]["ms"] == 128.0 and rows["mix train fp32 B64 32x256"]["ms"] == 128.0
    weighted = rows[next(k for k in rows if k.startswith("mix weighted (2 shapes"))]
    assert weighted["img_s"] == pytest.approx((10 * 128 + 10 * 64) / (10 * 0.128 + 10 * 0.128))
    for bad, match in [("{}", "KeyError"), ("not json", "JSONDecodeError")]:
        path.write_text(bad)
        with pytest.raises(SystemExit, match=match):
            bench.load_shape_mix(str(path), 0.0, 1.0)
    path.write_text(json.dumps(mix))
    with pytest.raises(SystemExit, match="no shape holds"):
        bench.load_shape_mix(str(path), 0.9, 1.0)


def test_recipe_shape_mix_counts_the_samplers_batches():
    """scripts/recipe_shape_mix.py on a synthetic-only config: every sample in one batch of its
    ratio's shape, the same count as the sampler's epoch."""
    script = load_script("scripts", "recipe_shape_mix.py")
    cfg = {"Global": {"seed": 3}, "Architecture": {}, "Train": {
        "datasets": [{"type": "synth", "num_samples": 600, "seed": 0, "font_dirs": []}],
        "batch_size": 64, "num_workers": 0, "max_ratio": 12, "augment": False}}
    tiny = tiny_config("/tmp/unused", max_steps=1)
    cfg["Global"].update({k: v for k, v in tiny["Global"].items() if k.startswith("charset")})
    cfg["Architecture"] = tiny["Architecture"]
    mix = script.shape_mix(cfg, [0])
    assert sum(s["batches"] * s["batch"] for s in mix) == 600
    from openrec.data.transforms import bucket_size
    widths_heights = {bucket_size(r)[::-1] for r in range(1, 13)}
    assert all((s["height"], s["width"]) in widths_heights for s in mix)
    # a remainder under the sampler's min_batch (8) joins its bucket's previous batch
    assert all(s["batch"] < 64 + 8 for s in mix) and mix == sorted(mix, key=lambda s: -s["batches"])

def test_bench_ops_cpu_times_every_case_and_writes_json(tmp_path):
    from openrec.ops.kernels import has_cpu_kernel
    if not has_cpu_kernel("openrec::dwconv3x3"):
        pytest.skip("no C++ CPU kernels built")
    bench = load_script("tools", "bench_ops_cpu.py")
    out = tmp_path / "ops.json"
    assert bench.main(["--ops", "dwconv", "scan", "--rounds", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    expected = {("scan", "{}, {}, {}x{}".format(*s), "") for s in bench.SCAN_DAS_SHAPES}
    expected |= {("dwconv", "{}, {}, {}x{}".format(*s), e) for s in bench.DWCONV_SHAPES for e in bench.EPILOGUES
                 if not (e == "gelu_residual" and s[1] == 128)}
    assert {(r["op"], r["shape"], r["epilogue"]) for r in rows} == expected
    for r in rows:
        assert r["kernel_ms"] > 0 and r["speedup"] == pytest.approx(r["torch_ms"] / r["kernel_ms"])


def test_ab_env_inference_interleaves_the_arms_and_restores_the_switch(tmp_path, monkeypatch):
    ab = load_script("scripts", "ab_env_inference.py")
    monkeypatch.setenv("OPENREC_DWCONV", "kernel")
    seen = []  # the switch each model's forward ran under
    real_build = ab.build_model

    def build_and_watch(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: seen.append(os.environ.get("OPENREC_DWCONV")))
        return model

    monkeypatch.setattr(ab, "build_model", build_and_watch)
    out = tmp_path / "ab.json"
    assert ab.main(["--env", "OPENREC_DWCONV", "--values", "auto", "torch", "--configs",
                    "configs/rec/svtrv2/svtrv2_mamba_tiny_gtc_rctc.yml", "configs/rec/svtrv2/svtrv2_tiny_gtc_rctc.yml",
                    "--batches", "1", "--seconds", "0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["arm"].split()[-1] for r in rows] == ["OPENREC_DWCONV=auto", "OPENREC_DWCONV=torch", "svtrv2_tiny_gtc_rctc"]
    assert rows[0]["ratio_to_first"] == 1.0 and all(r["rounds"] == 2 for r in rows)
    assert seen[:3] == ["auto", "torch", "torch"] and seen[3:6] == ["auto", "torch", "torch"]  # the twin runs as left
    assert os.environ["OPENREC_DWCONV"] == "kernel"


def test_ab_env_inference_without_a_switch_times_the_configs_side_by_side(tmp_path):
    ab = load_script("scripts", "ab_env_inference.py")
    out = tmp_path / "ab.json"
    configs = ["configs/rec/svtrv2/svtrv2_mamba_tiny_gtc_rctc.yml", "configs/rec/svtrv2/svtrv2_tiny_gtc_rctc.yml"]
    assert ab.main(["--configs", *configs, "--batches", "1", "--seconds", "0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["arm"] for r in rows] == ["svtrv2_mamba_tiny_gtc_rctc", "svtrv2_tiny_gtc_rctc"]
    assert all(r["faults_per_forward"] >= 0 and r["rounds"] == 2 for r in rows)
    with pytest.raises(SystemExit):  # a switch without its values (or values without a switch) is an error
        ab.main(["--env", "OPENREC_DWCONV", "--configs", *configs])


def test_bench_new_shapes_gives_every_arm_unseen_batch_sizes_and_restores_the_switch(tmp_path, monkeypatch):
    tool = load_script("tools", "bench_new_shapes.py")
    monkeypatch.setenv("OPENREC_DWCONV", "kernel")
    seen = []  # (batch size, switch) of every forward
    real_subject = tool.Subject

    def watched_subject(*args, **kwargs):
        subject = real_subject(*args, **kwargs)
        subject.model.register_forward_pre_hook(
            lambda module, inputs: seen.append((inputs[0].shape[0], os.environ.get("OPENREC_DWCONV"))))
        return subject

    monkeypatch.setattr(tool, "Subject", watched_subject)
    out = tmp_path / "new_shapes.json"
    assert tool.main(["--configs", "configs/rec/svtrv2/svtrv2_mamba_tiny_gtc_rctc.yml", "--env", "OPENREC_DWCONV",
                      "--values", "auto", "torch", "--sdpa-without-cudnn", "--shapes", "2", "--batch", "20",
                      "--width", "32", "--device", "cpu", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["arm"], r["kind"]) for r in rows] == [(a, k) for a in ("OPENREC_DWCONV=auto", "OPENREC_DWCONV=torch",
                                                                    "sdpa=no-cudnn") for k in ("train", "infer")]
    sizes = [s for r in rows for s in r["batch_sizes"]]
    assert sizes == list(range(20, 8, -1))  # every timed call a batch size the process had not run
    assert all(r["first_ms"] > 0 and r["repeat_ms"] > 0 for r in rows)
    timed = [s for s in seen if s[0] != 8]  # 8: the warm-up step
    assert timed[:4] == [(20, "auto"), (20, "auto"), (19, "auto"), (19, "auto")]  # first call and its repeat
    assert timed[-1] == (9, None)  # the sdpa arm runs with the default switch
    assert os.environ["OPENREC_DWCONV"] == "kernel"


def test_classify_errors_sorts_misreads_by_kind(tmp_path, capsys):
    tsv = tmp_path / "errors.tsv"
    tsv.write_text("A\tGRILL\tGril\nA\tSHOGUN\tSHOCUN\nA\tCAFE\tCAFEE\nB\tSTARBUCKS\tet\nB\tBOOK\t\nB\tHOSPITAL\tHOSPTAL\n",
                   encoding="utf-8")
    classify = load_script("scripts", "classify_errors.py")
    assert classify.main([str(tsv)]) == 0
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in capsys.readouterr().out.splitlines()[1:4]}
    # confused, missing, of them a doubled letter read once, extra, mostly wrong
    assert rows == {"A": [1, 1, 1, 1, 0], "B": [0, 1, 0, 0, 2], "all": [1, 2, 1, 1, 2]}


def test_eval_table_keeps_long_set_names_aligned():
    from openrec.engine.evaluate import format_table
    row = {"samples": 400, "acc": 0.5, "norm_edit_dis": 0.75}
    table = format_table({"sets": {"SVT_647": row, "IIIT5k_train_2000[holdout]": row, "/data/eval/a/very/long/path/IC15_1811": row},
                          "combined": row, "average": row})
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1  # every column lines up
    assert [line.split() for line in lines[1:]][1] == ["IIIT5k_train_2000[holdout]", "400", "50.00%", "75.00%"]
