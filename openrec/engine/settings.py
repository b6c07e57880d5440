"""The trainer's config sections, validated strictly (unknown keys and wrong types name the key)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import ConfigError
from ..registry import validate_kwargs
from .step_profiler import check_profile_steps

__all__ = ["GlobalSettings", "OptimizerSettings", "SchedulerSettings", "parse_settings"]


@dataclass
class GlobalSettings:
    output_dir: str = "./output/rec"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 48
    epoch_num: int = 20
    max_steps: int | None = None              # stop (and size the LR schedule) at this many steps
    max_minutes: float | None = None           # wall-clock budget: stop cleanly (evaluate, save) when spent
    character_dict_path: str | None = None
    use_space_char: bool = False
    max_text_length: int = 25
    use_amp: bool = True                       # autocast on GPU (bf16 by default)
    amp_dtype: Literal["bf16", "fp16"] = "bf16"
    cpu_amp: bool = False                      # bf16 autocast on CPU too
    grad_clip: float | None = None
    ema_decay: float | None = None             # evaluate/save EMA weights when set
    log_every: int = 10
    eval_every: int | None = None              # steps; evaluation also runs after every epoch ...
    eval_each_epoch: bool = True               # ... unless this is false (epochs of a synthetic mix are arbitrary)
    save_every: int | None = None              # steps between latest.pth writes (also after every epoch)
    checkpoints: str | None = None             # resume from this checkpoint (exactly)
    pretrained_model: str | None = None        # load weights only, non-strictly
    use_tensorboard: bool = True
    plot: bool = True
    deterministic: bool = False
    num_threads: int | None = None             # torch CPU threads
    max_bad_steps: int = 20                    # consecutive non-finite steps before stopping
    max_skip_fraction: float | None = 0.5      # stop (after saving) when more of a log window's samples were skipped
    compile: bool = False                      # torch.compile the model for training (one graph per bucket)
    cuda_graphs: bool = False                  # replay the encoder's train fwd+bwd from CUDA graphs (per shape)
    profile_steps: list[int] | None = None     # [first, last]: profile these steps of the loop (profile_steps.txt)


@dataclass
class OptimizerSettings:
    name: Literal["AdamW"] = "AdamW"
    lr: float = 0.000325
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    fused: bool | None = None                  # None: the fused implementation on CUDA, the default elsewhere


@dataclass
class SchedulerSettings:
    name: Literal["OneCycleLR", "Constant"] = "OneCycleLR"
    warmup_epoch: float | None = None          # warm-up in epochs ...
    warmup_steps: int | None = None            # ... or in steps
    div_factor: float = 25.0
    final_div_factor: float = 1e4


def _build(cls, cfg: dict | None, where: str):
    cfg = dict(cfg or {})
    validate_kwargs(cls, cfg, where)
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    return cls(**cfg)


_TOP_LEVEL = ("Global", "Architecture", "Loss", "PostProcess", "Metric", "LabelEncode", "Optimizer", "LRScheduler",
              "Train", "Eval")


def parse_settings(config: dict) -> tuple[GlobalSettings, OptimizerSettings, SchedulerSettings]:
    for key in config:
        if key not in _TOP_LEVEL:
            raise ConfigError(f"unknown top-level section {key!r} (accepted: {', '.join(_TOP_LEVEL)})")
    settings = _build(GlobalSettings, config.get("Global"), "Global")
    if settings.max_skip_fraction is not None and not 0.0 < settings.max_skip_fraction < 1.0:
        raise ConfigError(f"Global.max_skip_fraction must be in (0, 1) or null, got {settings.max_skip_fraction}")
    check_profile_steps(settings.profile_steps)
    if settings.max_steps is not None and settings.max_steps < 1:
        raise ConfigError(f"Global.max_steps must be >= 1, got {settings.max_steps}")
    return settings, _build(OptimizerSettings, config.get("Optimizer"), "Optimizer"), \
        _build(SchedulerSettings, config.get("LRScheduler"), "LRScheduler")

