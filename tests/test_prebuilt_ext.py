"""scripts/prebuilt_ext.py: prebuilt extensions load only when their stamp matches the tree and torch."""
import json
import os
import tarfile

from tests.helpers import load_script

prebuilt = load_script("scripts", "prebuilt_ext.py")


def _tree(tmp_path):
    root = tmp_path / "tree"
    (root / "csrc" / "cpu").mkdir(parents=True)
    (root / "openrec").mkdir()
    (root / "setup.py").write_text("# setup\n")
    (root / "csrc" / "scan.cu").write_text("// kernel v1\n")
    (root / "csrc" / "cpu" / "ops.cpp").write_text("// cpu\n")
    return root


def _archive(root, tmp_path, stamp):
    built = tmp_path / "built"
    built.mkdir(exist_ok=True)
    files = []
    for f in prebuilt.extension_files(str(built), stamp["ext_suffix"]):
        os.makedirs(os.path.dirname(f), exist_ok=True)
        with open(f, "wb") as fh:
            fh.write(b"binary of " + os.path.basename(f).encode())
        files.append(f)
    return prebuilt.write_archive(stamp, files, str(tmp_path / "prebuilt"))


def test_a_matching_stamp_installs_the_files(tmp_path):
    root = _tree(tmp_path)
    stamp = prebuilt.current_stamp(str(root))
    path = _archive(root, tmp_path, stamp)
    with tarfile.open(path, "r:xz") as tar:
        assert json.load(tar.extractfile(prebuilt.STAMP)) == stamp
    installed, why = prebuilt.install(str(root), os.path.dirname(path))
    assert installed, why
    for name in prebuilt.EXTENSIONS:
        target = root / "openrec" / (name + stamp["ext_suffix"])
        assert target.read_bytes() == b"binary of " + target.name.encode()


def test_an_edited_kernel_or_another_torch_is_refused(tmp_path):
    root = _tree(tmp_path)
    stamp = prebuilt.current_stamp(str(root))
    path = _archive(root, tmp_path, stamp)
    (root / "csrc" / "scan.cu").write_text("// kernel v2\n")
    installed, why = prebuilt.install(str(root), os.path.dirname(path))
    assert not installed and why == "stamp differs in sources"
    assert not list((root / "openrec").iterdir())
    (root / "csrc" / "scan.cu").write_text("// kernel v1\n")
    path = _archive(root, tmp_path, dict(stamp, torch="2.11.0+cu130"))
    installed, why = prebuilt.install(str(root), os.path.dirname(path))
    assert not installed and why.startswith("stamp differs in torch ('2.11.0+cu130' vs")


def test_a_new_csrc_file_changes_the_digest(tmp_path):
    root = _tree(tmp_path)
    before = prebuilt.sources_digest(str(root))
    (root / "csrc" / "new_kernels.cu").write_text("")
    assert prebuilt.sources_digest(str(root)) != before


def test_no_archive_is_not_an_error(tmp_path):
    installed, why = prebuilt.install(str(_tree(tmp_path)), str(tmp_path / "none"))
    assert not installed and why.startswith("no ")
