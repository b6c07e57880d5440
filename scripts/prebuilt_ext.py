"""The compiled extensions (openrec._C, openrec._C_cpu) built ahead on this machine for the lent GPU
machines, so that a fresh one skips its ~70 s build (device time is the scarce budget there).

    python scripts/prebuilt_ext.py pack .prebuilt      # in a tree built with `setup.py build_ext --inplace`
    python3 scripts/prebuilt_ext.py install .prebuilt  # on the GPU machine: copies the .so files into openrec/
                                                       # only if its stamp matches, else exits 1 (then build)

The stamp names everything the binaries depend on: the SHA-256 of setup.py and every file under csrc/,
torch's version and git commit, the Python extension suffix, TORCH_CUDA_ARCH_LIST (9.0a on the lent
machines; 9.0 where unset, as the GPU scripts build) and OPENREC_NVCC_FLAGS. A kernel edited after packing, another torch or another
Python makes the stamps differ, and the caller builds from source: stale kernels never load silently.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import sysconfig
import tarfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ARCHIVE = "ext.tar.xz"
STAMP = "stamp.json"
EXTENSIONS = ("_C", "_C_cpu")


def sources_digest(root: str) -> str:
    """SHA-256 over setup.py and csrc/** (relative paths and contents, in sorted order)."""
    paths = ["setup.py"]
    for folder, _, files in os.walk(os.path.join(root, "csrc")):
        paths += [os.path.relpath(os.path.join(folder, f), root) for f in files]
    digest = hashlib.sha256()
    for rel in sorted(p.replace(os.sep, "/") for p in paths):
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()


def current_stamp(root: str) -> dict:
    import torch  # here, so that --help works without torch
    return {"sources": sources_digest(root), "torch": torch.__version__, "torch_git": torch.version.git_version,
            "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
            "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"),
            "nvcc_flags": os.environ.get("OPENREC_NVCC_FLAGS", "")}


def extension_files(root: str, suffix: str) -> list[str]:
    return [os.path.join(root, "openrec", name + suffix) for name in EXTENSIONS]


def pack(root: str, out_dir: str) -> str:
    """Archive the tree's built extensions with their stamp; names a missing one."""
    import torch
    if torch.version.cuda is None:
        raise SystemExit(f"prebuilt_ext: torch {torch.__version__} is not a CUDA build")
    stamp = current_stamp(root)
    files = extension_files(root, stamp["ext_suffix"])
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise SystemExit(f"prebuilt_ext: not built: {', '.join(missing)} (run setup.py build_ext --inplace first)")
    return write_archive(stamp, files, out_dir)


def write_archive(stamp: dict, files: list[str], out_dir: str) -> str:
    """out_dir/ext.tar.xz holding the stamp and the files, written atomically."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, ARCHIVE)
    with tarfile.open(path + ".tmp", "w:xz") as tar:
        data = json.dumps(stamp, indent=1).encode()
        info = tarfile.TarInfo(STAMP)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for f in files:
            tar.add(f, arcname=os.path.basename(f))
    os.replace(path + ".tmp", path)
    return path


def install(root: str, prebuilt_dir: str) -> tuple[bool, str]:
    """Copy the archived extensions into root/openrec if their stamp equals this tree's and this torch's;
    (installed, why not)."""
    path = os.path.join(prebuilt_dir, ARCHIVE)
    if not os.path.isfile(path):
        return False, f"no {path}"
    with tarfile.open(path, "r:xz") as tar:
        packed = json.load(tar.extractfile(STAMP))
        here = current_stamp(root)
        differ = sorted(k for k in set(packed) | set(here) if packed.get(k) != here.get(k))
        if differ:
            return False, "stamp differs in " + ", ".join(f"{k} ({packed.get(k)!r} vs {here.get(k)!r})"
                                                         if k != "sources" else k for k in differ)
        for target in extension_files(root, here["ext_suffix"]):
            with tar.extractfile(os.path.basename(target)) as src, open(target + ".tmp", "wb") as dst:
                dst.write(src.read())
            os.chmod(target + ".tmp", 0o755)
            os.replace(target + ".tmp", target)
    return True, ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("pack", "install", "stamp"))
    parser.add_argument("dir", nargs="?", default=".prebuilt", help="where the archive is (default .prebuilt)")
    parser.add_argument("--root", default=ROOT, help="the tree (default: this script's repository)")
    args = parser.parse_args(argv)
    if args.action == "stamp":
        print(json.dumps(current_stamp(args.root), indent=1))
        return 0
    if args.action == "pack":
        path = pack(args.root, args.dir)
        print(f"prebuilt_ext: {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
        return 0
    installed, why = install(args.root, args.dir)
    print("prebuilt_ext: installed the prebuilt extensions" if installed else f"prebuilt_ext: not used: {why}")
    return 0 if installed else 1


if __name__ == "__main__":
    sys.exit(main())
