"""Trainer: exact resume, checkpoints, NaN guard, CLI overrides and errors, 2-process DDP on CPU (gloo)."""
import copy
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from openrec.config import ConfigError, apply_overrides
from openrec.engine.trainer import Trainer
from tests.helpers import tiny_arch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(out_dir, **global_overrides) -> dict:
    cfg = {
        "Global": {"output_dir": str(out_dir), "device": "cpu", "seed": 1, "max_steps": 8, "log_every": 1,
                   "save_every": 4, "use_tensorboard": False, "plot": False, "num_threads": 1},
        "Architecture": tiny_arch("RCTC"),
        "Loss": {"name": "CTCLoss"}, "PostProcess": {"name": "CTCLabelDecode"}, "LabelEncode": {"name": "CTCLabelEncode"},
        "Optimizer": {"lr": 0.001}, "LRScheduler": {"warmup_steps": 2},
        "Train": {"datasets": [{"type": "synth", "num_samples": 80, "preset": "clean", "seed": 0}],
                  "batch_size": 8, "num_workers": 0, "max_ratio": 6, "augment": True},
        "Eval": {"datasets": [{"type": "synth", "name": "val", "num_samples": 12, "fixed": True, "seed": 9}],
                 "batch_size": 16, "num_workers": 0, "max_ratio": 6},
    }
    cfg["Architecture"]["Encoder"]["drop_path_rate"] = 0.1  # exercise the RNG stream across resume
    cfg["Global"].update(global_overrides)
    return cfg


