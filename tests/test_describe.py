"""describe_model (tools/describe_model.py) on every shipped config: one training step reaches every parameter."""
import glob
import os

import pytest

from openrec.config import load_config
from openrec.engine.describe import describe_model

CONFIGS = sorted(glob.glob("configs/rec/svtrv2/svtrv2*.yml"))


def test_the_shipped_configs_are_found():
    assert len(CONFIGS) >= 11 and "configs/rec/svtrv2/svtrv2_mamba_tiny_real.yml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_one_training_step_reaches_every_parameter(path):
    # DDP runs without find_unused_parameters: a parameter that gets no gradient would stall multi-GPU training.
    info = describe_model(load_config(path), batch_size=2, height=32, width=128)
    assert info["params_without_grad"] == [], info["params_without_grad"][:5]
    assert info["params_total"] == info["params_encoder"] + info["params_decoder"]
    assert all(v == v and 0 < v < 1e3 for v in info["losses"].values()), info["losses"]  # finite, positive
    batch, classes = 2, info["train_outputs"]["ctc_logits"][-1]
    assert info["train_outputs"]["ctc_logits"] == (batch, 32, classes)  # one CTC frame per column of the 4x-down map
    assert len(info["decoded"]) == batch
