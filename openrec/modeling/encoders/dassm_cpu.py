"""A DA-Mamba block's CPU inference forward as one flat function (the same ops, fewer Python layers).

Why: at batch 1 on the CPU a DA-Mamba block spends more time on its Python layers (eleven module
calls, the routing checks of ``pointwise``/``depthwise3x3``/``das_sample``/``selective_scan``, one
per call) than on arithmetic: with maps of 2 pixels a block still took 0.44 ms, against 0.15 ms for
an attention block (perf note 60). Where every routing decision is known once per block call
(:func:`cpu_inference_applies`), :func:`dassm_block_cpu_inference` makes the calls those layers
would make, in the same order with the same arguments, so the output is bit-identical to
``DASSMBlock.forward`` (``tests/test_cpu_flat_blocks.py`` compares them). Forward hooks on the
block's submodules would not fire here, so a block with any takes its layered forward.
``OPENREC_DASSM_CPU_FLAT=0`` turns it off (read at every call, for A/Bs). The attention block has its
own flat forward (``openrec/modeling/cpu_flat.py``), so the two families are compared alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ops.kernels import has_cpu_kernel, routing_mode
from ..cpu_flat import cpu_inference_fixed

__all__ = ["cpu_inference_applies", "dassm_block_cpu_inference"]

_NEEDED_KERNELS = ("openrec::dwconv3x3", "openrec::das_sample", "openrec::selective_scan")


def cpu_inference_applies(block, x: torch.Tensor) -> bool:
    """The block's general forward would take the C++ CPU kernels for every depthwise convolution,
    DAS and the scan, with dropout and drop-path off: an fp32 CPU map in eval mode without gradients
    (BatchNorm on its running statistics), outside autocast, export and torch.compile, with the
    kernels loaded and not routed away, and no forward hook on a submodule."""
    return (x.dtype == torch.float32 and x.dim() == 4 and block.norm2.running_mean is not None
            and cpu_inference_fixed(block, x, "OPENREC_DASSM_CPU_FLAT")
            and routing_mode("OPENREC_DWCONV", "kernel") != "torch" and all(map(has_cpu_kernel, _NEEDED_KERNELS)))


def dassm_block_cpu_inference(block, x: torch.Tensor) -> torch.Tensor:
    """``block.forward(x)`` where :func:`cpu_inference_applies`; see ``DASSMBlock``, ``DASSM``,
    ``DynamicAdaptiveScan`` and ``ConvFFN`` in ``dassm.py`` for what each line stands for."""
    from .dassm import _nhwc_view_ok, cpu_gemm_max_rows, pointwise_gemm  # a lazy import: dassm imports this module
    ops = torch.ops.openrec
    b, c, h, w = x.shape
    gemm_rows_ok = b * h * w <= cpu_gemm_max_rows()

    def pointwise(conv, t):  # dassm.pointwise on the CPU in fp32
        if gemm_rows_ok and _nhwc_view_ok(t):
            return pointwise_gemm(conv, t)
        return conv(t)

    def layer_norm(norm, t):
        return F.layer_norm(t, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    # Intermediates are dropped as soon as they are used (del), as the layered forward's frames drop
    # theirs on return: held to the end, they raised the peak and cost page faults at batch 32.
    # pos_embed (ResDWC), norm1 (LayerNorm2d)
    x = ops.dwconv3x3(x, block.pos_embed.conv.weight, block.pos_embed.conv.bias, 1)
    normed = layer_norm(block.norm1, x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    # token_mixer (DASSM): in_proj -> depthwise + SiLU -> DAS -> scan -> out_norm -> out_proj
    mixer, das = block.token_mixer, block.token_mixer.da_scan
    feats = ops.dwconv3x3(pointwise(mixer.in_proj, normed), mixer.conv2d.weight, mixer.conv2d.bias, 2)
    feats = feats.permute(0, 2, 3, 1)
    offset = ops.dwconv3x3(normed, das.dw_conv.weight, das.dw_conv.bias, 0).permute(0, 2, 3, 1)
    del normed
    offset = F.linear(F.gelu(layer_norm(das.norm, offset)), das.offset.weight, das.offset.bias)
    feats = ops.das_sample(feats if feats.stride(-1) == 1 else feats.contiguous(), offset)
    del offset
    tokens = feats.reshape(b, h * w, c)
    del feats
    x_dbl = F.linear(tokens, mixer.x_proj_weight)
    rank = mixer.dt_rank
    dts = F.linear(x_dbl[..., :rank], mixer.dt_proj_weight)
    A = -torch.exp(mixer.A_log.float())
    y, _ = ops.selective_scan(tokens, dts, A.reshape(c), x_dbl[..., rank], x_dbl[..., rank + 1], mixer.D.float(),
                              mixer.dt_proj_bias.float(), True)
    del tokens, x_dbl, dts, _
    y = layer_norm(mixer.out_norm, y).reshape(b, h, w, c).permute(0, 3, 1, 2)
    x = x + pointwise(mixer.out_proj, y)
    del y
    # norm2 (BatchNorm2d, running statistics), mlp (ConvFFN with its GELU in the depthwise call)
    bn, ffn = block.norm2, block.mlp
    z = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    z = ops.dwconv3x3(pointwise(ffn.fc1, z), ffn.conv.conv.weight, ffn.conv.conv.bias, 3)
    return x + pointwise(ffn.fc2, z)
