"""tune_malloc keeps freed tensor memory in the heap: a loop that frees tensors above the mmap threshold
and allocates them again page-faults every round without it and hardly at all with it."""
import os
import platform
import subprocess
import sys

import pytest

from openrec.engine.host_memory import tune_malloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Eight 4 MiB tensors, written, then all freed. With glibc's mmap threshold fixed at its default
# 128 KiB (GLIBC_TUNABLES below), each is a fresh mmap that faults its 1024 pages in every round.
# Left to itself glibc raises the threshold after the first free, but whether a round then faults
# depends on the heap's layout (0 to 8160 faults per round in eight runs here): not a test.
LOOP = r"""
import resource, sys, torch
from openrec.engine.host_memory import tune_malloc
print("tuned", tune_malloc())
def round_trip():
    blocks = [torch.empty(1 << 20).fill_(1.0) for _ in range(8)]
    del blocks
for _ in range(3):
    round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_trip()
print("faults per round", (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's")


def run_loop(setting: str) -> tuple[str, float]:
    env = dict(os.environ, OPENREC_MALLOC_TUNING=setting, PYTHONPATH=ROOT, OMP_NUM_THREADS="1",
               GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072")
    result = subprocess.run([sys.executable, "-c", LOOP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    return lines[0], float(lines[1].split()[-1])


@glibc_only
def test_tuned_malloc_reuses_freed_tensor_memory():
    state, faults_default = run_loop("0")
    assert state == "tuned False"
    state, faults_tuned = run_loop("1")
    assert state == "tuned True"
    assert faults_default > 4000, faults_default  # ~8 x 1024 pages faulted in per round
    assert faults_tuned < 200, faults_tuned  # tune_malloc's mallopt overrides the tunable


def test_the_switch_is_checked(monkeypatch):
    monkeypatch.setenv("OPENREC_MALLOC_TUNING", "off")
    with pytest.raises(ValueError, match="OPENREC_MALLOC_TUNING"):
        tune_malloc()
    monkeypatch.setenv("OPENREC_MALLOC_TUNING", "0")
    assert tune_malloc() is False
