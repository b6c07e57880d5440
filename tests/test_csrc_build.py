"""CI compiles the CUDA sources (no GPU needed): a compile error in csrc/ fails the test run.

The kernel files are torch-free, so plain nvcc compiles them for the oldest and newest targets we
ship. The binding file includes torch; it gets a C++ syntax check against the installed torch
headers (a CPU build of torch lacks one generated CUDA header, which is stubbed for this check).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openrec.engine.describe import cpu_flags

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def _cuda_home():
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return Path(home)
    nvcc = shutil.which("nvcc")
    return Path(nvcc).resolve().parents[1] if nvcc else None


CUDA_HOME = _cuda_home()
needs_toolkit = pytest.mark.skipif(CUDA_HOME is None, reason="no CUDA toolkit (nvcc) on this machine")


@needs_toolkit
@pytest.mark.parametrize("source", sorted(p.name for p in CSRC.glob("*.cu")))
def test_kernel_file_compiles_with_nvcc(source, tmp_path):
    cmd = [str(CUDA_HOME / "bin" / "nvcc"), "-O3", "--use_fast_math", "--Werror", "all-warnings",
           "-gencode", "arch=compute_75,code=sm_75", "-gencode", "arch=compute_90,code=sm_90",
           "-I", str(CSRC), "-c", str(CSRC / source), "-o", str(tmp_path / "k.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@needs_toolkit
@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_binding_file_passes_a_syntax_check(tmp_path):
    include = Path(torch.__file__).parent / "include"
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    if not (include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        stub.mkdir(parents=True)
        (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cmd = ["g++", "-std=c++20", "-Wall", "-Werror", "-fsyntax-only", "-I", str(tmp_path / "stub"), "-I", str(include),
           "-I", str(include / "torch" / "csrc" / "api" / "include"), "-I", str(CUDA_HOME / "include"),
           "-I", str(CSRC), str(CSRC / "bindings.cpp")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


def test_setup_builds_every_source_and_no_sm70():
    text = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert "7.0" not in text.split("DEFAULT_ARCHS")[1].splitlines()[0]
    assert '"-std' not in text  # no pinned C++ standard in the compile flags
    assert {p.name for p in CSRC.glob("*.cu")} >= {"das_kernels.cu", "scan_kernels.cu", "layer_norm_kernels.cu", "dwconv_kernels.cu"}


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_cpu_kernel_file_compiles(tmp_path):
    """csrc/cpu is an optional extension (a failed build falls back to PyTorch), so CI compiles it here."""
    include = Path(torch.__file__).parent / "include"
    for source in sorted((CSRC / "cpu").glob("*.cpp")):
        cmd = ["g++", "-std=c++20", "-O1", "-Wall", "-Werror", "-ffp-contract=off", "-fopenmp", "-fPIC",
               "-DTORCH_EXTENSION_NAME=_C_cpu", "-I", str(include), "-I", str(include / "torch" / "csrc" / "api" / "include"),
               "-c", str(source), "-o", str(tmp_path / "k.o")]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-4000:]


def test_setup_builds_the_cpu_extension_from_its_own_folder():
    text = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    assert '"openrec._C_cpu"' in text and '"csrc", "cpu"' in text
    assert 'glob.glob(os.path.join("csrc", "*.cu"))' in text  # the CUDA extension does not take csrc/cpu


CLONE_CHECK = r'''
import os, sys
os.environ["OPENREC_CPU_KERNELS"] = "0"  # the ops' schemas without the installed extension
import torch
import openrec.ops
from openrec.ops.dwconv import dwconv3x3_torch
from openrec.ops.selective_scan import selective_scan_channels_last_torch
torch.ops.load_library(sys.argv[1])
if sys.argv[2] == "dwconv_cpu":
    for shape in [(1, 4, 1, 1), (2, 24, 1, 7), (1, 37, 5, 3), (2, 64, 3, 5), (1, 256, 4, 32)]:
        for mode in range(4):
            for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
                gen = torch.Generator().manual_seed(sum(shape) + mode)
                x, w, b = (torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in (shape, (shape[1], 1, 3, 3), shape[1:2]))
                torch.testing.assert_close(torch.ops.openrec.dwconv3x3(x, w, b, mode), dwconv3x3_torch(x, w, b, mode), rtol=tol, atol=tol)
else:  # ops_cpu: the scan's fp32 one-pass forward (scan_fused_cpu.h)
    for b, length, d in [(1, 1, 1), (2, 37, 33), (1, 256, 128)]:
        gen = torch.Generator().manual_seed(b + length + d)
        u, delta, B, C = (torch.randn(s, generator=gen) for s in ((b, length, d), (b, length, d), (b, length), (b, length)))
        A, D, bias = -torch.rand(d, generator=gen) - 0.1, torch.randn(d, generator=gen), torch.randn(d, generator=gen)
        got = torch.ops.openrec.selective_scan(u, delta * 10, A, B, C, D, bias, True)
        for g, r in zip(got, selective_scan_channels_last_torch(u, delta * 10, A, B, C, D, bias)):
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
print("ok")
'''


@pytest.mark.skipif(shutil.which("g++") is None or not os.path.exists("/proc/cpuinfo"), reason="no g++ or not Linux")
@pytest.mark.parametrize("source", ["dwconv_cpu", "ops_cpu"])
def test_each_isa_version_of_the_cpu_kernels_matches_the_formulation(tmp_path, source):
    """The shipped extension runs only the best of its clones (AVX-512, AVX2+FMA, baseline) on a given
    machine; this builds each one alone that this CPU can run and checks its results (the depthwise
    convolution; the scan's fp32 forward)."""
    include = Path(torch.__file__).parent / "include"
    targets = {"baseline": ""}
    flags = cpu_flags()
    if {"avx2", "fma"} <= flags:
        targets["avx2"] = '__attribute__((target("avx2,fma")))'
    if "avx512f" in flags:
        targets["avx512"] = '__attribute__((target("avx512f")))'
    (tmp_path / "check.py").write_text(CLONE_CHECK)
    for name, attribute in targets.items():
        lib = tmp_path / f"{source}_{name}.so"
        cmd = ["g++", "-std=c++20", "-O2", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared",
               f"-DOPENREC_CPU_CLONES={attribute}", f"-DTORCH_EXTENSION_NAME={source}_{name}", "-I", str(include),
               "-I", str(include / "torch" / "csrc" / "api" / "include"), str(CSRC / "cpu" / f"{source}.cpp"),
               "-L", str(Path(torch.__file__).parent / "lib"), "-lc10", "-ltorch", "-ltorch_cpu", "-o", str(lib)]
        built = subprocess.run(cmd, capture_output=True, text=True)
        assert built.returncode == 0, built.stderr[-4000:]
        run = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(lib), source], capture_output=True, text=True,
                             cwd=CSRC.parent, env={**os.environ, "PYTHONPATH": str(CSRC.parent)})
        assert run.returncode == 0 and run.stdout.strip() == "ok", f"{name}: {run.stderr[-4000:]}"
