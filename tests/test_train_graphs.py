"""GraphedTrainForward's bookkeeping on the CPU: one capture per input shape, the eager fallbacks, the
module left plain and BatchNorm statistics kept free of the capture passes (EncoderGraph replaced by a
fake that runs its warm-up passes and then the module eagerly). EncoderGraph itself with torch.cuda's
capture calls faked: the capture mode, and that no autograd graph outlives the capture. The real capture
is compared with the eager step on a GPU in tests/gpu/test_train_graphs.py."""
import contextlib
import copy

import pytest
import torch

from openrec.engine import train_graphs
from openrec.engine.train_graphs import EncoderGraph, GraphedTrainForward
from openrec.modeling import build_model
from tests.helpers import tiny_arch


class FakeEncoderGraph:
    """Warm-up passes in train mode (they move BatchNorm statistics, as the real ones do), then eager."""
    captured, replayed = [], []

    def __init__(self, encoder, images, pool=None):
        for _ in range(train_graphs.WARMUP_PASSES):
            encoder(images)
        self.encoder = encoder
        FakeEncoderGraph.captured.append(tuple(images.shape))

    def __call__(self, images):
        FakeEncoderGraph.replayed.append(tuple(images.shape))
        return self.encoder(images)


@pytest.fixture
def fake(monkeypatch):
    FakeEncoderGraph.captured, FakeEncoderGraph.replayed = [], []
    monkeypatch.setattr(train_graphs, "EncoderGraph", FakeEncoderGraph)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda: 0)
    monkeypatch.setattr(train_graphs, "_require_cuda", lambda model: None)
    return FakeEncoderGraph


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


def test_capture_after_leaves_shapes_seen_once_eager(fake):
    # The trainer's setting (2): one-off shapes (the partial batch at each bucket's epoch end) never use
    # a capture or one of the max_shapes places; recurring ones are captured at their second call.
    model, reference = model_pair()
    forward = GraphedTrainForward(model, max_shapes=2, capture_after=2)
    widths = [64, 96, 64, 128, 64, 96, 160, 192, 160]
    for width in widths:
        x = torch.randn(2, 3, 32, width)
        torch.testing.assert_close(forward(x)["ctc_logits"], reference(x)["ctc_logits"])
    assert fake.captured == [(2, 3, 32, 64), (2, 3, 32, 96)]  # 160's second call finds the places taken
    assert fake.replayed == [(2, 3, 32, 64), (2, 3, 32, 64), (2, 3, 32, 96)]
    assert set(forward.sightings) == {((2, 3, 32, 128), torch.float32, None)}
    assert forward.eager_shapes == {((2, 3, 32, w), torch.float32, None) for w in (160, 192)}
    assert forward.eager_train_calls == 6  # the first 64, 96 and 128, then 160, 192, 160 (what the trainer logs)
    with torch.no_grad():
        forward(torch.randn(2, 3, 32, 64))  # not a training call
    assert forward.eager_train_calls == 6
    with pytest.raises(ValueError, match="capture_after"):
        GraphedTrainForward(model, capture_after=0)


def test_a_model_without_encoder_and_decoder_is_refused():
    with pytest.raises(TypeError, match="encoder"):
        GraphedTrainForward(torch.nn.Linear(2, 2))


class FakeCuda:
    """torch.cuda's capture calls on the CPU: captures run their code once, replays do nothing."""

    def __init__(self, monkeypatch):
        self.capture_modes = []
        fake = self

        class Graph:
            def replay(self):
                pass

        @contextlib.contextmanager
        def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
            fake.capture_modes.append(capture_error_mode)
            yield

        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "Stream", lambda: None)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)


def test_encoder_graph_captures_in_thread_local_mode_and_keeps_no_autograd_graph(monkeypatch):
    # "global" would let the DataLoader's pin-memory thread invalidate a capture. A kept autograd graph
    # would hold the parameters' gradient accumulators of the capture stream: a cross-stream sync per
    # parameter in every backward after it.
    cuda = FakeCuda(monkeypatch)
    torch.manual_seed(0)
    encoder = build_model(tiny_arch("RCTC", drop_path_rate=0.0)).encoder.train()
    images = torch.randn(2, 3, 32, 64)
    graph = EncoderGraph(encoder, images)
    assert cuda.capture_modes == ["thread_local"] * 2  # forward, backward
    assert graph.static_output.grad_fn is None and not graph.static_output.requires_grad
    assert len(graph.static_grads) == len(graph.params) == sum(p.requires_grad for p in encoder.parameters())
    # the replayed output joins autograd through the parameters, and the backward hands out the captured
    # gradients (here those of the capture itself: the fake replays do nothing)
    out = graph(images)
    assert out.requires_grad and out.grad_fn is not None
    torch.testing.assert_close(out, encoder(images))
    out.backward(torch.ones_like(out))
    handed = [(p.grad, g) for p, g in zip(graph.params, graph.static_grads) if g is not None]
    assert handed and all(got is not None and torch.equal(got, want) for got, want in handed)


