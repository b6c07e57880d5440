"""Flat CPU inference forwards of the encoder blocks: the same calls, without the module layers.

At batch 1 on the CPU a block's Python layers (module calls, routing checks, attribute look-ups) cost
about as much as its arithmetic (perf note 60). Where a block's inference forward is fixed (eval,
no gradients, outside autocast, export and torch.compile, no forward hook below the block), a flat
function makes the calls its layers would make, in the same order with the same arguments, so the
output is bit-identical. Both families get one: ``DASSMBlock`` (``encoders/dassm_cpu.py``,
``OPENREC_DASSM_CPU_FLAT``) and the attention ``Block`` (here, ``OPENREC_ATTENTION_CPU_FLAT``); each
switch is read at every call, ``0`` turns it off. ``tests/test_cpu_flat_blocks.py`` compares them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import export_formulation
from ..ops.kernels import env_switch

__all__ = ["submodule_hooks", "cpu_inference_fixed", "attention_block_cpu_inference"]


def submodule_hooks(module) -> bool:
    """Any forward (pre-)hook on a module below this one, or a global one: a flat forward calls no
    submodule, so it would skip them. A walk over the _modules dicts (~5 us; modules() takes ~15)."""
    registry = torch.nn.modules.module  # the global hooks (register_module_forward_hook)
    if getattr(registry, "_global_forward_hooks", None) or getattr(registry, "_global_forward_pre_hooks", None):
        return True
    stack = list(module._modules.values())
    while stack:
        sub = stack.pop()
        if sub is None:
            continue
        if sub._forward_hooks or sub._forward_pre_hooks:
            return True
        stack.extend(sub._modules.values())
    return False


def cpu_inference_fixed(module, x: torch.Tensor, env: str) -> bool:
    """module's forward on x is its CPU inference forward (eval, no gradients, no autocast, export or
    compile, no hook below it) and the flat version is switched on by env."""
    return (x.device.type == "cpu" and not module.training and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not export_formulation.active
            and not torch.compiler.is_compiling() and env_switch(env) and not submodule_hooks(module))


def attention_block_cpu_inference(block, x: torch.Tensor) -> torch.Tensor:
    """``Block.forward(x)`` (``common.py``: Attention, Mlp, the two LayerNorms; dropout and
    drop-path are identities in eval) where :func:`cpu_inference_fixed`. On the CPU ``linear`` and
    ``layer_norm`` of ``openrec.ops`` are F.linear and F.layer_norm."""
    attn, mlp = block.mixer, block.mlp
    b, n, c = x.shape

    def mixer(t):
        qkv = F.linear(t, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
        return F.linear(out.transpose(1, 2).reshape(b, n, c), attn.proj.weight, attn.proj.bias)

    def feed_forward(t):
        return F.linear(F.gelu(F.linear(t, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)

    def norm(layer, t):
        return F.layer_norm(t, layer.normalized_shape, layer.weight, layer.bias, layer.eps)

    if block.prenorm:
        x = x + mixer(norm(block.norm1, x))
        return x + feed_forward(norm(block.norm2, x))
    x = norm(block.norm1, x + mixer(x))
    return norm(block.norm2, x + feed_forward(x))
