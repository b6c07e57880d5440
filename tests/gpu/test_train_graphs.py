"""Training with the encoder replayed from CUDA graphs (Global.cuda_graphs) gives the eager step's
losses, gradients, weights and BatchNorm statistics, for several input shapes, fp32 and bf16."""
import copy
import gc
import os
import random
import subprocess
import sys
import threading

import pytest
import torch

from openrec.engine.describe import SAMPLE_WORDS
from openrec.engine.train_graphs import GraphedTrainForward
from openrec.engine.trainer import Trainer
from openrec.losses import build_loss
from openrec.modeling import build_model
from openrec.modeling.encoders.dassm import DynamicAdaptiveScan
from openrec.text import build_label_encoder, build_charset, collate_labels
from tests.helpers import LABELS, LOSSES, tiny_arch
from tests.test_trainer import history, tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def batches(head: str, charset, shapes, seed: int = 0):
    """Fresh random images and labels for each (batch, width) of shapes, on the GPU."""
    encoder = build_label_encoder(LABELS[head], charset)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, (b, w) in enumerate(shapes):
        words = [random.Random(seed * 1000 + i * 100 + j).choice(SAMPLE_WORDS) for j in range(b)]
        batch = collate_labels(encoder, words, random.Random(i))
        batch = {k: v.cuda() for k, v in batch.items() if torch.is_tensor(v)}
        batch["image"] = torch.randn(b, 3, 32, w, generator=gen).cuda()
        out.append(batch)
    return out


def run(model, loss_fn, data, amp, graphs: bool, max_shapes: int = 32):
    # SGD, not AdamW: Adam turns rounding noise in exactly-zero gradients (the key bias of attention)
    # into full-size updates, and the two runs would part for that reason alone.
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)  # stable for these 7 steps (0.01 diverges)
    forward = GraphedTrainForward(model, max_shapes=max_shapes) if graphs else model
    losses, grads = [], []
    for batch in data:
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None, cache_enabled=not graphs):
            loss = loss_fn(forward(batch["image"], batch), batch)["loss"]
        loss.backward()
        grads.append([p.grad.detach().clone() for p in model.parameters() if p.grad is not None])
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return torch.stack(losses), grads, model.state_dict()


def offsets_off_the_grid(model) -> None:
    """Start every DAS offset near half a pixel instead of exactly zero. At zero (the shipped
    initialisation) each sample sits on a pixel, where bilinear sampling's slope jumps: rounding
    noise of either sign then picks one side or the other, and the offset projection's gradient
    moves by O(1) between any two runs, eager or not (perf note 68). Half-way between pixels the
    slope is smooth, so the comparison measures the graphs, not that jump."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, DynamicAdaptiveScan):
                weight = module.offset.weight
                weight.copy_(1e-3 * torch.randn(weight.shape, generator=gen))
                module.offset.bias.fill_(0.5)


@pytest.fixture
def no_tf32():
    """fp32 means fp32 here: with TF32 convolutions (the cuDNN default) the eager run and the capture may
    pick different algorithms, whose results differ by TF32 rounding (~1e-3), not by a fault."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("head", ["RCTC", "GTC"])
@pytest.mark.parametrize("amp", [None, torch.bfloat16])
@pytest.mark.parametrize("max_shapes", [32, 1])  # 1: the second shape runs eagerly beside the graphed first
def test_graphed_encoder_trains_like_the_eager_model(head, amp, max_shapes, no_tf32, monkeypatch):
    # The same LayerNorm and depthwise-conv implementations in both runs (eager small calls would
    # route to PyTorch's, captures to the kernels): this compares graphs with eager, not kernels.
    monkeypatch.setenv("OPENREC_LAYER_NORM", "kernel")
    monkeypatch.setenv("OPENREC_DWCONV", "kernel")
    torch.manual_seed(0)
    charset = build_charset(None, False, 25)
    model = build_model(tiny_arch(head, drop_path_rate=0.0), charset).cuda()
    offsets_off_the_grid(model)
    loss_fn = build_loss(LOSSES[head], charset)
    shapes = [(6, 128), (4, 96), (6, 128), (3, 160), (4, 96), (6, 128), (3, 160)]  # shapes come back
    data = batches(head, charset, shapes, seed=int(torch.randint(0, 10**6, ())))
    eager_losses, eager_grads, eager_state = run(model, loss_fn, data, amp, graphs=False)
    graph_losses, graph_grads, graph_state = run(model, loss_fn, data, amp, graphs=True, max_shapes=max_shapes)
    tol = {"rtol": 1e-5, "atol": 1e-6} if amp is None else {"rtol": 2e-2, "atol": 2e-3}
    torch.testing.assert_close(graph_losses, eager_losses, **tol)
    for step, (ge, gg) in enumerate(zip(eager_grads, graph_grads)):
        assert len(ge) == len(gg), f"step {step}: a parameter lost its gradient"
        # To rounding, relative to each gradient's scale: the DAS backward sums grad x with fp32 atomics (its
        # default), so even two eager runs differ in the last bits, and cancellation magnifies that (~1e-4).
        # A gradient that nearly cancels (a bias feeding a norm) is all rounding, so no tensor's scale is
        # taken below 1% of the step's largest gradient. On an H200 (2026-12-04) two bf16 cases missed a
        # 0.05 factor on their own scale: 0.052 of it, and 0.12 of a bias whose gradients peaked at 1e-5.
        floor = 1e-2 * max(float(a.abs().max()) for a in ge)
        for a, b in zip(ge, gg):
            scale = max(float(a.abs().max()), floor) + 1e-12
            torch.testing.assert_close(b, a, rtol=0, atol=(1e-3 if amp is None else 1e-1) * scale)
    for name, value in eager_state.items():  # weights, BatchNorm running statistics and their step counters
        if value.is_floating_point():
            torch.testing.assert_close(graph_state[name], value, **({"rtol": 1e-4, "atol": 1e-5} if amp is None
                                                                      else {"rtol": 2e-2, "atol": 2e-3}), msg=name)
        else:
            assert torch.equal(graph_state[name], value), name


