"""Fused depthwise 3x3 op: its PyTorch implementation vs F.conv2d + epilogue and their autograd
(float64), gradcheck, opcheck, routing (CPU training calls stay F.conv2d) and the DA-Mamba modules using it."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.library import opcheck

from openrec.modeling.encoders.dassm import DASSM, ConvFFN, ResDWC, depthwise3x3
from openrec.ops import dwconv3x3, dwconv3x3_backward_torch, dwconv3x3_kernel_applies, dwconv3x3_torch

SHAPES = [(1, 4, 1, 1), (2, 8, 3, 5), (3, 12, 4, 9), (1, 16, 8, 17)]
EPILOGUES = {"none": 0, "residual": 1, "silu": 2, "gelu_residual": 3}


def _inputs(shape, dtype=torch.float64, seed=0, channels_last=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    c = shape[1]
    weight = torch.randn(c, 1, 3, 3, generator=gen, dtype=dtype)
    bias = torch.randn(c, generator=gen, dtype=dtype)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), weight, bias


def _unfused(x, weight, bias, epilogue):
    if epilogue == "gelu_residual":
        x, epilogue = F.gelu(x), "residual"
    z = F.conv2d(x, weight, bias, padding=1, groups=x.shape[1])
    return x + z if epilogue == "residual" else F.silu(z) if epilogue == "silu" else z


@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_conv2d_and_epilogue(shape, epilogue):
    x, weight, bias = _inputs(shape)
    y = dwconv3x3_torch(x, weight, bias, EPILOGUES[epilogue])
    torch.testing.assert_close(y, _unfused(x, weight, bias, epilogue), rtol=1e-12, atol=1e-12)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_autograd_of_conv2d_and_epilogue(shape, epilogue):
    x, weight, bias = _inputs(shape, seed=1)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    _unfused(*leaves, epilogue).backward(grad)
    got = dwconv3x3_backward_torch(grad, x, weight, bias, EPILOGUES[epilogue])
    for g, leaf in zip(got, leaves):
        torch.testing.assert_close(g, leaf.grad, rtol=1e-10, atol=1e-10)
    assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_a_known_value():
    """Centre tap 1, others 0, bias 0.5: plain gives x + 0.5, residual 2x + 0.5."""
    x = torch.arange(8.0).reshape(1, 4, 1, 2)
    weight = torch.zeros(4, 1, 3, 3)
    weight[:, 0, 1, 1] = 1.0
    bias = torch.full((4,), 0.5)
    assert torch.equal(dwconv3x3_torch(x, weight, bias, 0), x + 0.5)
    assert torch.equal(dwconv3x3_torch(x, weight, bias, 1), 2 * x + 0.5)


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_op_gradcheck(epilogue):
    x, weight, bias = (t.requires_grad_() for t in _inputs((2, 4, 3, 4), seed=3))
    assert torch.autograd.gradcheck(lambda *a: torch.ops.openrec.dwconv3x3(*a, EPILOGUES[epilogue]), (x, weight, bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_opcheck(dtype, epilogue):
    x, weight, bias = _inputs((2, 8, 3, 5), dtype=dtype, seed=4, channels_last=True)
    mode = EPILOGUES[epilogue]
    opcheck(torch.ops.openrec.dwconv3x3.default, (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(),
                                                  mode))
    opcheck(torch.ops.openrec.dwconv3x3_backward.default, (torch.randn_like(x), x.detach(), weight.detach(),
                                                           bias.detach(), mode))


def test_silu_gradient_is_rounded_to_the_input_dtype():
    """The spec rounds g = grad_y * silu'(z) to x's dtype before the convolution, as autograd would."""
    x, weight, bias = _inputs((2, 4, 3, 3), dtype=torch.bfloat16, seed=5)
    grad = torch.randn(x.shape, dtype=torch.bfloat16)
    gx, gw, gb = dwconv3x3_backward_torch(grad, x, weight, bias, 2)
    leaves = [t.float().requires_grad_() for t in (x, weight, bias)]
    z = F.conv2d(leaves[0], leaves[1], leaves[2], padding=1, groups=4)
    g = torch.autograd.grad(F.silu(z), z, grad.float())[0].to(torch.bfloat16).float()
    torch.testing.assert_close(gb, g.sum((0, 2, 3)).to(torch.bfloat16))
    assert gx.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16


def test_bad_arguments_are_named():
    x, weight, bias = _inputs((1, 8, 2, 2), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"weight \(C, 1, 3, 3\)"):
        torch.ops.openrec.dwconv3x3(x, weight[:4], bias, 0)
    with pytest.raises(ValueError, match="mode must be"):
        torch.ops.openrec.dwconv3x3(x, weight, bias, 4)
    with pytest.raises(ValueError, match="epilogue must be one of"):
        dwconv3x3(x, weight, bias, "gelu")


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_cpu_training_calls_are_exactly_the_unfused_code(epilogue):
    """Calls that want gradients stay F.conv2d + epilogue (inference calls may take the C++ CPU kernel:
    tests/ops/test_dwconv_cpu_kernel.py)."""
    x, weight, bias = _inputs((2, 8, 4, 6), dtype=torch.float32, seed=6, channels_last=True)
    weight.requires_grad_()
    assert not dwconv3x3_kernel_applies(x, weight, bias)
    assert torch.equal(dwconv3x3(x, weight, bias, epilogue), _unfused(x, weight, bias, epilogue))


def test_depthwise3x3_leaves_other_convolutions_to_the_module():
    conv5 = nn.Conv2d(8, 8, 5, 1, 2, groups=8)
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(depthwise3x3(conv5, x, "residual"), x + conv5(x))
    assert torch.equal(depthwise3x3(conv5, x, "silu"), F.silu(conv5(x)))
    assert torch.equal(depthwise3x3(conv5, x, "gelu_residual"), F.gelu(x) + conv5(F.gelu(x)))


def test_gelu_residual_rounds_gelu_to_the_input_dtype():
    """The spec convolves gelu(x) as the unfused path stores it: rounded to x's dtype (bf16 here)."""
    x, weight, bias = _inputs((2, 4, 3, 5), dtype=torch.bfloat16, seed=8)
    g = F.gelu(x)  # bf16 in, bf16 out: what the unfused path keeps between GELU and the convolution
    expected = (g.float() + F.conv2d(g.float(), weight.float(), bias.float(), padding=1, groups=4)).to(torch.bfloat16)
    assert torch.equal(dwconv3x3_torch(x, weight, bias, 3), expected)


