"""Build a model from a config, count its parameters and run one training step and one decode; name the
CPU that benchmarks ran on."""
from __future__ import annotations

import random
import time

import torch

from ..losses import build_loss
from ..modeling import build_model
from ..text import build_label_encoder, build_postprocess, charset_from_config, collate_labels

SAMPLE_WORDS = ["openrec", "Mamba", "SVTRv2", "2026", "text", "scene", "READ", "ocr!"]


def _cpuinfo_field(name: str) -> str:
    """The first value of a /proc/cpuinfo field ("" where there is none, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, fma, avx512f ...), empty where /proc/cpuinfo is missing."""
    return set(_cpuinfo_field("flags").split())


def describe_cpu() -> str:
    """The CPU's model and widest vector ISA ("AMD EPYC, avx512f"). The lent 2-core CPU machines differ
    between sessions, and with them oneDNN's speed and the Mamba/attention ratios."""
    model, flags = _cpuinfo_field("model name") or "CPU", cpu_flags()
    isa = next((name for name in ("avx512f", "avx2") if name in flags), "")
    return f"{model}, {isa}" if isa else model


def describe_cpu_run(malloc_tuned: bool) -> str:
    """The CPU line benchmarks print: model, ISA, threads and whether tune_malloc took."""
    return f"{describe_cpu()} ({torch.get_num_threads()} threads, malloc tuned: {'yes' if malloc_tuned else 'no'})"


def sample_label_batch(label_encoder, batch_size: int) -> dict:
    """Encoded labels of ``batch_size`` words drawn from SAMPLE_WORDS, the same every call (benchmarks)."""
    words = [random.Random(i).choice(SAMPLE_WORDS) for i in range(batch_size)]
    return collate_labels(label_encoder, words, random.Random(0))


def describe_model(config: dict, batch_size: int = 2, height: int = 32, width: int = 128) -> dict:
    """Returns parameter counts, output shapes, loss and decoded texts of an untrained model."""
    charset = charset_from_config(config)
    model = build_model(config["Architecture"], charset)
    loss_fn = build_loss(config["Loss"], charset)
    label_encoder = build_label_encoder(config["LabelEncode"], charset)
    post = build_postprocess(config["PostProcess"], charset)
    words = [SAMPLE_WORDS[i % len(SAMPLE_WORDS)] for i in range(batch_size)]
    batch = collate_labels(label_encoder, words, random.Random(0))
    images = torch.randn(batch_size, 3, height, width)

    model.train()
    start = time.perf_counter()
    outputs = model(images, batch)
    losses = loss_fn(outputs, batch)
    losses["loss"].backward()
    train_s = time.perf_counter() - start
    missing_grads = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.eval()
    with torch.no_grad():
        decoded = post(model(images))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "params_total": count(model), "params_encoder": count(model.encoder), "params_decoder": count(model.decoder),
        "train_outputs": {k: tuple(v.shape) for k, v in outputs.items()},
        "losses": {k: v.item() for k, v in losses.items()},
        "train_step_s": train_s, "params_without_grad": missing_grads,
        "decoded": list(zip(decoded["text"], decoded["conf"])), "labels": words,
    }
