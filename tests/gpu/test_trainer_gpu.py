"""The trainer on CUDA: a non-finite step is skipped on the device (fused AdamW's found_inf, no host
sync per step) and counted at the next log step."""
import pytest
import torch

from openrec.engine.trainer import Trainer, TrainingStopped
from tests.test_trainer import poison_losses, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("amp", [True, False])
def test_non_finite_steps_are_skipped_on_the_device(tmp_path, amp):
    trainer = Trainer(tiny_config(tmp_path, device="cuda", use_amp=amp, max_bad_steps=3, log_every=4,
                                  save_every=None, max_steps=12))
    assert trainer.skip_on_device and trainer.non_finite.in_a_row.is_cuda
    poison_losses(trainer)
    with pytest.raises(TrainingStopped, match="consecutive non-finite steps"):
        trainer.train()
    assert trainer.state["global_step"] == 8 and trainer.state["bad_steps_total"] == 5
    params = list(trainer.raw_model.parameters())
    assert all(torch.isfinite(p).all() for p in params)
    assert int(trainer.optimizer.state[params[0]]["step"]) == 3  # steps 1, 3 and 4 updated the weights
