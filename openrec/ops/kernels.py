"""The compiled extensions: loading, availability, and the options their kernels read.

``openrec._C`` registers CUDA implementations of the ops declared in this package, ``openrec._C_cpu``
C++ CPU implementations of DAS, the scan and the depthwise convolution's forward; nothing else changes
when they are present.
``OPENREC_CUDA_KERNELS=0`` / ``OPENREC_CPU_KERNELS=0`` leave them unloaded (the PyTorch
implementations then run instead, e.g. to compare).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

__all__ = ["cuda_kernels_available", "cuda_kernels_status", "cpu_kernels_available", "cpu_kernels_status",
           "use_deterministic_kernels", "deterministic_kernels", "warn_pytorch_fallback", "kernel_routing",
           "routing_mode", "has_cpu_kernel"]

_state: dict = {"loaded": None, "reason": "", "warned": set(), "deterministic": False}
_cpu_state: dict = {"loaded": None, "reason": ""}


def _disabled(env: str) -> bool:
    return os.environ.get(env, "1").lower() in ("0", "false", "no", "off")


def _load_library(module: str) -> tuple[bool, str]:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return False, f"{module} was not built"
    try:
        torch.ops.load_library(spec.origin)
    except OSError as exc:  # e.g. built against another torch
        return False, f"{module} failed to load: {exc}"
    return True, "loaded from " + spec.origin


def _load() -> None:
    if _disabled("OPENREC_CUDA_KERNELS"):
        _state.update(loaded=False, reason="OPENREC_CUDA_KERNELS=0")
        return
    loaded, reason = _load_library("openrec._C")
    if not loaded and reason.endswith("was not built"):
        reason += " (install with a CUDA build of torch and a CUDA toolkit; see README, 'CUDA kernels')"
    _state.update(loaded=loaded, reason=reason)


def cpu_kernels_available() -> bool:
    """True when the C++ CPU kernels of DAS and the scan are registered (``openrec._C_cpu``)."""
    if _cpu_state["loaded"] is None:
        if _disabled("OPENREC_CPU_KERNELS"):
            _cpu_state.update(loaded=False, reason="OPENREC_CPU_KERNELS=0")
        else:
            loaded, reason = _load_library("openrec._C_cpu")
            if not loaded and reason.endswith("was not built"):
                reason += " (reinstall with `pip install --no-build-isolation -e .` and a C++ compiler)"
            _cpu_state.update(loaded=loaded, reason=reason)
    return bool(_cpu_state["loaded"])


def cpu_kernels_status() -> str:
    cpu_kernels_available()
    return _cpu_state["reason"]


def cuda_kernels_available() -> bool:
    """True when the CUDA kernels are registered for the openrec ops."""
    if _state["loaded"] is None:
        _load()
    return bool(_state["loaded"])


def _registered(op: str, dispatch_key: str) -> bool:
    """Whether a loaded extension registered op for the key (one built before the op did not)."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op, dispatch_key)
    except (AttributeError, RuntimeError):  # private API: assume the kernel is there
        return True


@functools.cache
def _has_cuda_kernel(op: str) -> bool:
    """The CUDA extension is loaded and has op's kernel."""
    return cuda_kernels_available() and _registered(op, "CUDA")


def env_switch(env: str, default: str = "1") -> bool:
    """An on/off switch read from the environment: "1" on, "0" off; anything else is an error that names it."""
    value = os.environ.get(env, default)
    if value not in ("0", "1"):
        raise ValueError(f"{env} must be 0 or 1, got {value!r}")
    return value == "1"


def routing_mode(env: str, default: str) -> str:
    """The value of a routing switch (auto, torch or kernel); a typo is an error that names it."""
    mode = os.environ.get(env, default)
    if mode not in ("auto", "torch", "kernel"):
        raise ValueError(f"{env} must be auto, torch or kernel, got {mode!r}")
    return mode


def kernel_routing(env: str, default: str, op: str, size: int, eager_min_size: int) -> bool:
    """The routing rule of the fused ops (LayerNorm, depthwise conv), read from the environment variable
    env (default when unset): "torch" never takes the kernel, "kernel" takes it for every call, "auto"
    inside CUDA-graph captures and for eager calls of at least eager_min_size (small eager steps are
    host-bound). Only for calls the kernel can take; False without the kernel for op."""
    mode = routing_mode(env, default)
    if mode == "torch" or not _has_cuda_kernel(op):
        return False
    return mode == "kernel" or torch.cuda.is_current_stream_capturing() or size >= eager_min_size


@functools.cache
def has_cpu_kernel(op: str) -> bool:
    """The C++ CPU extension is loaded and has op's kernel."""
    return cpu_kernels_available() and _registered(op, "CPU")


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
