"""Released models: a trained checkpoint reduced to what inference needs (fp16 weights of the
deployment model, no optimizer or training-only decoder) plus a self-contained inference config.

A release folder holds ``config.yml`` and ``model.pth``; ``TextRecognizer.from_release(folder)`` and
``tools/infer_rec.py`` (its default is the model shipped in ``openrec/pretrained``) read it.
"""
from __future__ import annotations

import copy
import os

import torch

from ..config import ConfigError, dump_config, load_config
from ..modeling import build_model
from ..text import charset_from_config
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["DEFAULT_RELEASE", "inference_config", "load_release", "release_model", "release_paths"]

DEFAULT_RELEASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained",
                               "svtrv2_mamba_tiny_real")

_GLOBAL_KEYS = ("character_dict_path", "use_space_char", "max_text_length")


def inference_config(config: dict) -> dict:
    """The parts of a training config that inference reads; a GTC decoder loses its SMTR branch."""
    arch = copy.deepcopy(config["Architecture"])
    decoder = arch.get("Decoder") or {}
    if decoder.get("name") == "GTCDecoder":
        if decoder.get("infer_gtc"):
            raise ConfigError("release: infer_gtc: true models need the SMTR branch; only CTC-path releases are supported")
        decoder["gtc_decoder"] = None
    g = config.get("Global") or {}
    if g.get("character_dict_path"):
        raise ConfigError("release: models with a custom character_dict_path are not supported (the dict file would "
                          "have to travel with the release)")
    return {"Global": {k: g[k] for k in _GLOBAL_KEYS if k in g}, "Architecture": arch,
            "PostProcess": copy.deepcopy(config["PostProcess"])}


def release_model(config: dict, checkpoint: str, out_dir: str, dtype: torch.dtype = torch.float16,
                  meta: dict | None = None) -> dict:
    """Writes ``out_dir/config.yml`` and ``out_dir/model.pth`` (weights in ``dtype``; EMA weights when
    the checkpoint has them). Returns sizes and the parameter count."""
    infer_cfg = inference_config(config)
    model = build_model(infer_cfg["Architecture"], charset_from_config(infer_cfg))
    ckpt = load_checkpoint(checkpoint)
    state = ckpt.get("ema") or ckpt.get("model") or ckpt
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(f"release: checkpoint {checkpoint} lacks {len(missing)} weights of the model, e.g. {missing[:3]}")
    weights = {k: (state[k].to(dtype) if state[k].is_floating_point() else state[k]).clone() for k in own}
    os.makedirs(out_dir, exist_ok=True)
    dump_config(infer_cfg, os.path.join(out_dir, "config.yml"))
    payload = {"model": weights, "meta": dict(meta or {}, source_step=ckpt.get("state", {}).get("global_step"),
                                              dtype=str(dtype).replace("torch.", ""))}
    save_checkpoint(payload, os.path.join(out_dir, "model.pth"))
    return {"parameters": sum(v.numel() for v in weights.values() if v.is_floating_point()),
            "bytes": os.path.getsize(os.path.join(out_dir, "model.pth")),
            "dropped": sorted({k.split(".")[0] + "." + k.split(".")[1] for k in state if k not in own and "." in k})}


def release_paths(folder: str) -> tuple[str, str]:
    """(config.yml, model.pth) of a release folder, with a clear error when one is missing."""
    cfg, weights = os.path.join(folder, "config.yml"), os.path.join(folder, "model.pth")
    for path in (cfg, weights):
        if not os.path.isfile(path):
            raise ConfigError(f"release folder {folder}: {os.path.basename(path)} not found")
    return cfg, weights


def load_release(folder: str | None = None, overrides=()) -> tuple[dict, str]:
    """(inference config with ``overrides`` applied, weights path) of a release folder; default: the
    model shipped with the package."""
    cfg, weights = release_paths(folder or DEFAULT_RELEASE)
    return load_config(cfg, overrides), weights