def test_conv_ffn_with_dropout_keeps_the_unfused_path_in_training():
    """Dropout sits between the GELU and the convolution, so a training ConvFFN with p > 0 cannot fuse them."""
    torch.manual_seed(9)
    x = torch.randn(2, 8, 3, 4)
    ffn = ConvFFN(8, 16, drop=0.5).train()
    torch.manual_seed(10)
    got = ffn(x)
    torch.manual_seed(10)
    hidden = ffn.drop(ffn.act(ffn.fc1(x)))
    assert torch.equal(got, ffn.drop(ffn.fc2(hidden + ffn.conv.conv(hidden))))


def test_modules_compute_what_they_computed_before():
    """ResDWC, ConvFFN and DASSM through the op equal their unfused formulas on the CPU."""
    torch.manual_seed(7)
    x = torch.randn(2, 16, 4, 6)
    res = ResDWC(16)
    assert torch.equal(res(x), x + res.conv(x))
    ffn = ConvFFN(16, 32).eval()
    hidden = ffn.act(ffn.fc1(x))
    assert torch.equal(ffn(x), ffn.fc2(hidden + ffn.conv.conv(hidden)))
    mixer = DASSM(16, groups=1).eval()
    feats = mixer.act(mixer.conv2d(mixer.in_proj(x)))
    assert torch.equal(depthwise3x3(mixer.conv2d, mixer.in_proj(x), "silu"), feats)
