"""Released models: export (fp16, SMTR branch dropped, inference-only config), loading through the
Python API and the CLIs, evaluation of any LMDB set list, and the model shipped in openrec/pretrained."""
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

from openrec.config import ConfigError
from openrec.data.lmdb_writer import LMDBWriter
from openrec.engine.infer import TextRecognizer
from openrec.engine.release import DEFAULT_RELEASE, inference_config, release_model, release_paths
from openrec.engine.trainer import Trainer
from tests.helpers import tiny_arch
from tests.test_trainer import ROOT, _run_cli, tiny_config


@pytest.fixture(scope="module")
def gtc_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    cfg = tiny_config(root / "out", max_steps=2)
    cfg["Architecture"] = tiny_arch("GTC")
    cfg["Architecture"]["Decoder"]["infer_gtc"] = False  # the CTC path is what a release serves
    cfg.update({"Loss": {"name": "GTCLoss", "ctc_weight": 1.0}, "PostProcess": {"name": "GTCLabelDecode"},
                "LabelEncode": {"name": "GTCLabelEncode"}})
    trainer = Trainer(cfg)
    trainer.train()
    return root, cfg, trainer


@pytest.fixture(scope="module")
def released(gtc_run, tmp_path_factory):
    """The run's checkpoint exported by tools/export_release.py: (release folder, the tool's result)."""
    root, _, _ = gtc_run
    folder = tmp_path_factory.mktemp("released") / "m"
    return folder, _run_cli(["tools/export_release.py", "--checkpoint", str(root / "out" / "latest.pth"), "--out", str(folder)])


def _word_images(n=4):
    rng = np.random.default_rng(0)
    return [cv2.imencode(".png", rng.integers(0, 256, (32, 64 + 24 * i, 3), dtype=np.uint8))[1].tobytes()
            for i in range(n)]


def test_release_is_fp16_inference_only_and_reads_like_the_checkpoint(gtc_run, tmp_path):
    root, cfg, _ = gtc_run
    info = release_model(cfg, str(root / "out" / "latest.pth"), str(tmp_path / "rel"))
    assert info["dropped"] == ["decoder.gtc_decoder"]
    cfg_path, weights = release_paths(str(tmp_path / "rel"))
    saved = torch.load(weights, weights_only=False)
    assert saved["meta"] == {"source_step": 2, "dtype": "float16"}
    assert all(v.dtype == torch.float16 for v in saved["model"].values() if v.is_floating_point())
    rel_cfg = yaml.safe_load(open(cfg_path))
    assert set(rel_cfg) == {"Global", "Architecture", "PostProcess"}
    assert rel_cfg["Architecture"]["Decoder"]["gtc_decoder"] is None
    # same texts as the fp32 checkpoint through the full model, confidences within fp16 rounding
    full = TextRecognizer(cfg, str(root / "out" / "latest.pth"))
    released = TextRecognizer.from_release(str(tmp_path / "rel"))
    imgs = [full.preprocess(b) for b in _word_images()]
    a, b = full.read_tensors(imgs), released.read_tensors(imgs)
    assert [t for t, _ in a] == [t for t, _ in b]
    assert np.allclose([c for _, c in a], [c for _, c in b], atol=2e-2)


def test_release_refuses_what_it_cannot_serve(gtc_run, tmp_path):
    _, cfg, _ = gtc_run
    with pytest.raises(ConfigError, match="infer_gtc"):
        inference_config({**cfg, "Architecture": {**cfg["Architecture"], "Decoder": {
            **cfg["Architecture"]["Decoder"], "infer_gtc": True}}})
    with pytest.raises(ConfigError, match="model.pth not found"):
        os.makedirs(tmp_path / "half")
        (tmp_path / "half" / "config.yml").write_text("{}")
        release_paths(str(tmp_path / "half"))


