"""ONNX export: standard operators only, onnxruntime equals PyTorch (probabilities and decoded text)."""
import cv2
import numpy as np
import pytest
import torch

from openrec.engine.export import InferenceWrapper, export_onnx
from openrec.engine.infer import TextRecognizer
from openrec.modeling import build_model
from openrec.ops import linear_scan, linear_scan_fixed_steps
from openrec.text import build_charset, ctc_greedy_decode
from tests.helpers import tiny_arch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_fixed_step_scan_equals_the_doubling_scan():
    a, b = torch.rand(2, 3, 300, dtype=torch.float64), torch.randn(2, 3, 300, dtype=torch.float64)
    torch.testing.assert_close(linear_scan_fixed_steps(a, b), linear_scan(a, b), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    arch = tiny_arch("RCTC")
    model = build_model(arch, build_charset()).eval()
    for m in model.modules():  # move DAS off the identity so the sampling path is exercised
        if m.__class__.__name__ == "DynamicAdaptiveScan":
            torch.nn.init.normal_(m.offset.weight, std=0.3)
            torch.nn.init.normal_(m.offset.bias, std=1.0)
    path = str(tmp_path_factory.mktemp("onnx") / "model.onnx")
    export_onnx(model, path)
    return model, path, arch


def test_only_standard_onnx_operators(exported):
    _, path, _ = exported
    graph = onnx.load(path)
    assert {op.domain for op in graph.opset_import} <= {"", "ai.onnx"}
    assert all(node.domain in ("", "ai.onnx") for node in graph.graph.node)


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("height,width", [(32, 64), (32, 128), (32, 256), (32, 384), (64, 64), (48, 96)])
def test_onnxruntime_equals_pytorch(exported, batch, height, width):
    model, path, _ = exported
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 3, height, width)
    with torch.no_grad():
        ref = InferenceWrapper(model)(x)
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    assert got.shape == ref.shape and (got - ref).abs().max() <= 1e-4
    charset = build_charset()
    assert ctc_greedy_decode(got, charset)[0] == ctc_greedy_decode(ref, charset)[0]


def test_recognizer_reads_files_through_onnxruntime(exported, tmp_path):
    model, path, arch = exported
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"w{i}.png"), np.random.default_rng(i).integers(0, 255, (32, 80 + 40 * i, 3), np.uint8))
    config = {"Architecture": arch, "PostProcess": {"name": "CTCLabelDecode"}}
    torch_reader = TextRecognizer(config)
    torch_reader.model.load_state_dict(model.state_dict())
    onnx_reader = TextRecognizer(config, onnx_path=path)
    files = sorted(str(p) for p in tmp_path.glob("*.png"))
    a = [(p, t) for p, t, _, _ in torch_reader.read_files(files)]
    b = [(p, t) for p, t, _, _ in onnx_reader.read_files(files)]
    assert a == b