def test_encoder_graph_captures_against_aliases_of_the_parameters(monkeypatch):
    # The real parameters' gradient accumulators belong to the training stream (an earlier step made
    # them, and its loss may still hold them): a capture that reached them would make the training
    # stream wait on the capture stream, which invalidates the capture on a GPU. Warm-up and capture
    # differentiate with respect to fresh leaves over the same storage instead, one set per stream.
    FakeCuda(monkeypatch)
    torch.manual_seed(0)
    encoder = build_model(tiny_arch("RCTC", drop_path_rate=0.0)).encoder.train()
    images = torch.randn(2, 3, 32, 64)
    earlier_loss = encoder(images).square().mean()  # an earlier eager step's graph, still referenced
    differentiated = []
    original_grad = torch.autograd.grad

    def recording_grad(outputs, inputs, *args, **kwargs):
        differentiated.append(tuple(inputs))
        return original_grad(outputs, inputs, *args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", recording_grad)
    graph = EncoderGraph(encoder, images)
    assert len(differentiated) == train_graphs.WARMUP_PASSES + 1
    real = {id(p) for p in graph.params}
    warmup, captured = differentiated[0], differentiated[-1]
    for leaves in (warmup, captured):
        assert len(leaves) == len(graph.params) and not real & {id(t) for t in leaves}
        assert all(t.is_leaf and t.requires_grad and t.data_ptr() == p.data_ptr() for t, p in zip(leaves, graph.params))
    assert all(a is not b for a, b in zip(warmup, captured))  # a fresh set for the capture stream
    assert all(p.grad is None for p in graph.params)
    earlier_loss.backward()  # the earlier step still completes into the real parameters
    assert all(p.grad is not None for p in graph.params if p.requires_grad and p.grad_fn is None)


def test_encoder_graph_refuses_hooks_and_outputs_that_are_not_one_tensor(monkeypatch):
    FakeCuda(monkeypatch)
    encoder = build_model(tiny_arch("RCTC")).encoder.train()
    handle = encoder.register_forward_hook(lambda module, args, out: None)
    with pytest.raises(ValueError, match="hooks"):
        EncoderGraph(encoder, torch.randn(1, 3, 32, 64))
    handle.remove()

    class TwoOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.w, x

    with pytest.raises(TypeError, match="one tensor"):
        EncoderGraph(TwoOutputs(), torch.randn(2))


def faked_graph(monkeypatch):
    """A tiny RCTC encoder's EncoderGraph with torch.cuda's capture calls faked, and its images."""
    FakeCuda(monkeypatch)
    torch.manual_seed(0)
    encoder = build_model(tiny_arch("RCTC", drop_path_rate=0.0)).encoder.train()
    images = torch.randn(2, 3, 32, 64)
    return EncoderGraph(encoder, images), images


def test_replayed_backward_fills_grad_without_an_autograd_node_per_parameter(monkeypatch):
    # Autograd's accumulation costs ~7 us of host time per parameter (~290 in Mamba-T): the backward
    # fills .grad itself, as AccumulateGrad would (the buffer when .grad is empty, a copy in the
    # parameter's layout where the buffer's differs, added to a held gradient).
    graph, images = faked_graph(monkeypatch)
    graph.keeps_buffer[0] = False  # as for a weight whose gradient comes channels-last
    out = graph(images)
    assert len(out.grad_fn.next_functions) == 2  # the images (no grad) and the anchor, not ~100 parameters
    out.backward(torch.ones_like(out))
    handed = [(p, g, keep) for p, g, keep in zip(graph.params, graph.static_grads, graph.keeps_buffer) if g is not None]
    assert len(handed) > 10 and not handed[0][2]
    for p, g, keep in handed:
        assert (p.grad is g) == keep and torch.equal(p.grad, g)
        assert keep or p.grad.stride() == p.stride()
    held = {id(p): p.grad.clone() for p, _, _ in handed}
    for p, _, _ in handed:
        p.grad = held[id(p)].clone()  # gradients the caller kept from an earlier step
    graph(images).backward(torch.ones_like(out))
    assert all(torch.equal(p.grad, held[id(p)] + g) for p, g, _ in handed)


def test_a_parameter_hook_takes_autograd_accumulation_and_runs(monkeypatch):
    graph, images = faked_graph(monkeypatch)
    seen = []
    graph.params[1].register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.clone()))
    graph.params[2].register_hook(lambda grad: grad * 2)
    out = graph(images)
    assert len(out.grad_fn.next_functions) == 1 + len(graph.params)  # the images, then the parameters
    out.backward(torch.ones_like(out))
    assert len(seen) == 1 and torch.equal(seen[0], graph.static_grads[1])
    assert torch.equal(graph.params[2].grad, 2 * graph.static_grads[2])