def history(out_dir, kind="train"):
    with open(os.path.join(out_dir, "history.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def poison_losses(trainer) -> None:
    """Make the loss NaN at the trainer's 2nd step and from its 5th on (steps 1, 3 and 4 stay good)."""
    original = trainer.loss_fn.forward
    calls = {"n": 0}

    def poisoned(outputs, batch):
        calls["n"] += 1
        losses = original(outputs, batch)
        if calls["n"] == 2 or calls["n"] >= 5:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    trainer.loss_fn.forward = poisoned


class _Interrupt(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a"))
    straight.train()
    ref = {r["step"]: r["step_loss"] for r in history(tmp_path / "a")}
    assert sorted(ref) == list(range(1, 9))

    interrupted = Trainer(tiny_config(tmp_path / "b"))
    original_step = interrupted.train_step

    def step_then_die(batch):
        if interrupted.state["global_step"] == 6:  # dies in step 7; the last checkpoint is from step 4
            raise _Interrupt()
        return original_step(batch)

    interrupted.train_step = step_then_die
    with pytest.raises(_Interrupt):
        interrupted.train()
    resumed = Trainer(tiny_config(tmp_path / "b", checkpoints=str(tmp_path / "b" / "latest.pth")))
    assert resumed.state["global_step"] == 4
    resumed.train()
    got = {r["step"]: r["step_loss"] for r in history(tmp_path / "b")}
    assert got == ref  # bit-identical losses, including steps 5-6 that were redone
    for (name, a), (_, b) in zip(straight.raw_model.state_dict().items(), resumed.raw_model.state_dict().items()):
        assert torch.equal(a, b), name


def test_outputs_best_checkpoint_and_eval(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, eval_every=4, plot=True))
    summary = trainer.train()
    for name in ("latest.pth", "best.pth", "config.yml", "train.log", "history.jsonl", "summary.json", "curves.png"):
        assert os.path.isfile(tmp_path / name), name
    evals = history(tmp_path, "eval")
    assert [r["step"] for r in evals] == [4, 8] and 0.0 <= evals[-1]["val/acc"] <= 1.0
    assert summary["best"]["indicator"] == "acc" and summary["global_step"] == 8
    best = torch.load(tmp_path / "best.pth", weights_only=False)
    assert "optimizer" not in best and set(best["model"]) == set(trainer.raw_model.state_dict())


@pytest.mark.parametrize("each_epoch", [True, False])
def test_epoch_end_evaluation_can_be_turned_off(tmp_path, each_epoch):
    trainer = Trainer(tiny_config(tmp_path, max_steps=15, eval_each_epoch=each_epoch))
    per_epoch = trainer.steps_per_epoch
    assert per_epoch < 15  # the run crosses an epoch boundary
    trainer.train()
    steps = [r["step"] for r in history(tmp_path, "eval")]
    assert steps == ([per_epoch, 15] if each_epoch else [15])  # the final evaluation always runs


@pytest.mark.parametrize("share", [1.0, 0.75])
def test_a_run_whose_samples_are_mostly_skipped_stops_after_saving(tmp_path, share):
    from openrec.data.transforms import DecodeError
    from openrec.engine.trainer import TrainingStopped
    trainer = Trainer(tiny_config(tmp_path, max_steps=40, log_every=2))
    source = trainer.train_dataset.sources[0]
    load = source.load

    def broken_after_step_3(index, epoch, rng):  # e.g. the font folder vanished mid-run
        if trainer.state["global_step"] >= 3 and (index % 4) < 4 * share:
            raise DecodeError("unreadable")
        return load(index, epoch, rng)

    source.load = broken_after_step_3
    with pytest.raises(TrainingStopped, match=r"of the last \d+ samples were skipped.*unreadable"):
        trainer.train()
    assert 3 <= trainer.state["global_step"] < 12
    assert torch.load(tmp_path / "latest.pth", weights_only=False)["state"]["global_step"] == trainer.state["global_step"]
    train_rows = history(tmp_path)
    assert train_rows and all(0.0 <= r["data_wait"] <= 1.0 for r in train_rows)


def test_a_few_skipped_samples_do_not_stop_training(tmp_path):
    from openrec.data.transforms import DecodeError
    trainer = Trainer(tiny_config(tmp_path, max_steps=10, log_every=2))
    source = trainer.train_dataset.sources[0]
    load = source.load

    def one_in_four_broken(index, epoch, rng):
        if index % 4 == 0:
            raise DecodeError("unreadable")
        return load(index, epoch, rng)

    source.load = one_in_four_broken
    assert trainer.train()["global_step"] == 10 and trainer.skipped.get("unreadable", 0) > 0


def test_non_finite_steps_are_skipped_then_training_stops(tmp_path):
    from openrec.engine.trainer import TrainingStopped
    trainer = Trainer(tiny_config(tmp_path, max_bad_steps=3))
    poison_losses(trainer)
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    with pytest.raises(TrainingStopped, match="3 consecutive non-finite steps"):
        trainer.train()
    assert trainer.state["bad_steps_total"] == 4 and trainer.state["global_step"] == 7
    after = trainer.raw_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the good steps did update
    assert all(torch.isfinite(v).all() for v in after.values() if v.dtype.is_floating_point)


def test_skipping_bad_updates_on_the_device_matches_the_host_checked_step(tmp_path):
    # the fused optimizer's found_inf path (the CUDA default: no host sync per step), run on CPU
    runs = {}
    for on_device in (False, True):
        cfg = tiny_config(tmp_path / str(on_device))
        cfg["Optimizer"]["fused"] = True
        trainer = Trainer(cfg)
        assert trainer.skip_on_device
        trainer.skip_on_device = on_device
        trainer.train()
        runs[on_device] = ({r["step"]: r["step_loss"] for r in history(tmp_path / str(on_device))},
                           trainer.raw_model.state_dict())
    assert runs[False][0] == runs[True][0]
    for name, value in runs[False][1].items():
        assert torch.equal(value, runs[True][1][name]), name


@pytest.mark.parametrize("log_every, stop_step, bad_total", [(1, 7, 4), (4, 8, 5)])
def test_non_finite_steps_skipped_on_the_device_stop_training_at_a_log_step(tmp_path, log_every, stop_step, bad_total):
    from openrec.engine.trainer import TrainingStopped
    cfg = tiny_config(tmp_path, max_bad_steps=3, log_every=log_every, save_every=None, max_steps=12)
    cfg["Optimizer"]["fused"] = True
    trainer = Trainer(cfg)
    assert trainer.skip_on_device
    poison_losses(trainer)
    with pytest.raises(TrainingStopped, match="consecutive non-finite steps"):
        trainer.train()
    assert trainer.state["global_step"] == stop_step and trainer.state["bad_steps_total"] == bad_total
    after = trainer.raw_model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.dtype.is_floating_point)
    steps = trainer.optimizer.state[next(iter(trainer.raw_model.parameters()))]["step"]
    assert int(steps) == 3  # only steps 1, 3 and 4 updated the weights


def test_config_mistakes_fail_fast_naming_the_key(tmp_path):
    base = tiny_config(tmp_path)
    cases = [
        (["Global.grad_clipp=5"], r"Global: unknown key 'grad_clipp'.*'grad_clip'"),
        (["Global.max_steps=ten"], r"'max_steps' = 'ten' has the wrong type"),
        (["Optimizer.lr=fast"], r"Optimizer: key 'lr'"),
        (["Train.batch_size=0"], r"Train.batch_size must be >= 1"),
        (["Global.checkpoints=/no/such.pth"], r"checkpoint not found: /no/such.pth"),
        (["Global.device=tpu"], r"'device' = 'tpu'"),
        (["Global.cuda_graphs=true"], r"Global.cuda_graphs needs a CUDA device"),
    ]
    from openrec.engine.checkpoint import CheckpointError
    for overrides, match in cases:
        with pytest.raises((ConfigError, CheckpointError), match=match):
            Trainer(apply_overrides(copy.deepcopy(base), overrides))
    bad = copy.deepcopy(base)
    bad["Trian"] = {}
    with pytest.raises(ConfigError, match="unknown top-level section 'Trian'"):
        Trainer(bad)


def _run_cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300, **kw)


