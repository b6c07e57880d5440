"""ONNX export of the inference path (encoder + CTC/RCTC head; SMTR is not exported)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import export_formulation

__all__ = ["InferenceWrapper", "export_onnx"]


class InferenceWrapper(nn.Module):
    """images (B, 3, H, W) in [-1, 1] -> CTC probabilities (B, W/4, classes)."""

    def __init__(self, recognizer: nn.Module):
        super().__init__()
        self.recognizer = recognizer.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.recognizer(images)["ctc_logits"].softmax(-1)


def export_onnx(recognizer: nn.Module, path: str, opset: int = 18) -> None:
    """Dynamic batch, height (a multiple of 8, 32..64: the ratio buckets) and width (a multiple of 4).

    The DA-Mamba ops are exported through their PyTorch formulations, i.e. standard ONNX operators;
    the scan's fixed 13 doubling steps are exact up to 8192 tokens (H/8 * W/4)."""
    wrapper = InferenceWrapper(recognizer).eval()
    example = torch.randn(2, 3, 32, 128)
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height8", min=4, max=8)
    width = torch.export.Dim("width4", min=4, max=2048)
    with export_formulation(), torch.no_grad():
        torch.onnx.export(wrapper, (example,), path, input_names=["image"], output_names=["probs"],
                          dynamic_shapes={"images": {0: batch, 2: 8 * height, 3: 4 * width}}, opset_version=opset,
                          dynamo=True, external_data=False, verbose=False)
