"""GraphedTrainForward's bookkeeping on the CPU: one capture per input shape (in "thread_local" mode),
the eager fallbacks, the module left plain and BatchNorm statistics kept free of the capture passes.
make_graphed_callables is replaced by a fake that behaves like it on the host side (warm-up passes in
train mode, the graphed forward installed on the module); the real capture is compared with the eager
step on a GPU in tests/gpu/test_train_graphs.py."""
import copy
import inspect

import pytest
import torch

from openrec.engine import train_graphs
from openrec.engine.train_graphs import GraphedTrainForward
from openrec.modeling import build_model
from tests.helpers import tiny_arch


class FakeCapture:
    def __init__(self):
        self.captured, self.replayed, self.capture_modes = [], [], []

    def make_graphed_callables(self, module, sample_args, num_warmup_iters=3, allow_unused_input=False, pool=None):
        # what the real one would capture with: the default of torch.cuda.graph's capture_error_mode
        self.capture_modes.append(inspect.signature(torch.cuda.graph).parameters["capture_error_mode"].default)
        for _ in range(num_warmup_iters):  # the real warm-up runs the module, moving BatchNorm statistics
            module(*sample_args)
        self.captured.append(tuple(sample_args[0].shape))
        plain, replayed = module.forward, self.replayed

        def graphed(x):
            replayed.append(tuple(x.shape))
            return plain(x)
        module.forward = graphed  # as the real one does
        return module


@pytest.fixture
def fake(monkeypatch):
    capture = FakeCapture()
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", capture.make_graphed_callables)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda: 0)
    monkeypatch.setattr(train_graphs, "_require_cuda", lambda model: None)
    return capture


def model_pair():
    torch.manual_seed(0)
    model = build_model(tiny_arch("RCTC")).train()  # Conv blocks carry BatchNorm
    return model, copy.deepcopy(model)


def test_one_capture_per_shape_and_buffers_see_one_update_per_step(fake):
    model, reference = model_pair()
    forward = GraphedTrainForward(model)
    shapes = [(2, 3, 32, 64), (3, 3, 32, 96), (2, 3, 32, 64), (3, 3, 32, 96), (2, 3, 32, 64)]
    for shape in shapes:
        x = torch.randn(shape)
        torch.testing.assert_close(forward(x)["ctc_logits"], reference(x)["ctc_logits"])
    assert fake.captured == [(2, 3, 32, 64), (3, 3, 32, 96)]
    assert fake.replayed == shapes
    # "global" would let the DataLoader's pin-memory thread invalidate a capture; the swap is undone after
    assert fake.capture_modes == ["thread_local"] * 2
    assert inspect.signature(torch.cuda.graph).parameters["capture_error_mode"].default == "global"
    assert "forward" not in vars(model.encoder), "the module must stay plain after a capture"
    for (name, got), want in zip(model.named_buffers(), reference.buffers()):
        assert torch.equal(got, want), f"{name}: the warm-up passes leaked into the BatchNorm statistics"


def test_shapes_beyond_the_limit_eval_mode_and_no_grad_run_eagerly(fake):
    model, _ = model_pair()
    messages = []
    forward = GraphedTrainForward(model, max_shapes=1, log=messages.append)
    for width in (64, 96, 96, 64):
        forward(torch.randn(2, 3, 32, width))
    assert fake.captured == [(2, 3, 32, 64)] and fake.replayed == [(2, 3, 32, 64)] * 2
    assert sum("runs eagerly" in m for m in messages) == 1, messages  # said once per shape
    with torch.no_grad():
        forward(torch.randn(2, 3, 32, 128))
    model.eval()
    forward(torch.randn(2, 3, 32, 160))
    assert len(fake.captured) == 1 and len(fake.replayed) == 2


def test_a_model_without_encoder_and_decoder_is_refused():
    with pytest.raises(TypeError, match="encoder"):
        GraphedTrainForward(torch.nn.Linear(2, 2))
