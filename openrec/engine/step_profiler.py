"""``Global.profile_steps: [first, last]``: profile training steps first..last of the real loop.

A benchmark of the step alone (``tools/bench_train_step.py``) leaves out the loader, the pin-memory
thread, the workers' CPU load and the data's own shapes; this profiles the steps inside ``train()``,
loader wait included. It writes ``profile_steps.txt`` to the output folder: each step's wall time and
loader wait, the Python garbage collections in the window, the GPU's kernel time against the wall
time, and the top ops by self CUDA time and by self CPU time (torch.profiler).
"""
from __future__ import annotations

import gc
import os
import time

import torch

from ..config import ConfigError

__all__ = ["StepProfiler", "check_profile_steps"]

LAUNCH_EVENTS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cudaGraphLaunch")


def check_profile_steps(steps) -> tuple[int, int] | None:
    """``[first, last]`` (1-based, inclusive, first <= last) or None; anything else names the key."""
    if steps is None:
        return None
    if (not isinstance(steps, (list, tuple)) or len(steps) != 2 or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                           for s in steps)
            or not 1 <= steps[0] <= steps[1]):
        raise ConfigError(f"Global.profile_steps must be [first, last] with 1 <= first <= last, got {steps!r}")
    return int(steps[0]), int(steps[1])


class StepProfiler:
    """Call ``step_begins(n)`` before the loader is asked for step n's batch, ``data_ready()`` when it has
    it, and ``step_ends(n)`` after the optimiser step; steps outside [first, last] cost one comparison."""

    def __init__(self, steps: tuple[int, int], output_dir: str, device: torch.device, log=None):
        self.first, self.last = steps
        self.path = os.path.join(output_dir, "profile_steps.txt")
        self.cuda = device.type == "cuda"
        self.log = log or (lambda message: None)
        self.profiler = None
        self.rows: list[tuple[int, float, float]] = []  # (step, wall ms, loader wait ms)
        self.gc_ms: list[float] = []
        self._gc_start = 0.0
        self._step_start = self._data_ready = self.window_start = 0.0
        self.done = False

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_ms.append(1e3 * (time.perf_counter() - self._gc_start))

    def step_begins(self, step: int) -> None:
        if self.done or not self.first <= step <= self.last:
            return
        if self.profiler is None:
            from torch.profiler import ProfilerActivity, profile
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
            self._sync()
            self.profiler = profile(activities=activities)
            self.profiler.__enter__()
            gc.callbacks.append(self._on_gc)
            self.window_start = time.perf_counter()
        self._step_start = self._data_ready = time.perf_counter()

    def data_ready(self) -> None:
        if self.profiler is not None and not self.done:
            self._data_ready = time.perf_counter()

    def step_ends(self, step: int) -> None:
        if self.profiler is None or self.done:
            return
        now = time.perf_counter()
        self.rows.append((step, 1e3 * (now - self._step_start), 1e3 * (self._data_ready - self._step_start)))
        if step >= self.last:
            self.finish()

    def finish(self) -> None:
        """Stops profiling and writes the report (also called when training ends inside the window)."""
        if self.profiler is None or self.done:
            return
        self.done = True
        self._sync()
        wall_ms = 1e3 * (time.perf_counter() - self.window_start)
        gc.callbacks.remove(self._on_gc)
        self.profiler.__exit__(None, None, None)
        events = self.profiler.key_averages()
        n = max(len(self.rows), 1)
        launches = sum(e.count for e in events if e.key in LAUNCH_EVENTS)
        kernel_ms = 1e-3 * sum(e.self_device_time_total for e in events
                               if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
        walls = sorted(r[1] for r in self.rows)
        lines = [f"profiled steps {self.rows[0][0] if self.rows else '-'}..{self.rows[-1][0] if self.rows else '-'} "
                 f"({len(self.rows)} steps, {wall_ms:.1f} ms in all)",
                 f"per step: wall median {walls[len(walls) // 2] if walls else 0:.2f} ms, max {max(walls, default=0):.2f} ms; "
                 f"loader wait {sum(r[2] for r in self.rows) / n:.2f} ms; {launches / n:.0f} launches (a graph replay counts once)",
                 f"GPU kernel time {kernel_ms / n:.2f} ms per step ({kernel_ms / max(wall_ms, 1e-9):.0%} of the wall time)"
                 if self.cuda else "GPU: none",
                 f"garbage collections: {len(self.gc_ms)}, {sum(self.gc_ms):.1f} ms in all, longest {max(self.gc_ms, default=0):.1f} ms",
                 "", "step  wall_ms  loader_wait_ms"]
        lines += [f"{s:5d} {w:8.2f} {d:8.2f}" for s, w, d in self.rows]
        if self.cuda:
            lines += ["", events.table(sort_by="self_cuda_time_total", row_limit=30, max_name_column_width=70)]
        lines += ["", events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=70)]
        with open(self.path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self.log(" | ".join(lines[:4]) + f" -> {self.path}")

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
