"""Training with the encoder's forward and backward replayed from CUDA graphs (``Global.cuda_graphs``).

A small recogniser's eager train step is bound by the host: a DA-Mamba encoder issues well over a
thousand small kernels per step, and the GPU waits for Python to launch them. Replaying the encoder's
forward and its backward from one CUDA graph each removes that cost. The decoder, the loss and the
optimizer stay eager, so data-dependent heads (SMTR's variable number of sub-strings, CTC's lengths)
work unchanged.

One graph pair is captured per input shape (bucketed widths and batch sizes give a handful), the first
time the shape is seen, the way ``torch.cuda.make_graphed_callables`` does it (warm-up passes on a side
stream, then the forward and the backward captured into one memory pool shared by every shape, which is
safe because a shape's backward always follows its own forward before another shape runs). Two
differences: captures run in CUDA's "thread_local" mode, so the DataLoader's pin-memory thread may go on
meanwhile, and the captured output keeps no autograd graph (see ``EncoderGraph``).
"""
from __future__ import annotations

import contextlib
import gc

import torch
import torch.nn as nn

__all__ = ["GraphedTrainForward", "EncoderGraph", "gc_paused", "cudnn_autotune_paused"]

# "global", CUDA's default, lets a CUDA call from any other thread invalidate the capture, and the
# DataLoader's pin-memory thread makes such calls: every capture entry empties the pinned host cache,
# so the next batch pins with a fresh cudaHostAlloc, which can fall inside a capture. A capture beside
# a thread that pins memory failed in "global" mode and passed in "thread_local" mode (H200,
# 2026-12-04; tests/gpu/test_train_graphs.py, scripts/capture_modes_check.py).
CAPTURE_ERROR_MODE = "thread_local"
WARMUP_PASSES = 3  # as make_graphed_callables: the same random-number draws as its captures made


@contextlib.contextmanager
def gc_paused():
    """Collect garbage now, then keep Python's cyclic collector off for the length of a capture.

    torch (2.11+) no longer collects before a capture, so a collection can start inside one, and one
    that frees an older CUDA graph held in a dead reference cycle destroys that graph mid-capture,
    which CUDA does not permit: the capture is invalidated (cudaErrorStreamCaptureInvalidated, with
    "operation not permitted when stream is capturing (function reset)"). This took down the fourth
    graphed row of bench_rec.py, whose earlier rows' graphs sit in such cycles (H200, 2026-12-04).
    """
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def cudnn_autotune_paused():
    """Keep cuDNN's benchmark search (``torch.backends.cudnn.benchmark``) off for the length of a capture.

    A convolution whose plan is not in the benchmark cache when the capture reaches it is timed there,
    and timing cannot run inside a capture: cuDNN reports "FIND was unable to find an engine" and the
    capture is invalidated. The warm-up before a capture fills the cache, but not always with the key
    the capture looks up: the first fp32 inference graph of bench_rec.py failed this way on an H100
    for both the shipped tree and the one before it (2026-12-06), at a 1x1 convolution. With the
    search off, cuDNN takes its heuristic choice, which needs no timing.
    """
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _require_cuda(model: nn.Module) -> None:
    if next(model.parameters()).device.type != "cuda":
        raise ValueError("GraphedTrainForward needs a model on a CUDA device")


