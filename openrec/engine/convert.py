"""Checkpoint import from OpenOCR's SVTRv2 and from the original SVTRv2Mamba fork.

``convert_state_dict(src, fmt, model)`` maps a source state_dict onto ``model`` (a Recognizer built
from one of our configs) and returns ``(state_dict, report)``; the report lists what was taken, what
stays freshly initialised and what was dropped. Shapes are checked: nothing is loaded silently.
"""
from __future__ import annotations

import re

import torch

__all__ = ["convert_state_dict", "fold_res_dwc"]


def _unwrap(ckpt) -> dict:
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model"):
            if key in ckpt and isinstance(ckpt[key], dict):
                return ckpt[key]
    return ckpt


def fold_res_dwc(weight: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
    """The fork's ResDWC convolves with ``weight + constant``; ours computes ``x + conv(x, w)``.
    ``w = weight + constant - delta`` gives the same function whatever ``constant`` holds."""
    k = weight.shape[-1]
    delta = torch.zeros_like(constant)
    delta[..., k // 2, k // 2] = 1
    return weight + (constant - delta).to(weight.dtype)


_KIND = {"Conv": "Conv", "Global": "Global", "FGlobal": "Global", "Mamba": "Mamba", "FMamba": "Mamba"}


def _openocr_blocks(src: dict) -> dict[tuple[int, int], tuple[int, str]]:
    """(stage, source index) -> (position among real blocks, kind). OpenOCR puts a parameter-free
    flatten module into the block list where FGlobal starts, so block numbering has gaps there."""
    found: dict[int, set[int]] = {}
    for name in src:
        m = re.match(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.", name)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    blocks = {}
    for stage, indices in found.items():
        for position, idx in enumerate(sorted(indices)):
            kind = "Conv" if f"encoder.stages.{stage}.blocks.{idx}.mixer.0.weight" in src else "Global"
            blocks[(stage, idx)] = (position, kind)
    return blocks


_SEED_RENAMES = [
    (r"\.norm1\.norm\.", ".norm1."),
    (r"\.out_norm\.norm\.", ".out_norm."),
    (r"\.downsample\.norm\.norm\.", ".downsample.norm."),
    (r"\.token_mixer\.A_logs$", ".token_mixer.A_log"),
    (r"\.token_mixer\.Ds$", ".token_mixer.D"),
    (r"\.token_mixer\.dt_projs_weight$", ".token_mixer.dt_proj_weight"),
    (r"\.token_mixer\.dt_projs_bias$", ".token_mixer.dt_proj_bias"),
    (r"\.da_scan\.dw_conv\.0\.", ".da_scan.dw_conv."),
    (r"\.da_scan\.dw_conv\.1\.1\.", ".da_scan.norm."),
]


def _decoder_name(name: str, target_keys: set) -> str:
    """RCTC: OpenOCR's ``w_atten_block.attn.`` is our ``w_atten_block.mixer.``; a GTC model holds the
    RCTC head under ``decoder.ctc_decoder.``."""
    name = name.replace("w_atten_block.attn.", "w_atten_block.mixer.")
    if name not in target_keys and name.startswith("decoder."):
        nested = "decoder.ctc_decoder." + name[len("decoder."):]
        if nested in target_keys:
            return nested
    return name


def _map_names(src: dict, fmt: str, model) -> dict[str, str]:
    """Source name -> our name (only for names that have a counterpart)."""
    target = set(model.state_dict())
    mixers = model.encoder.mixer_spec
    source_blocks = _openocr_blocks(src) if fmt == "openocr" else {}
    mapping = {}
    for name in src:
        new = name
        m = re.match(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.(.*)", name)
        if fmt == "openocr" and m:
            stage, idx, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            position, kind = source_blocks[(stage, idx)]
            if stage >= len(mixers) or position >= len(mixers[stage]) or _KIND[mixers[stage][position]] != kind:
                continue  # e.g. an attention block where our model has a DA-Mamba block: it starts fresh
            new = f"encoder.stages.{stage}.blocks.{position}.{rest}"
        if fmt == "seed":
            if name.endswith("conv_constant"):
                continue  # folded into the neighbouring conv weight below
            for pattern, repl in _SEED_RENAMES:
                new = re.sub(pattern, repl, new)
        mapping[name] = _decoder_name(new, target)
    return mapping


def convert_state_dict(ckpt, fmt: str, model) -> tuple[dict, dict]:
    if fmt not in ("openocr", "seed"):
        raise ValueError(f"unknown checkpoint format {fmt!r} (accepted: openocr, seed)")
    src = _unwrap(ckpt)
    own = model.state_dict()
    mapping = _map_names(src, fmt, model)
    out, taken, dropped = {}, [], []
    for name, value in src.items():
        new = mapping.get(name)
        if fmt == "seed" and name.endswith("conv_constant"):
            continue
        if fmt == "seed" and (name.endswith("pos_embed.conv.weight") or name.endswith("mlp.conv.conv.weight")):
            constant = src.get(name.replace("conv.weight", "conv_constant"))
            if constant is not None:
                value = fold_res_dwc(value, constant)
        if new is None or new not in own:
            dropped.append(name)
        elif tuple(own[new].shape) != tuple(value.shape):
            dropped.append(f"{name} (shape {tuple(value.shape)} != {tuple(own[new].shape)})")
        else:
            out[new] = value.to(own[new].dtype)
            taken.append(new)
    fresh = sorted(k for k in own if k not in out and not k.endswith("num_batches_tracked"))
    report = {"taken": sorted(taken), "fresh": fresh, "dropped": sorted(dropped)}
    for k in own:
        if k not in out:
            out[k] = own[k]
    return out, report
