"""Reliability experiments behind README's figures: bad-data fuzzing and SIGKILL-and-resume trials."""
from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time

import torch
import yaml

from ..data import build_dataset, build_loader, validate_section
from ..data.fuzz import BAD_KINDS, write_fuzzed_lmdb
from ..text import build_charset, build_label_encoder

__all__ = ["fuzz_data_report", "kill_resume_trials", "config_mistakes_report", "TINY_TRAIN_CONFIG", "CONFIG_MISTAKES"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A tiny CPU training run (about 0.1 s a step) used by the reliability experiments.
TINY_TRAIN_CONFIG = {
    "Global": {"device": "cpu", "seed": 3, "max_steps": 40, "log_every": 1, "save_every": 5,
               "use_tensorboard": False, "plot": False, "num_threads": 1},
    "Architecture": {
        "Encoder": {"name": "SVTRv2Mamba", "dims": [32, 64, 96], "depths": [1, 1, 1], "num_heads": [2, 2, 3],
                    "mixer": [["Conv"], ["Mamba"], ["Mamba"]], "sub_k": [[1, 1], [2, 1]], "feat2d": True,
                    "drop_path_rate": 0.1},
        "Decoder": {"name": "RCTCDecoder"}},
    "Loss": {"name": "CTCLoss"}, "PostProcess": {"name": "CTCLabelDecode"}, "LabelEncode": {"name": "CTCLabelEncode"},
    "Optimizer": {"lr": 0.001}, "LRScheduler": {"warmup_steps": 5},
    "Train": {"datasets": [{"type": "synth", "num_samples": 160, "preset": "clean", "seed": 0}],
              "batch_size": 8, "num_workers": 0, "max_ratio": 6, "augment": True},
}


def fuzz_data_report(workdir: str, num_bad: int = 1000, num_good: int = 200, train_steps: int = 20) -> dict:
    """Write a fuzzed LMDB, read every record through the training pipeline, then train on it."""
    from .trainer import Trainer
    os.makedirs(workdir, exist_ok=True)
    lmdb_dir = os.path.join(workdir, "fuzzed_lmdb")
    written = write_fuzzed_lmdb(lmdb_dir, num_bad, num_good)
    charset = build_charset()
    cfg = validate_section({"datasets": [lmdb_dir], "batch_size": 16, "num_workers": 0, "max_ratio": 12,
                            "augment": True}, "Train")
    dataset = build_dataset(cfg, charset, build_label_encoder({"name": "CTCLabelEncode"}, charset), True, 0)
    skipped: dict[str, int] = {}
    used, crashes = 0, 0
    for batch in build_loader(dataset, cfg, True, 0):
        used += len(batch["text"])
        for reason, n in batch["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + n
            crashes += n if reason.startswith("error:") else 0
    expected_skips: dict[str, int] = {}
    for kind, n in written.items():
        reason = "missing_record" if kind == "claimed_but_absent" else BAD_KINDS.get(kind)
        if reason is not None:
            expected_skips[reason] = expected_skips.get(reason, 0) + n
    config = copy.deepcopy(TINY_TRAIN_CONFIG)
    # most records of this set are broken on purpose: the skip-fraction stop would end the run early
    config["Global"].update({"output_dir": os.path.join(workdir, "train"), "max_steps": train_steps,
                             "max_skip_fraction": None})
    config["Train"] = dict(cfg, num_workers=0)
    summary = Trainer(config).train()
    return {"records_tried": len(dataset), "records_used": used, "crashes": crashes, "skipped": skipped,
            "expected_skips": expected_skips, "written": written, "training_steps": summary["global_step"],
            "training_skips": summary["skipped_samples"]}


def _train_cmd(cfg_path: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "tools", "train_rec.py"), "--c", cfg_path]


def _steps(history_path: str) -> dict[int, float]:
    if not os.path.exists(history_path):
        return {}
    with open(history_path) as f:
        return {r["step"]: r["step_loss"] for r in map(json.loads, f) if r["kind"] == "train"}


def kill_resume_trials(workdir: str, trials: int = 10, seed: int = 0, max_kills: int = 3) -> dict:
    """Train a tiny model uninterrupted, then ``trials`` times: start, SIGKILL at random moments (up to
    ``max_kills`` per trial), resume from ``latest.pth`` each time, and compare with the reference."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    rng = random.Random(seed)
    os.makedirs(workdir, exist_ok=True)

    def write_cfg(name: str, resume: str | None) -> tuple[str, str]:
        out = os.path.join(workdir, name)
        cfg = copy.deepcopy(TINY_TRAIN_CONFIG)
        cfg["Global"].update({"output_dir": out, "checkpoints": resume})
        path = os.path.join(workdir, f"{name}.yml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        return path, out

    ref_cfg, ref_out = write_cfg("reference", None)
    start = time.perf_counter()
    subprocess.run(_train_cmd(ref_cfg), env=env, check=True, capture_output=True)
    ref_seconds = time.perf_counter() - start
    reference = _steps(os.path.join(ref_out, "history.jsonl"))
    ref_weights = torch.load(os.path.join(ref_out, "latest.pth"), weights_only=False)["model"]
    total = TINY_TRAIN_CONFIG["Global"]["max_steps"]
    results = []
    for t in range(trials):
        name = f"trial{t}"
        kills, lost, corrupt_reads = 0, [], 0
        resume = None
        while True:
            cfg_path, out = write_cfg(name, resume)
            proc = subprocess.Popen(_train_cmd(cfg_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            kill_at = rng.uniform(0.3, 1.0) * ref_seconds if kills < max_kills else None
            try:
                _, err = proc.communicate(timeout=kill_at)
                if proc.returncode != 0:
                    corrupt_reads += "could not read checkpoint" in err.decode(errors="replace")
                    raise RuntimeError(f"trial {t}: training failed: {err.decode(errors='replace')[-500:]}")
                break
            except subprocess.TimeoutExpired:
                before = max(_steps(os.path.join(out, "history.jsonl")) or {0: 0})
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                ckpt = os.path.join(out, "latest.pth")
                resume = ckpt if os.path.exists(ckpt) else None
                saved = torch.load(ckpt, weights_only=False)["state"]["global_step"] if resume else 0
                lost.append(max(0, before - saved))
        got = _steps(os.path.join(out, "history.jsonl"))
        weights = torch.load(os.path.join(out, "latest.pth"), weights_only=False)["model"]
        identical = got == reference and all(torch.equal(weights[k], ref_weights[k]) for k in ref_weights)
        results.append({"trial": t, "kills": kills, "steps_lost": lost, "final_step": max(got or {0: 0}),
                        "identical_to_reference": identical, "corrupt_checkpoint_reads": corrupt_reads})
    passed = sum(r["identical_to_reference"] and r["final_step"] == total for r in results)
    return {"trials": trials, "passed": passed, "total_steps": total, "save_every": TINY_TRAIN_CONFIG["Global"]["save_every"],
            "reference_seconds": ref_seconds, "results": results}


# (what is wrong, overrides applied to TINY_TRAIN_CONFIG, a fragment the error message must contain)
CONFIG_MISTAKES = [
    ("typo in a Global key", ["Global.grad_clipp=5"], "unknown key 'grad_clipp'; did you mean 'grad_clip'"),
    ("string for an int", ["Global.max_steps=ten"], "'max_steps' = 'ten' has the wrong type"),
    ("unknown device", ["Global.device=tpu"], "'device' = 'tpu' has the wrong type"),
    ("int for a bool", ["Global.use_amp=2"], "'use_amp' = 2 has the wrong type (expected bool)"),
    ("missing dictionary file", ["Global.character_dict_path=/no/dict.txt"], "character_dict_path: file not found"),
    ("missing resume checkpoint", ["Global.checkpoints=/no/latest.pth"], "checkpoint not found: /no/latest.pth"),
    ("missing pretrained weights", ["Global.pretrained_model=/no/best.pth"], "checkpoint not found: /no/best.pth"),
    ("typo in a section name", ["Trian.batch_size=8"], "unknown top-level section 'Trian'"),
    ("typo in an encoder key", ["Architecture.Encoder.drop_rat=0.1"], "unknown key 'drop_rat'; did you mean 'drop_rate'"),
    ("scalar for a list", ["Architecture.Encoder.dims=64"], "'dims' = 64 has the wrong type"),
    ("depths and dims disagree", ["Architecture.Encoder.depths=[1, 1]"], "depths has 2 entries but dims has 3"),
    ("mixer list longer than depth", ["Architecture.Encoder.mixer=[[Conv], [Mamba], [Mamba, Mamba]]"],
     "mixer[2] lists 2 mixers but depths[2] = 1"),
    ("unknown mixer", ["Architecture.Encoder.mixer=[[Conv], [Local], [Mamba]]"], "unknown mixer 'Local'"),
    ("dim not divisible by head_dim", ["Architecture.Encoder.dims=[32, 64, 100]", "Architecture.Encoder.num_heads=[2, 2, 2]"],
     "dims[2] = 100 is not divisible by head_dim = 16"),
    ("missing downsample stride", ["Architecture.Encoder.sub_k=[[2, 1]]"], "sub_k needs a stride for each of the 2"),
    ("RCTC on token features", ["Architecture.Encoder.feat2d=false"], "set Architecture.Encoder.feat2d: true"),
    ("unknown encoder", ["Architecture.Encoder.name=SVTRv3"], "unknown encoder 'SVTRv3'"),
    ("unknown decoder", ["Architecture.Decoder.name=AttnDecoder"], "unknown decoder 'AttnDecoder'"),
    ("unknown loss", ["Loss.name=FocalLoss"], "unknown loss 'FocalLoss'"),
    ("typo in a loss key", ["Loss.zero_infinty=true"], "unknown key 'zero_infinty'; did you mean 'zero_infinity'"),
    ("unknown label encoder", ["LabelEncode.name=CTCLabelEncoder"], "unknown label encoder 'CTCLabelEncoder'"),
    ("string learning rate", ["Optimizer.lr=fast"], "'lr' = 'fast' has the wrong type"),
    ("unknown scheduler", ["LRScheduler.name=Cosine"], "'name' = 'Cosine' has the wrong type"),
    ("empty dataset list", ["Train.datasets=[]"], "Train.datasets is empty"),
    ("missing LMDB folder", ["Train.datasets=[/no/such/lmdb]"], "LMDB folder not found: /no/such/lmdb"),
    ("zero batch size", ["Train.batch_size=0"], "Train.batch_size must be >= 1"),
    ("typo in a dataset key", ["Train.datasets=[{type: synth, num_sample: 10}]"], "unknown key 'num_sample'"),
    ("unknown dataset type", ["Train.datasets=[{type: webdataset, path: x}]"], "needs 'type' (accepted: lmdb, synth)"),
    ("unknown synthetic preset", ["Train.datasets=[{type: synth, num_samples: 10, preset: extreme}]"],
     "unknown preset 'extreme'"),
]


def config_mistakes_report(workdir: str) -> list[dict]:
    """Build a Trainer for each wrong config; every one must fail before training with the expected message."""
    from ..config import ConfigError, apply_overrides
    from .checkpoint import CheckpointError
    from .trainer import Trainer
    rows = []
    for what, overrides, fragment in CONFIG_MISTAKES:
        config = copy.deepcopy(TINY_TRAIN_CONFIG)
        config["Global"]["output_dir"] = os.path.join(workdir, "never_written")
        config = apply_overrides(config, overrides)
        start = time.perf_counter()
        try:
            Trainer(config)
            message, kind = "(no error)", None
        except (ConfigError, CheckpointError) as e:
            message, kind = str(e), type(e).__name__
        rows.append({"mistake": what, "overrides": overrides, "error": kind, "message": message,
                     "seconds": time.perf_counter() - start, "names_it": fragment in message})
    return rows