class EncoderGraph:
    """One input shape's training forward and backward of ``encoder``, captured once and replayed.

    ``graph(images)`` is ``encoder(images)`` for ``loss.backward()``: the forward replays the captured
    forward, and the backward replays the captured backward and puts each parameter's gradient into its
    ``.grad`` itself, as autograd's accumulation would (``torch.autograd.grad`` with respect to the
    parameters does not see them, unless a parameter has a hook: then autograd accumulates them). The
    output and the gradients live in static buffers that the next replay overwrites, as with
    make_graphed_callables.

    Warm-up and capture run the encoder on detached aliases of its parameters (same storage, fresh
    autograd leaves, ``torch.func.functional_call``), one set per stream. A parameter's gradient
    accumulator remembers the stream it was made on, and the real parameters' accumulators belong to
    the training stream: made there by an earlier eager step or replay, they stay alive while that
    step's loss does. A capture that reached them would make the training stream wait on the capture
    stream, which invalidates the capture ("operation would make the legacy stream depend on a
    capturing blocking stream"; H100, 2026-12-07, a second shape captured while the first shape's
    loss was still referenced). With aliases, the captured backward writes into its own gradient
    buffers, and the replayed encoder's backward hands them to the real parameters on the training
    stream. The captured output is kept without its autograd graph, which holds only the aliases.
    """

    def __init__(self, encoder: nn.Module, images: torch.Tensor, pool=None):
        if encoder._forward_hooks or encoder._forward_pre_hooks or encoder._backward_hooks:
            raise ValueError("EncoderGraph: the encoder has hooks of its own, which a replay would not run")
        named = [(name, p) for name, p in encoder.named_parameters() if p.requires_grad]
        self.params = tuple(p for _, p in named)
        self.static_input = images.detach().clone()

        def aliases() -> dict:  # fresh leaves over the parameters' storage: optimizer steps show in replays
            return {name: p.detach().requires_grad_() for name, p in named}

        # Warm-up on a side stream: lazy initialisation, cuDNN and cuBLAS plans stay out of the capture.
        torch.cuda.synchronize()
        with torch.cuda.stream(torch.cuda.Stream()):
            warmup = aliases()
            for _ in range(WARMUP_PASSES):
                output = torch.func.functional_call(encoder, warmup, (self.static_input,))
                if not torch.is_tensor(output):
                    raise TypeError(f"EncoderGraph: the encoder must return one tensor, got {type(output).__name__}")
                torch.autograd.grad(output, tuple(warmup.values()), torch.zeros_like(output), allow_unused=True)
            del output, warmup
        torch.cuda.synchronize()
        captured = aliases()
        self.forward_graph, self.backward_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph, pool=pool, capture_error_mode=CAPTURE_ERROR_MODE):
            output = torch.func.functional_call(encoder, captured, (self.static_input,))
        self.static_grad_output = torch.zeros_like(output)
        with torch.cuda.graph(self.backward_graph, pool=pool, capture_error_mode=CAPTURE_ERROR_MODE):
            self.static_grads = torch.autograd.grad(output, tuple(captured.values()), self.static_grad_output,
                                                    allow_unused=True)
        self.static_output = output.detach()  # the buffer, without the captured autograd graph
        # Joins the replayed output to autograd when the backward hands out the gradients itself.
        self.anchor = torch.empty(0, device=images.device, requires_grad=True)
        # What autograd's accumulation would keep: the buffer itself, or a copy in the parameter's layout
        # (strides compared where the size is not 1, as its layout contract does).
        self.keeps_buffer = [g is None or all(a == b for a, b, n in zip(g.stride(), p.stride(), p.shape) if n > 1)
                             for p, g in zip(self.params, self.static_grads)]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # A hook on a parameter (its own or a post-accumulate one) runs only through autograd's
        # accumulation: then the parameters are the Function's inputs, as in make_graphed_callables.
        if any(p._backward_hooks or p._post_accumulate_grad_hooks for p in self.params):
            return _ReplayEncoder.apply(self, False, images, *self.params)
        return _ReplayEncoder.apply(self, True, images, self.anchor)

    def replay_forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.data_ptr() != self.static_input.data_ptr():
            self.static_input.copy_(images)
        self.forward_graph.replay()
        return self.static_output.detach()

    def replay_backward(self, grad_output: torch.Tensor) -> None:
        if grad_output.data_ptr() != self.static_grad_output.data_ptr():
            self.static_grad_output.copy_(grad_output)
        self.backward_graph.replay()

    def accumulate_into_parameters(self) -> None:
        """What autograd's AccumulateGrad does with the replayed gradients, without one autograd node per
        parameter (~7 µs of host time each; a DA-Mamba-T encoder has ~290 parameters; perf note 63):
        .grad is the gradient buffer when empty (or its copy in the parameter's layout), else the
        buffer is added to it."""
        for p, g, keep in zip(self.params, self.static_grads, self.keeps_buffer):
            if g is None:
                continue
            if p.grad is not None:
                p.grad.add_(g)
            elif keep:
                p.grad = g
            else:
                p.grad = torch.empty_like(p).copy_(g)


