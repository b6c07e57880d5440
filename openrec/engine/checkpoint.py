"""Checkpoints written atomically (temp file + fsync + rename) and loaded exactly or non-strictly."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "load_pretrained", "rng_state", "set_rng_state", "CheckpointError"]


class CheckpointError(RuntimeError):
    pass


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: str) -> None:
    """Never leaves a partial file at ``path``: on any error the previous checkpoint is intact."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}; the previous checkpoint is intact") from e
        raise


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from e


def load_pretrained(model: torch.nn.Module, path: str) -> dict:
    """Load matching weights non-strictly; returns the names that were missing, unexpected or of another shape."""
    ckpt = load_checkpoint(path)
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else ckpt
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    result = model.load_state_dict(usable, strict=False)
    return {"loaded": sorted(usable), "missing": sorted(result.missing_keys),
            "unexpected": sorted(k for k in state if k not in own), "shape_mismatch": sorted(mismatched)}
