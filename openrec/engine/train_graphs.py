"""Training with the encoder's forward and backward replayed from CUDA graphs (``Global.cuda_graphs``).

A small recogniser's eager train step is bound by the host: a DA-Mamba encoder issues well over a
thousand small kernels per step, and the GPU waits for Python to launch them. Replaying the encoder's
forward and its backward from one CUDA graph each removes that cost. The decoder, the loss and the
optimizer stay eager, so data-dependent heads (SMTR's variable number of sub-strings, CTC's lengths)
work unchanged.

One graph pair is captured per input shape (bucketed widths and batch sizes give a handful), the first
time the shape is seen, through ``torch.cuda.make_graphed_callables``; all pairs share one memory pool,
which is safe because a shape's backward always follows its own forward before another shape runs.
Captures run in CUDA's "thread_local" mode, so the DataLoader's pin-memory thread may go on meanwhile.
"""
from __future__ import annotations

import contextlib
import gc
import inspect

import torch
import torch.nn as nn

__all__ = ["GraphedTrainForward", "gc_paused", "cudnn_autotune_paused"]


class _ThreadLocalCapture(torch.cuda.graph):
    """``torch.cuda.graph`` capturing in "thread_local" mode unless told otherwise."""

    def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode: str = "thread_local", **options):
        super().__init__(cuda_graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode, **options)


@contextlib.contextmanager
def thread_local_capture():
    """Make ``make_graphed_callables`` capture in CUDA's "thread_local" mode.

    Its default, "global", lets a CUDA call from any other thread invalidate the capture, and the
    DataLoader's pin-memory thread makes such calls: every ``torch.cuda.graph`` entry empties the pinned
    host cache, so the next batch pins with a fresh ``cudaHostAlloc``, which can fall inside a capture.
    A capture beside a thread that pins memory failed in "global" mode and passed in "thread_local" mode
    (H200, 2026-12-04; tests/gpu/test_train_graphs.py). Only this thread's work belongs in the graph.
    Torch releases whose ``make_graphed_callables`` take the mode get it as an argument; older ones
    (2.11-2.13) see ``torch.cuda.graph`` swapped for the length of the call, undone on exit.
    """
    if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
        yield {"capture_error_mode": "thread_local"}
        return
    original = torch.cuda.graph
    torch.cuda.graph = _ThreadLocalCapture
    try:
        yield {}
    finally:
        torch.cuda.graph = original


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


class GraphedTrainForward:
    """``model(images, batch)`` for training, with ``model.encoder`` replayed from CUDA graphs.

    In eval mode, without grad, or beyond ``max_shapes`` distinct input shapes the encoder runs eagerly.
    Autocast must be entered with ``cache_enabled=False`` (a graph cannot keep autocast's weight cache).
    """

    def __init__(self, model: nn.Module, max_shapes: int = 32, log=None):
        if not (hasattr(model, "encoder") and hasattr(model, "decoder")):
            raise TypeError("GraphedTrainForward needs a recogniser with .encoder and .decoder")
        _require_cuda(model)
        self.model, self.max_shapes, self.log = model, max_shapes, log or (lambda message: None)
        self.graphs: dict[tuple, object] = {}
        self.eager_shapes: set[tuple] = set()
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
                return encoder(images)
            graphed = self.graphs[key] = self._capture(images)
            self.log(f"cuda_graphs: captured the encoder for input {tuple(images.shape)} "
                     f"({len(self.graphs)} shape(s); {torch.cuda.memory_reserved() / 2**30:.1f} GiB reserved on the GPU)")
        return graphed(images)

    def _capture(self, images: torch.Tensor):
        encoder = self.model.encoder
        # The warm-up and capture passes run the encoder in train mode: keep their BatchNorm statistics
        # (and counters) out of the model, so training sees exactly one update per step, as eagerly.
        saved = [b.detach().clone() for b in encoder.buffers()]
        static_input = images.detach().clone()
        with thread_local_capture() as mode, gc_paused():
            torch.cuda.make_graphed_callables(encoder, (static_input,), allow_unused_input=True, pool=self.pool, **mode)
        graphed = encoder.forward  # make_graphed_callables installs the graphed forward on the module ...
        del encoder.forward        # ... which stays a plain module (eval, export, EMA copies)
        with torch.no_grad():
            for buffer, value in zip(encoder.buffers(), saved):
                buffer.copy_(value)
        return graphed
