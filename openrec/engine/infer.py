"""Inference API: ``TextRecognizer(config, checkpoint).read([...])`` -> texts with confidences."""
from __future__ import annotations

import glob
import os

import torch

from ..data.transforms import DecodeError, aspect_bucket, bucket_size, decode_image, to_tensor
from ..modeling import build_model
from ..text import build_postprocess, charset_from_config
from .checkpoint import load_checkpoint
from .train_graphs import cudnn_autotune_paused, gc_paused

__all__ = ["TextRecognizer", "CudaGraphForward", "expand_inputs"]


class CudaGraphForward:
    """Replays a model's inference forward for one input shape from a CUDA graph.

    Batch-1 inference is bound by kernel-launch overhead (hundreds of small kernels); a graph replays
    them with one launch. The input is copied into a static buffer; the returned dict holds static
    output tensors that the next call overwrites (clone them to keep them).
    """

    def __init__(self, model: torch.nn.Module, shape: tuple[int, ...], amp_dtype: torch.dtype | None = None,
                 warmup: int = 3):
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError("CudaGraphForward needs a model on a CUDA device")
        self.model, self.amp_dtype = model, amp_dtype
        self.static_input = torch.zeros(shape, device=device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (cuDNN autotuning, lazy init) outside the capture
            for _ in range(warmup):
                self._forward()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # Other threads (a loader) may call CUDA meanwhile: "thread_local". No cuDNN timing in the capture.
        with gc_paused(), cudnn_autotune_paused(), torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_output = self._forward()

    def _forward(self) -> dict:
        with torch.inference_mode(), torch.autocast("cuda", dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            return self.model(self.static_input)

    def __call__(self, images: torch.Tensor) -> dict:
        self.static_input.copy_(images)
        self.graph.replay()
        return self.static_output


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, folders (every file in them, sorted: a non-image gets its own error line when read) and
    glob patterns -> a list of paths (order kept)."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(os.path.join(item, f) for f in os.listdir(item) if os.path.isfile(os.path.join(item, f)))
        elif any(c in item for c in "*?["):
            paths += sorted(glob.glob(item))
        else:
            paths.append(item)
    return paths


class TextRecognizer:
    """Loads a model from a config (and checkpoint) and reads word images on CPU or GPU."""

    def __init__(self, config: dict, checkpoint: str | None = None, device: str = "cpu", max_ratio: int = 12,
                 onnx_path: str | None = None, cuda_graphs: bool = False, amp_dtype: torch.dtype | None = None):
        self.charset = charset_from_config(config)
        self.model = build_model(config["Architecture"], self.charset)
        self.session = None
        if onnx_path:  # onnxruntime runs the exported inference path; the PyTorch model is not used
            import onnxruntime as ort
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            checkpoint = None
        if checkpoint:
            ckpt = load_checkpoint(checkpoint)
            state = ckpt.get("ema") or ckpt.get("model") or ckpt
            self.model.load_state_dict(state)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.post = build_postprocess(config["PostProcess"], self.charset)
        self.max_ratio = max_ratio
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs needs device='cuda'")
        self.cuda_graphs, self.amp_dtype = cuda_graphs, amp_dtype
        self._graphs: dict[tuple, CudaGraphForward] = {}  # one captured forward per input shape

    @classmethod
    def from_release(cls, folder: str | None = None, device: str = "cpu", **kwargs) -> "TextRecognizer":
        """A released model folder (config.yml + model.pth); default: the model shipped with the package."""
        from .release import load_release
        config, weights = load_release(folder)
        return cls(config, weights, device, **kwargs)

    def _run_model(self, images: torch.Tensor) -> dict:
        images = images.to(self.device)
        if self.cuda_graphs:
            shape = tuple(images.shape)
            if shape not in self._graphs:
                self._graphs[shape] = CudaGraphForward(self.model, shape, self.amp_dtype)
            return {k: v.float() if torch.is_tensor(v) else v for k, v in self._graphs[shape](images).items()}
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            return {k: v.float() if torch.is_tensor(v) else v for k, v in self.model(images).items()}

    def preprocess(self, data: bytes) -> torch.Tensor:
        image = decode_image(data)
        w, h = bucket_size(aspect_bucket(image.shape[1], image.shape[0], self.max_ratio))
        return to_tensor(image, w, h)

    @torch.inference_mode()  # not no_grad: the custom ops' autograd wrappers then stay out of the call
    def read_tensors(self, tensors: list[torch.Tensor]) -> list[tuple[str, float]]:
        """Images already preprocessed; same-size images are batched together. (Inference mode made
        the released model's batch-1 CPU forward 4-5% faster than no_grad, perf note 72.)"""
        results: list[tuple[str, float] | None] = [None] * len(tensors)
        by_size: dict[tuple, list[int]] = {}
        for i, t in enumerate(tensors):
            by_size.setdefault(tuple(t.shape), []).append(i)
        for idx in by_size.values():
            images = torch.stack([tensors[i] for i in idx])
            if self.session is not None:
                probs = torch.from_numpy(self.session.run(None, {"image": images.numpy()})[0])
                out = self.post({"ctc_logits": probs.log()})  # softmax(log p) = p
            else:
                out = self.post(self._run_model(images))
            for j, i in enumerate(idx):
                results[i] = (out["text"][j], float(out["conf"][j]))
        return results

    def read_files(self, paths: list[str], batch_size: int = 32):
        """Yields ``(path, text, conf, error)`` per file; a bad file gives an error and no text."""
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            tensors, ok, errors = [], [], {}
            for p in chunk:
                try:
                    with open(p, "rb") as f:
                        tensors.append(self.preprocess(f.read()))
                    ok.append(p)
                except (OSError, DecodeError) as e:
                    errors[p] = str(e) if isinstance(e, DecodeError) else f"{type(e).__name__}: {e.strerror or e}"
            results = dict(zip(ok, self.read_tensors(tensors))) if tensors else {}
            for p in chunk:
                if p in errors:
                    yield p, None, None, errors[p]
                else:
                    yield p, results[p][0], results[p][1], None
