"""``SVTRv2Mamba`` for OpenOCR configs. Add ONE line to OpenOCR's name->module map in
``openrec/modeling/encoders/__init__.py``::

    'SVTRv2Mamba': 'svtrv2mamba_ocr.encoder',

OpenOCR calls the class with its config keys plus ``in_channels``, reads ``out_channels`` and calls
``no_weight_decay()``. Honoured keys: in_channels, dims, depths, num_heads, mixer, head_dim, mlp_ratio,
sub_k (the last stage's entry is ignored, as in OpenOCR), qkv_bias, drop_rate, attn_drop_rate,
drop_path_rate, use_pos_embed, max_sz, last_stage, out_channels, last_drop, feat2d, eps, and
num_convs / kernel_sizes when uniform. Accepted only at OpenOCR's defaults (anything else is an
error): qk_scale (None), pope_bias (False), norm_layer / act (their default names). ``local_k`` is
accepted and ignored, as OpenOCR's own encoder ignores it. Any other key is an error naming it.
"""
import importlib

from . import impl

_encoders = importlib.import_module(impl.__name__ + ".modeling.encoders")
_config = importlib.import_module(impl.__name__ + ".config")
_registry = importlib.import_module(impl.__name__ + ".registry")

__all__ = ["SVTRv2Mamba"]

_DEFAULT_ONLY = {"qk_scale": (None,), "pope_bias": (False,), "norm_layer": ("nn.LayerNorm", "LayerNorm", None),
                 "act": ("nn.GELU", "GELU", None)}
_IGNORED = ("local_k",)


def _uniform(key: str, value, default: int) -> int:
    flat = [v for stage in value for v in (stage if isinstance(stage, (list, tuple)) else [stage])]
    if not flat:
        return default
    if len(set(flat)) != 1:
        raise _config.ConfigError(f"Encoder.{key}: only one value for every block is supported, got {value}")
    return int(flat[0])


class SVTRv2Mamba(_encoders.SVTRv2Mamba):
    """Our encoder, constructed from OpenOCR-style keys (translated, then checked strictly)."""

    def __init__(self, **kwargs):
        for key, allowed in _DEFAULT_ONLY.items():
            if key in kwargs and kwargs.pop(key) not in allowed:
                raise _config.ConfigError(f"Encoder.{key}: only OpenOCR's default is supported ({allowed[0]!r})")
        for key in _IGNORED:
            kwargs.pop(key, None)
        if "num_convs" in kwargs:
            kwargs["num_conv"] = _uniform("num_convs", kwargs.pop("num_convs"), 2)
        if "kernel_sizes" in kwargs:
            kwargs["kernel_size"] = _uniform("kernel_sizes", kwargs.pop("kernel_sizes"), 3)
        _registry.validate_kwargs(_encoders.SVTRv2Mamba, kwargs, "Encoder (SVTRv2Mamba)")
        super().__init__(**kwargs)