def test_eval_mode_and_no_grad_run_the_encoder_eagerly():
    charset = build_charset(None, False, 25)
    model = build_model(tiny_arch("RCTC"), charset).cuda()
    forward = GraphedTrainForward(model)
    model.eval()
    with torch.no_grad():
        out = forward(torch.randn(2, 3, 32, 64, device="cuda"))
    assert not forward.graphs and out["ctc_logits"].shape[0] == 2


@pytest.mark.parametrize("amp", [True, False])
def test_trainer_with_cuda_graphs_follows_the_eager_loss_curve(tmp_path, amp):
    curves = {}
    for graphs in (False, True):
        out = tmp_path / str(graphs)
        cfg = tiny_config(out, device="cuda", use_amp=amp, max_steps=16, save_every=None, cuda_graphs=graphs)
        cfg["Architecture"]["Encoder"]["drop_path_rate"] = 0.0  # graphs draw random numbers in another order
        trainer = Trainer(cfg)
        trainer.train()
        curves[graphs] = [r["step_loss"] for r in history(out)]
        if graphs:
            assert trainer.forward.graphs, "no shape was captured"
            assert trainer.forward.capture_after == 2  # one-off shapes (partial batches) stay eager
    assert len(curves[True]) == len(curves[False]) == 16
    torch.testing.assert_close(torch.tensor(curves[True]), torch.tensor(curves[False]),
                               rtol=1e-4 if not amp else 3e-2, atol=1e-5)


def capture_beside_a_pinning_thread(widths=(64, 96, 128, 160, 192, 224)) -> tuple[int, list]:
    """Capture the encoder for each width while another thread allocates and frees pinned host memory, as a
    DataLoader's pin-memory thread does (cudaHostAlloc, cudaFreeHost). Returns (shapes captured, the
    thread's errors)."""
    stop, errors = threading.Event(), []

    def pin():
        rng = random.Random(0)
        try:
            while not stop.is_set():
                torch.empty(rng.randrange(1 << 16, 1 << 22), dtype=torch.uint8).pin_memory()
                torch._C._host_emptyCache()  # the next pin calls cudaHostAlloc again
        except Exception as error:  # noqa: BLE001 - reported to the test
            errors.append(error)
    charset = build_charset(None, False, 25)
    model = build_model(tiny_arch("RCTC", drop_path_rate=0.0), charset).cuda().train()
    forward = GraphedTrainForward(model)
    thread = threading.Thread(target=pin, daemon=True)
    thread.start()
    try:
        for width in widths:
            forward(torch.randn(4, 3, 32, width, device="cuda"))["ctc_logits"].float().square().mean().backward()
        torch.cuda.synchronize()
    finally:
        stop.set()
        thread.join()
    return len(forward.graphs), errors


def test_capture_survives_a_pin_memory_thread():
    # In CUDA's default "global" capture mode the other thread's host allocations invalidate the capture
    # (`python scripts/capture_modes_check.py global`: failed on an H200, 2026-12-04); GraphedTrainForward
    # captures in "thread_local" mode.
    captured, errors = capture_beside_a_pinning_thread()
    assert captured == 6 and not errors, errors