def test_export_tool_then_infer_and_eval_tools_on_the_folder(released, tmp_path):
    release, res = released
    assert res.returncode == 0 and "model.pth" in res.stdout and "left out: decoder.gtc_decoder" in res.stdout, res.stderr
    (tmp_path / "img").mkdir()
    for i, data in enumerate(_word_images(2)):
        (tmp_path / "img" / f"{i}.png").write_bytes(data)
    res = _run_cli(["tools/infer_rec.py", "--model", str(release), "--image", str(tmp_path / "img")])
    assert res.returncode == 0 and len(res.stdout.strip().splitlines()) == 2, res.stderr[-2000:]
    # sets we do not ship, in the standard layout, each get a row named after the folder
    sets = []
    for name, words in (("IC15_demo", ["abc", "de"]), ("CUTE80_demo", ["f"])):
        with LMDBWriter(str(tmp_path / name)) as w:
            for word, data in zip(words, _word_images(len(words))):
                w.add(data, word, 64, 32)
        sets.append(str(tmp_path / name))
    res = _run_cli(["tools/eval_rec.py", "--model", str(release), "--sets", *sets])
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split() for line in res.stdout.strip().splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("IC15_demo", "2"), ("CUTE80_demo", "1"), ("Combined", "3"), ("Average", "3")]
    (tmp_path / "b").mkdir()
    twin = str(tmp_path / "b" / "IC15_demo")  # a second folder with the same name: rows by full path
    with LMDBWriter(twin) as w:
        w.add(_word_images(1)[0], "xyz", 64, 32)
    res = _run_cli(["tools/eval_rec.py", "--model", str(release), "--sets", sets[0], twin])
    assert res.returncode == 0, res.stderr[-2000:]
    assert [line.split()[0] for line in res.stdout.strip().splitlines()[1:3]] == [sets[0], twin]
    res = _run_cli(["tools/eval_rec.py", "--model", str(release), "--sets", sets[0], str(tmp_path / "SVTP")])
    assert res.returncode == 2 and "no such folder" in res.stderr and "SVTP" in res.stderr and res.stdout == ""
    res = _run_cli(["tools/eval_rec.py", "--model", str(release)])
    assert res.returncode == 2 and "--sets" in res.stderr


