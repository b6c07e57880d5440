"""The CUDA extension (``openrec._C``): loading, availability, and the options its kernels read.

The extension only registers CUDA implementations of the ops declared in this package, so nothing
else changes when it is present. ``OPENREC_CUDA_KERNELS=0`` leaves it unloaded (the PyTorch
implementations then run on CUDA tensors too, e.g. to compare).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

__all__ = ["cuda_kernels_available", "cuda_kernels_status", "use_deterministic_kernels", "deterministic_kernels",
           "warn_pytorch_fallback", "kernel_routing"]

_state: dict = {"loaded": None, "reason": "", "warned": set(), "deterministic": False}


def _load() -> None:
    if os.environ.get("OPENREC_CUDA_KERNELS", "1").lower() in ("0", "false", "no", "off"):
        _state.update(loaded=False, reason="OPENREC_CUDA_KERNELS=0")
        return
    spec = importlib.util.find_spec("openrec._C")
    if spec is None or not spec.origin:
        _state.update(loaded=False, reason="openrec._C was not built (install with a CUDA build of torch and a "
                                           "CUDA toolkit; see README, 'CUDA kernels')")
        return
    try:
        torch.ops.load_library(spec.origin)
    except OSError as exc:  # e.g. built against another torch
        _state.update(loaded=False, reason=f"openrec._C failed to load: {exc}")
        return
    _state.update(loaded=True, reason="loaded from " + spec.origin)


def cuda_kernels_available() -> bool:
    """True when the CUDA kernels are registered for the openrec ops."""
    if _state["loaded"] is None:
        _load()
    return bool(_state["loaded"])


@functools.cache
def _has_cuda_kernel(op: str) -> bool:
    """The extension is loaded and has op's kernel (an extension built before the op has not)."""
    if not cuda_kernels_available():
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
    except (AttributeError, RuntimeError):  # private API: assume the kernel is there
        return True


def kernel_routing(env: str, default: str, op: str, size: int, eager_min_size: int) -> bool:
    """The routing rule of the fused ops (LayerNorm, depthwise conv), read from the environment variable
    env (default when unset): "torch" never takes the kernel, "kernel" takes it for every call, "auto"
    inside CUDA-graph captures and for eager calls of at least eager_min_size (small eager steps are
    host-bound). Only for calls the kernel can take; False without the kernel for op."""
    mode = os.environ.get(env, default)
    if mode not in ("auto", "torch", "kernel"):
        raise ValueError(f"{env} must be auto, torch or kernel, got {mode!r}")
    if mode == "torch" or not _has_cuda_kernel(op):
        return False
    return mode == "kernel" or torch.cuda.is_current_stream_capturing() or size >= eager_min_size


def cuda_kernels_status() -> str:
    cuda_kernels_available()
    return _state["reason"]


def use_deterministic_kernels(enabled: bool = True) -> None:
    """Selects the order-independent DAS backward (no atomics) even without
    ``torch.use_deterministic_algorithms(True)``. The scan backward is always deterministic."""
    _state["deterministic"] = bool(enabled)


def deterministic_kernels() -> bool:
    return _state["deterministic"] or torch.are_deterministic_algorithms_enabled()


def warn_pytorch_fallback(op: str, *tensors: torch.Tensor) -> None:
    """Says once per op that a CUDA tensor reached the PyTorch implementation."""
    if op in _state["warned"] or not any(t.is_cuda for t in tensors):
        return
    _state["warned"].add(op)
    warnings.warn(f"openrec::{op} runs on its PyTorch implementation for CUDA tensors (slower): "
                  f"{cuda_kernels_status()}", RuntimeWarning, stacklevel=3)
