"""Installs the ``openrec`` package; compiles the C++ CPU kernels (``csrc/cpu``) and the CUDA extension
(the rest of ``csrc/``) when it can.

The CPU extension ``openrec._C_cpu`` is built whenever torch is importable at build time (any build of
torch; needs a C++ compiler). It is optional: if it fails to compile, the package installs anyway and
the ops run on their PyTorch implementations. ``OPENREC_CPU=0`` skips it, ``OPENREC_CPU=1`` makes a
failure fatal.

The extension is built when a CUDA-enabled torch and a CUDA toolkit are present and ``csrc/``
holds CUDA sources. ``OPENREC_CUDA=1`` forces the build (and fails loudly without a toolkit),
``OPENREC_CUDA=0`` skips it. ``CUDA_HOME`` and ``TORCH_CUDA_ARCH_LIST`` are honoured; without the
latter we target sm_75 and up with PTX for the newest (CUDA 13 has no sm_70). No ``-std`` is pinned:
torch's own flags choose the C++ standard. Never consults ``torch.cuda.is_available()``, so build
hosts without a GPU work.
"""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"


def cuda_extensions():
    mode = os.environ.get("OPENREC_CUDA", "auto").lower()
    if mode in ("0", "false", "no", "off"):
        return [], {}
    sources = sorted(glob.glob(os.path.join("csrc", "*.cu")) + glob.glob(os.path.join("csrc", "*.cpp")))
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        torch = None
    reasons = []
    if not sources:
        reasons.append("csrc/ holds no CUDA sources")
    if torch is None:
        reasons.append("torch is not importable at build time (use --no-build-isolation)")
    elif torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is a CPU build")
    elif CUDA_HOME is None:
        reasons.append("no CUDA toolkit found (set CUDA_HOME)")
    if reasons:
        if mode in ("1", "true", "yes", "on", "force"):
            raise RuntimeError("OPENREC_CUDA=1 but the CUDA extension cannot be built: " + "; ".join(reasons))
        print("openrec: building without CUDA kernels (" + "; ".join(reasons) + ")")
        return [], {}
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    ext = CUDAExtension(
        name="openrec._C",
        sources=sources,
        include_dirs=[os.path.join(HERE, "csrc")],
        # OPENREC_NVCC_FLAGS: extra nvcc flags for experiments, e.g. "-DOPENREC_SCAN_FWD_BLOCKS=4".
        extra_compile_args={"cxx": ["-O3"],
                            "nvcc": ["-O3", "--use_fast_math", "-lineinfo"] + os.environ.get("OPENREC_NVCC_FLAGS", "").split()},
    )
    return [ext], {"build_ext": BuildExtension}


def cpu_extensions():
    mode = os.environ.get("OPENREC_CPU", "auto").lower()
    if mode in ("0", "false", "no", "off"):
        return []
    try:
        from torch.utils.cpp_extension import CppExtension
    except ImportError:
        if mode in ("1", "true", "yes", "on", "force"):
            raise RuntimeError("OPENREC_CPU=1 but torch is not importable at build time (use --no-build-isolation)")
        print("openrec: building without the C++ CPU kernels (torch is not importable at build time)")
        return []
    # -ffp-contract=off: no fused multiply-adds, so DAS rounds exactly like its PyTorch formulation.
    # -fopenmp: at::parallel_for is inlined, and its OpenMP pragma needs the flag to run in parallel.
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    return [CppExtension(name="openrec._C_cpu", sources=sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp"))),
                         depends=sorted(glob.glob(os.path.join("csrc", "cpu", "*.h"))),
                         extra_compile_args=["-O3", "-ffp-contract=off"] + openmp, extra_link_args=openmp,
                         optional=mode not in ("1", "true", "yes", "on", "force"))]


def warn_if_static_libstdcxx(path: str) -> None:
    """Says so when a built extension does not load the shared libstdc++. A compiler wrapper that links
    libstdc++ statically (the lent H100 image's CXX=/opt/gcc/bin/g++, 2026-12-06) gives the extension its
    own C++ runtime, and any C++ exception it throws (a shape error: TORCH_CHECK) then crashed the
    process with a segmentation fault instead of raising. An explicit -lstdc++ did not undo the
    wrapper's choice; building with the system g++ did."""
    if not sys.platform.startswith("linux") or not shutil.which("ldd") or not os.path.exists(path):
        return
    try:
        deps = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return
    if "libstdc++" not in deps:
        print(f"openrec: WARNING: {os.path.basename(path)} does not link the shared libstdc++ (compiler "
              f"{os.environ.get('CXX', 'c++')}); a shape error inside it may crash the process instead of "
              "raising. Rebuild with the system compiler, e.g. CC=gcc CXX=g++.")


def build_ext_class():
    """torch's BuildExtension, except that an optional extension (the CPU kernels) that fails to build
    (no compiler, a compile error) is skipped with a message: setuptools' own ``optional`` does not
    catch torch's compiler check or its ninja errors."""
    from torch.utils.cpp_extension import BuildExtension

    class BuildOptionalExtension(BuildExtension):
        def build_extensions(self):
            if not all(getattr(ext, "optional", False) for ext in self.extensions):
                return super().build_extensions()
            try:
                super().build_extensions()
            except Exception as exc:  # noqa: BLE001 - any failure: install without the extension
                self._skipped(self.extensions, exc)

        def build_extension(self, ext):
            if not getattr(ext, "optional", False):
                super().build_extension(ext)
            else:
                try:
                    super().build_extension(ext)
                except Exception as exc:  # noqa: BLE001
                    self._skipped([ext], exc)
                    return
            warn_if_static_libstdcxx(self.get_ext_fullpath(ext.name))

        def _skipped(self, extensions, exc):
            for ext in extensions:
                print(f"openrec: {ext.name} was not built ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                      "the ops run on their PyTorch implementations on CPU")
            self.extensions = [e for e in self.extensions if e not in extensions]

        def get_outputs(self):
            return [self.get_ext_fullpath(e.name) for e in self.extensions
                    if os.path.exists(self.get_ext_fullpath(e.name))]

    return BuildOptionalExtension


ext_modules, cmdclass = cuda_extensions()
cpu_modules = cpu_extensions()
ext_modules = ext_modules + cpu_modules
if ext_modules:
    cmdclass = {"build_ext": build_ext_class()}

setup(
    name="openrec-svtrv2mamba",
    version="0.1.0",
    description="Scene text recognition with SVTRv2 and SVTRv2Mamba (DA-Mamba blocks) in PyTorch",
    packages=find_packages(include=["openrec", "openrec.*", "svtrv2mamba_ocr"]),
    package_data={"openrec": ["text/dicts/*.txt", "pretrained/*/*.yml", "pretrained/*/*.pth", "pretrained/*/*.md"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "PyYAML", "lmdb", "pillow", "opencv-python-headless", "tqdm", "matplotlib",
                      "wordfreq", "fonttools"],
    extras_require={"tensorboard": ["tensorboard"], "onnx": ["onnx", "onnxscript", "onnxruntime"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