def test_export_onnx_tool_takes_a_release_folder_and_infer_reads_it_the_same(released, tmp_path):
    pytest.importorskip("onnxruntime")
    release, res = released
    assert res.returncode == 0, res.stderr[-2000:]
    res = _run_cli(["tools/export_onnx.py", "--model", str(release), "--out", str(tmp_path / "m.onnx")])
    assert res.returncode == 0 and "onnxruntime vs PyTorch" in res.stdout, res.stderr[-2000:]
    (tmp_path / "img").mkdir()
    for i, data in enumerate(_word_images(3)):
        (tmp_path / "img" / f"{i}.png").write_bytes(data)
    read = [_run_cli(["tools/infer_rec.py", "--model", str(release), "--image", str(tmp_path / "img"), *extra])
            for extra in ([], ["--onnx", str(tmp_path / "m.onnx")])]
    assert all(r.returncode == 0 for r in read), read[1].stderr[-2000:]
    texts = [[line.split("\t")[:2] for line in r.stdout.strip().splitlines()] for r in read]
    assert len(texts[0]) == 3 and texts[0] == texts[1]
    res = _run_cli(["tools/export_onnx.py", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.onnx")])
    assert res.returncode == 2 and "nowhere" in res.stderr and not (tmp_path / "x.onnx").exists()


def test_shipped_model_reads_the_demo_images_on_cpu():
    cfg_path, weights = release_paths(DEFAULT_RELEASE)
    assert os.path.getsize(weights) <= 12 * 2**20  # the limit for committing a model
    demo = os.path.join(ROOT, "docs", "demo")
    res = _run_cli(["tools/infer_rec.py", "--image", demo])  # no --c, no --model: the shipped model
    assert res.returncode == 0, res.stderr[-2000:]
    read = {os.path.basename(line.split("\t")[0]): line.split("\t")[1] for line in res.stdout.strip().splitlines()}
    assert read == {"coffee.png": "Coffee", "mamba.png": "Mamba", "open.png": "OPEN"}


def test_recipe_call_snapshot_brings_back_logs_and_the_last_save(gtc_run, tmp_path):
    """scripts/gpu_recipe.sh's snapshot_progress: what a lent-machine call returns while runs still train."""
    import shutil
    import subprocess
    import sys
    import tarfile
    root, _, _ = gtc_run
    run = tmp_path / "work" / "output" / "recipe" / "run_a"
    run.mkdir(parents=True)
    for name in ("latest.pth", "history.jsonl", "train.log"):
        shutil.copy(root / "out" / name, run / name)
    out = tmp_path / "out"
    out.mkdir()
    bindir = tmp_path / "bin"  # the script calls python3: make it this interpreter
    bindir.mkdir()
    # A wrapper, not a symlink: a symlinked venv interpreter outside the venv's bin/ loses the venv.
    (bindir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bindir / "python3").chmod(0o755)
    script = os.path.join(ROOT, "scripts", "gpu_recipe.sh")
    env = dict(os.environ, WORK=str(tmp_path / "work"), OUT=str(out), PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=ROOT)
    def snapshot_progress(work):
        return subprocess.run(["bash", "-c", f'eval "$(sed -n "/^snapshot_progress() {{/,/^}}/p" {script})"; snapshot_progress'],
                              cwd=ROOT, env=dict(env, WORK=str(work)), capture_output=True, text=True, timeout=300)

    (tmp_path / "new_work" / "output" / "recipe" / "run_b").mkdir(parents=True)
    res = snapshot_progress(tmp_path / "new_work")  # right after a start: no log yet, so no archive and no error
    assert res.stderr == "" and not (out / "progress.tar.gz").exists()
    res = snapshot_progress(tmp_path / "work")
    assert res.returncode == 0, res.stderr[-2000:]
    with tarfile.open(out / "progress.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["output/recipe/run_a/history.jsonl", "output/recipe/run_a/train.log"]
    saved = torch.load(out / "snapshot_run_a" / "model.pth", weights_only=False)
    assert saved["meta"] == {"source_step": 2, "dtype": "float16"}
    TextRecognizer.from_release(str(out / "snapshot_run_a"))  # a release folder the tools can load


def test_recipe_runs_of_a_plan_get_a_gpu_each_and_split_the_cores():
    """scripts/gpu_recipe.sh's launch_runs (DRY_RUN=1 prints the commands it would start)."""
    import subprocess
    script = os.path.join(ROOT, "scripts", "gpu_recipe.sh")
    plan = "svtrv2_mamba_tiny_real_holdout||\nsvtrv2_mamba_tiny_real_holdout|_arc|Train.datasets.0.style.p_arc=0.05\n"

    def launch(gpus, cores, **env):
        cmd = f'eval "$(sed -n "/^plan_runs() {{/,/^}}/p;/^launch_runs() {{/,/^}}/p" {script})"; launch_runs'
        full_env = dict(os.environ, C="configs/rec/svtrv2", WORK="/w", DRY_RUN="1", GPU_COUNT=str(gpus),
                        CPU_COUNT=str(cores), RECIPE_ARGS="Global.cuda_graphs=true", **env)
        if "RUN_PLAN" not in env:
            full_env.pop("RUN_PLAN", None)
        return subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)

    res = launch(2, 32, RUN_PLAN=plan)  # nvidia-h100-x2: a GPU and 15 loader workers each
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"]
    assert all("Train.num_workers=15 Global.cuda_graphs=true" in line for line in lines)
    assert lines[0].split()[-1] == "Global.cuda_graphs=true" and lines[1].endswith("Train.datasets.0.style.p_arc=0.05")
    assert "output/recipe/svtrv2_mamba_tiny_real_holdout " in lines[0] and "output/recipe/svtrv2_mamba_tiny_real_holdout_arc " in lines[1]
    res = launch(1, 16, RUN_PLAN=plan)  # one GPU: shared, and half the cores each
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("python3 ") and "Train.num_workers=7 " in line for line in lines)
    res = launch(1, 16, CONFIGS="svtrv2_tiny_real", SUFFIX="_20k")  # one run: the config's own workers
    assert res.stdout.split() == ["python3", "tools/train_rec.py", "--c", "configs/rec/svtrv2/svtrv2_tiny_real.yml", "--o",
                                  "Global.output_dir=/w/output/recipe/svtrv2_tiny_real_20k", "Global.use_tensorboard=false",
                                  "Global.cuda_graphs=true"]
    res = launch(2, 32, RUN_PLAN="svtrv2_tiny_real|_a|\nsvtrv2_tiny_real|_a|Optimizer.lr=0.001")
    assert res.returncode == 1 and "one output folder" in res.stderr and res.stdout == ""
    res = launch(2, 32, CONFIGS="svtrv2_tiny_real svtrv2_tiny_rael")
    assert res.returncode == 1 and "svtrv2_tiny_rael.yml" in res.stderr and res.stdout == ""