@pytest.mark.parametrize("config", ["svtrv2_tiny_gtc_rctc", "svtrv2_mamba_tiny_gtc_rctc"])
def test_graphed_bf16_training_with_the_shipped_routing(config, monkeypatch):
    """Graphed bf16 training of both tiny families under the default routing (LayerNorm kernel for every
    call, depthwise kernel in captures). Under OPENREC_LAYER_NORM=auto the attention twin's capture once
    failed in cuDNN's SDPA backward (CUDNN_STATUS_INTERNAL_ERROR, H200; perf note 34, possibly the
    garbage-collection fault of note 35)."""
    from openrec.config import load_config
    from openrec.engine.describe import sample_label_batch
    from openrec.text import charset_from_config

    monkeypatch.delenv("OPENREC_LAYER_NORM", raising=False)
    monkeypatch.delenv("OPENREC_DWCONV", raising=False)
    torch.manual_seed(0)
    cfg = load_config(f"configs/rec/svtrv2/{config}.yml")
    charset = charset_from_config(cfg)
    model = build_model(cfg["Architecture"], charset).cuda().train()
    loss_fn = build_loss(cfg["Loss"], charset)
    batch = {k: v.cuda() if torch.is_tensor(v) else v
             for k, v in sample_label_batch(build_label_encoder(cfg["LabelEncode"], charset), 128).items()}
    images = torch.randn(128, 3, 32, 128, device="cuda")
    forward = GraphedTrainForward(model)
    losses = []
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = loss_fn(forward(images, batch), batch)["loss"]
        loss.backward()
        model.zero_grad(set_to_none=True)
        losses.append(float(loss))
    assert len(forward.graphs) == 1 and all(torch.isfinite(torch.tensor(losses)))



class _Cycle:
    """Holds an object in a reference cycle, so that only the cyclic collector can free it."""

    def __init__(self, payload):
        self.payload, self.me = payload, self


def test_no_collection_inside_a_capture_can_free_an_older_graph():
    # bench_rec.py leaves each row's graphed step in dead reference cycles, and torch 2.11+ does not
    # collect before a capture: a collection that started inside the fourth row's capture destroyed old
    # graphs there and invalidated it (H200, 2026-12-04). A hook inside the capture stands in for the
    # collector starting there; it can only start while the collector is on.
    charset = build_charset(None, False, 25)
    model = build_model(tiny_arch("RCTC", drop_path_rate=0.0), charset).cuda().train()
    old = GraphedTrainForward(model)
    old(torch.randn(4, 3, 32, 64, device="cuda"))["ctc_logits"].float().square().mean().backward()
    torch.cuda.synchronize()
    holder, seen = [_Cycle(old)], []
    del old

    def collector_starts_here(module, args):
        if torch.cuda.is_current_stream_capturing():
            seen.append(gc.isenabled())
            if gc.isenabled() and holder:
                holder.clear()  # the old graphs are garbage now, in a cycle ...
                gc.collect()    # ... that this collection frees, inside the capture
    # on a submodule: make_graphed_callables refuses a module with hooks of its own
    handle = next(model.encoder.children()).register_forward_pre_hook(collector_starts_here)
    try:
        new = GraphedTrainForward(model)
        new(torch.randn(4, 3, 32, 96, device="cuda"))["ctc_logits"].float().square().mean().backward()
        torch.cuda.synchronize()
    finally:
        handle.remove()
    assert seen and not any(seen), "the cyclic collector was on inside the capture"
    assert len(new.graphs) == 1


def test_inference_capture_does_not_run_a_cudnn_search(monkeypatch):
    """A convolution first met inside the capture (no warm-up here, a shape no other test uses) must not
    start cuDNN's benchmark search there: the search cannot run in a capture. Restores the flag after."""
    from openrec.engine.infer import CudaGraphForward

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    model = torch.nn.Sequential(torch.nn.Conv2d(7, 11, 3, padding=1), torch.nn.Conv2d(11, 5, 1)).cuda()
    images = torch.randn(3, 7, 13, 19, device="cuda")
    runner = CudaGraphForward(model, tuple(images.shape), warmup=0)
    assert torch.backends.cudnn.benchmark
    with torch.inference_mode():
        expected = model(images)
    torch.testing.assert_close(runner(images), expected, rtol=1e-3, atol=1e-3)  # TF32 convolutions either way


GRAPHED_STEPS_SCRIPT = r"""
import warnings
import torch
from openrec.engine.train_graphs import GraphedTrainForward
from openrec.modeling import build_model
from openrec.text import build_charset
from tests.helpers import tiny_arch

model = build_model(tiny_arch("RCTC", drop_path_rate=0.0), build_charset(None, False, 25)).cuda().train()
forward = GraphedTrainForward(model)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    for width in (64, 96, 64, 96):
        # the previous step's loss is still referenced while the next shape is captured, as in a plain loop
        loss = forward(torch.randn(4, 3, 32, width, device="cuda"))["ctc_logits"].float().square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
print("captured", len(forward.graphs))
print("stream warnings", sum("AccumulateGrad node's stream" in str(w.message) for w in seen))
"""


def test_graphed_steps_accumulate_gradients_on_the_training_stream():
    # torch warns once per process when a gradient reaches its parameter's accumulator from another stream
    # (an event record and wait per parameter and step): a fresh process. With make_graphed_callables'
    # captured outputs kept alive, the accumulators stayed on its side stream and every graphed run warned.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", GRAPHED_STEPS_SCRIPT], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "captured 2" in result.stdout and "stream warnings 0" in result.stdout, result.stdout + result.stderr[-2000:]