class _ReplayEncoder(torch.autograd.Function):
    """Autograd's view of a replayed encoder, one output. Inputs: the images, then either the graph's
    zero-size anchor (``direct``: the backward puts the gradients into .grad itself) or every parameter
    (autograd accumulates them, running the parameters' hooks)."""

    @staticmethod
    def forward(ctx, graph: EncoderGraph, direct: bool, images: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.graph, ctx.direct = graph, direct
        return graph.replay_forward(images)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        ctx.graph.replay_backward(grad_output)
        if ctx.direct:
            ctx.graph.accumulate_into_parameters()
            return None, None, None, None
        return (None, None, None, *(None if g is None else g.detach() for g in ctx.graph.static_grads))


class GraphedTrainForward:
    """``model(images, batch)`` for training, with ``model.encoder`` replayed from CUDA graphs.

    In eval mode, without grad, or beyond ``max_shapes`` distinct input shapes the encoder runs eagerly.
    A shape is captured at its ``capture_after``-th training call and runs eagerly before that: with 2,
    shapes seen once are never captured. The trainer's bucketed batches need that: each bucket ends
    its epoch with a partial batch whose size changes from epoch to epoch, and the recipe's attention
    twin (H100, 2026-12-07) captured about 20 such one-off shapes in its first two epochs, each about
    a second of capture and ~0.1 GiB of pool, and filled the 32 places by step 3700.
    Autocast must be entered with ``cache_enabled=False`` (a graph cannot keep autocast's weight cache).
    """

    def __init__(self, model: nn.Module, max_shapes: int = 32, capture_after: int = 1, log=None):
        if not (hasattr(model, "encoder") and hasattr(model, "decoder")):
            raise TypeError("GraphedTrainForward needs a recogniser with .encoder and .decoder")
        if capture_after < 1:
            raise ValueError(f"GraphedTrainForward: capture_after must be at least 1, got {capture_after}")
        _require_cuda(model)
        self.model, self.max_shapes, self.log = model, max_shapes, log or (lambda message: None)
        self.capture_after = capture_after
        self.graphs: dict[tuple, object] = {}
        self.sightings: dict[tuple, int] = {}  # training calls so far of shapes not captured
        self.eager_shapes: set[tuple] = set()
        self.eager_train_calls = 0  # training calls whose encoder ran eagerly (the trainer logs and resets it)
        self.pool = torch.cuda.graph_pool_handle()

    def __call__(self, images: torch.Tensor, batch: dict | None = None) -> dict:
        return self.model.decoder(self.encode(images), batch)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        encoder = self.model.encoder
        if not encoder.training or not torch.is_grad_enabled():
            return encoder(images)
        autocast = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        if autocast is not None and torch.is_autocast_cache_enabled():
            raise RuntimeError("GraphedTrainForward: enter autocast with cache_enabled=False")
        key = (tuple(images.shape), images.dtype, autocast)
        graphed = self.graphs.get(key)
        if graphed is None:
            if len(self.graphs) >= self.max_shapes:
                if key not in self.eager_shapes:
                    self.eager_shapes.add(key)
                    self.log(f"cuda_graphs: {self.max_shapes} shapes captured already; {key[0]} runs eagerly")
                self.eager_train_calls += 1
                return encoder(images)
            self.sightings[key] = self.sightings.get(key, 0) + 1
            if self.sightings[key] < self.capture_after:
                self.eager_train_calls += 1
                return encoder(images)
            del self.sightings[key]
            graphed = self.graphs[key] = self._capture(images)
            self.log(f"cuda_graphs: captured the encoder for input {tuple(images.shape)} "
                     f"({len(self.graphs)} shape(s); {torch.cuda.memory_reserved() / 2**30:.1f} GiB reserved on the GPU)")
        return graphed(images)

    def _capture(self, images: torch.Tensor) -> "EncoderGraph":
        encoder = self.model.encoder
        # The warm-up and capture passes run the encoder in train mode: keep their BatchNorm statistics
        # (and counters) out of the model, so training sees exactly one update per step, as eagerly.
        saved = [b.detach().clone() for b in encoder.buffers()]
        with gc_paused():
            graphed = EncoderGraph(encoder, images, self.pool)
        with torch.no_grad():
            for buffer, value in zip(encoder.buffers(), saved):
                buffer.copy_(value)
        return graphed