def test_train_cli_overrides_and_error_exit(tmp_path):
    cfg_path = tmp_path / "cfg.yml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(tmp_path / "out")))
    res = _run_cli(["tools/train_rec.py", "--c", str(cfg_path), "--o", "Global.max_steps=3", "Train.batch_size=4",
                    "Global.eval_every=3"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["step"] for r in history(tmp_path / "out")] == [1, 2, 3]
    cfg = yaml.safe_load((tmp_path / "out" / "config.yml").read_text())
    assert cfg["Train"]["batch_size"] == 4 and cfg["Global"]["max_steps"] == 3
    res = _run_cli(["tools/train_rec.py", "--c", str(cfg_path), "--o", "Architecture.Encoder.drop_rat=0.1"])
    assert res.returncode == 2 and "unknown key 'drop_rat'" in res.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_on_cpu_matches_one_process(tmp_path):
    single = tiny_config(tmp_path / "single", max_steps=4, save_every=None)
    single["Architecture"]["Encoder"]["drop_path_rate"] = 0.0  # random masks would differ between 1 and 2 ranks
    single["Train"]["batch_size"] = 16
    Trainer(single).train()
    ddp = tiny_config(tmp_path / "ddp", max_steps=4, save_every=None)  # 2 ranks x 8 = the same global batch
    ddp["Architecture"]["Encoder"]["drop_path_rate"] = 0.0
    cfg_path = tmp_path / "ddp.yml"
    cfg_path.write_text(yaml.safe_dump(ddp))
    res = _run_cli(["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                    f"--master_port={_free_port()}", "tools/train_rec.py", "--c", str(cfg_path)])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    one = [r["step_loss"] for r in history(tmp_path / "single")]
    two = [r["step_loss"] for r in history(tmp_path / "ddp")]
    assert len(one) == len(two) == 4
    # Same data and global batch; BatchNorm statistics are per rank, so allow a small difference.
    for a, b in zip(one, two):
        assert abs(a - b) <= 0.05 * abs(a), (one, two)


def test_ema_update_is_the_decayed_average_and_copies_integer_buffers():
    from openrec.engine.optim import ModelEMA
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()(torch.randn(5, 3))  # moves the running stats and num_batches_tracked
    ema.update(model)
    for name, value in model.state_dict().items():
        got = ema.state_dict()[name]
        if value.dtype.is_floating_point:
            torch.testing.assert_close(got, 0.9 * before[name] + 0.1 * value, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(got, value), name


def test_window_throughput_leaves_out_evaluation_and_checkpoint_time(tmp_path, monkeypatch):
    # A fake clock: each train step takes 0.5 s, each evaluation and each save 100 s. Every 2-step
    # window then reads at least 2 img/s (it saw at least 2 images in 1 s of training), not the ~0.1 it
    # would read with the 200 s of its evaluation and save counted.
    import types

    from openrec.engine import trainer as trainer_module
    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    trainer = Trainer(tiny_config(tmp_path, log_every=2, eval_every=2, save_every=2))

    def advancing(method, seconds):
        def run(*args, **kwargs):
            clock[0] += seconds
            return method(*args, **kwargs)
        return run

    trainer.train_step = advancing(trainer.train_step, 0.5)
    trainer._evaluate_and_record = advancing(trainer._evaluate_and_record, 100.0)
    trainer.save = advancing(trainer.save, 100.0)
    trainer.train()
    windows = history(tmp_path)
    assert len(windows) == 4 and all(w["img_per_s"] >= 2.0 for w in windows), [w["img_per_s"] for w in windows]


@pytest.mark.parametrize("steps, max_steps, profiled", [([3, 5], 8, [3, 4, 5]), ([7, 20], 8, [7, 8])])
def test_profile_steps_reports_exactly_the_chosen_steps_of_the_loop(tmp_path, steps, max_steps, profiled):
    # Each step sleeps 30 ms and the first profiled one runs a garbage collection: the report must list
    # exactly the profiled steps (a window cut short by max_steps included), walls of at least 30 ms, and
    # the collection.
    import gc
    import re
    import time
    trainer = Trainer(tiny_config(tmp_path, max_steps=max_steps, profile_steps=steps, log_every=4))
    step_fn = trainer.train_step

    def slow_step(batch):
        time.sleep(0.03)
        if trainer.state["global_step"] + 1 == profiled[0]:
            gc.collect()
        return step_fn(batch)

    trainer.train_step = slow_step
    trainer.train()
    with open(os.path.join(tmp_path, "profile_steps.txt")) as f:
        report = f.read()
    rows = [line.split() for line in report.splitlines() if re.fullmatch(r"\s*\d+\s+[\d.]+\s+[\d.]+", line)]
    assert [int(r[0]) for r in rows] == profiled
    assert all(float(r[1]) >= 30.0 for r in rows), rows
    assert int(re.search(r"garbage collections: (\d+)", report).group(1)) >= 1
    assert "Self CPU" in report  # the profiler's op table


@pytest.mark.parametrize("value", [[5, 3], [0, 2], [4], "3-5", [True, 2]])
def test_profile_steps_must_be_first_and_last(tmp_path, value):
    with pytest.raises(ConfigError, match=r"profile_steps"):
        Trainer(tiny_config(tmp_path, profile_steps=value))
