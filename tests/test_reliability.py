"""Robustness: fuzzed bad records, SIGKILL and resume, config mistakes, disk full, determinism."""
import errno
import os

import pytest
import torch

from openrec.config import ConfigError
from openrec.data.fuzz import BAD_KINDS
from openrec.engine import checkpoint as ckpt_mod
from openrec.engine.checkpoint import CheckpointError
from openrec.engine.reliability import (CONFIG_MISTAKES, config_mistakes_report, fuzz_data_report,
                                        kill_resume_trials)
from openrec.engine.trainer import Trainer
from tests.test_trainer import tiny_config


def test_fuzzed_lmdb_is_read_without_crashes_and_every_skip_is_explained(tmp_path):
    report = fuzz_data_report(str(tmp_path), num_bad=4 * len(BAD_KINDS), num_good=40, train_steps=6)
    assert report["crashes"] == 0
    assert report["skipped"] == report["expected_skips"]  # each bad kind skipped for its own reason
    valid_odd = sum(n for k, n in report["written"].items() if k in BAD_KINDS and BAD_KINDS[k] is None)
    assert report["records_used"] == report["written"]["good"] + valid_odd  # odd but valid images are used
    assert report["training_steps"] == 6


def test_sigkill_and_resume_ends_identical(tmp_path):
    report = kill_resume_trials(str(tmp_path), trials=1, seed=1, max_kills=2)
    trial = report["results"][0]
    assert report["passed"] == 1 and trial["kills"] >= 1 and trial["corrupt_checkpoint_reads"] == 0
    assert all(lost <= report["save_every"] for lost in trial["steps_lost"])


def test_config_mistakes_fail_fast_naming_the_key(tmp_path):
    rows = config_mistakes_report(str(tmp_path))
    assert len(rows) == len(CONFIG_MISTAKES) >= 20
    for row in rows:
        assert row["error"] is not None and row["names_it"], row
        assert row["seconds"] < 10, row
    out = tmp_path / "never_written"
    assert not os.path.exists(out) or not [f for f in os.listdir(out) if f.endswith(".pth")]


def test_disk_full_at_checkpoint_keeps_previous_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, max_steps=8, save_every=4))
    real_save = torch.save
    calls = {"n": 0}

    def save_then_fill_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:  # the second latest.pth write runs out of space half way
            f.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, "save", save_then_fill_disk)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint is intact"):
        trainer.train()
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    kept = torch.load(tmp_path / "latest.pth", weights_only=False)
    assert kept["state"]["global_step"] == 4
    assert not [f for f in os.listdir(tmp_path) if ".tmp." in f]  # no partial files left behind


def test_unwritable_output_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"Global.output_dir: cannot write to .*a_file"):
        Trainer(tiny_config(blocker / "out"))


def test_deterministic_runs_are_bit_identical(tmp_path):
    models = []
    for name in ("a", "b"):
        trainer = Trainer(tiny_config(tmp_path / name, max_steps=5, deterministic=True))
        trainer.train()
        models.append(trainer.raw_model.state_dict())
    for key in models[0]:
        assert torch.equal(models[0][key], models[1][key]), key
