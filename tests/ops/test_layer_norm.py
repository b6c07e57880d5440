"""LayerNorm op: its PyTorch implementation vs F.layer_norm and autograd (float64), gradcheck, opcheck,
routing (the CPU and unsupported calls stay F.layer_norm) and the encoders' LayerNorm module."""
import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

from openrec.modeling.common import LayerNorm, LayerNorm2d
from openrec.ops import layer_norm, layer_norm_backward_torch, layer_norm_kernel_applies, layer_norm_torch

SHAPES = [(1, 1), (7, 3), (4, 5, 64), (2, 3, 4, 100), (9, 384)]


def _inputs(shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype) * 3 + 1.5  # an offset mean: centring matters
    c = shape[-1]
    weight = torch.randn(c, generator=gen, dtype=dtype)
    bias = torch.randn(c, generator=gen, dtype=dtype)
    return x, weight, bias


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_f_layer_norm(shape):
    x, weight, bias = _inputs(shape)
    y, mean, rstd = layer_norm_torch(x, weight, bias, 1e-6)
    torch.testing.assert_close(y, F.layer_norm(x, shape[-1:], weight, bias, 1e-6), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mean, x.mean(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rstd, 1 / (x.var(-1, unbiased=False) + 1e-6).sqrt(), rtol=1e-12, atol=1e-12)
    assert mean.shape == shape[:-1] and mean.dtype == torch.float64


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_autograd_of_f_layer_norm(shape):
    x, weight, bias = _inputs(shape, seed=1)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    F.layer_norm(leaves[0], shape[-1:], leaves[1], leaves[2], 1e-5).backward(grad)
    _, mean, rstd = layer_norm_torch(x, weight, bias, 1e-5)
    for got, leaf in zip(layer_norm_backward_torch(grad, x, mean, rstd, weight), leaves):
        torch.testing.assert_close(got, leaf.grad, rtol=1e-10, atol=1e-10)


def test_op_gradcheck():
    x, weight, bias = (t.requires_grad_() for t in _inputs((3, 4, 6), seed=3))
    assert torch.autograd.gradcheck(lambda *a: torch.ops.openrec.layer_norm(*a, 1e-5)[0], (x, weight, bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    x, weight, bias = _inputs((5, 2, 48), dtype=dtype, seed=4)
    opcheck(torch.ops.openrec.layer_norm.default, (x.requires_grad_(), weight.requires_grad_(),
                                                   bias.requires_grad_(), 1e-5))
    _, mean, rstd = torch.ops.openrec.layer_norm(x.detach(), weight.detach(), bias.detach(), 1e-5)
    opcheck(torch.ops.openrec.layer_norm_backward.default, (torch.randn_like(x), x.detach(), mean, rstd,
                                                            weight.detach()))


def test_16bit_inputs_keep_fp32_statistics():
    x, weight, bias = _inputs((6, 32), dtype=torch.bfloat16, seed=5)
    y, mean, rstd = torch.ops.openrec.layer_norm(x, weight, bias, 1e-5)
    assert y.dtype == torch.bfloat16 and mean.dtype == rstd.dtype == torch.float32
    ref = F.layer_norm(x.double(), (32,), weight.double(), bias.double(), 1e-5)
    assert (y.double() - ref).abs().max() < 0.05  # one bf16 rounding of values of size ~3


def test_bad_weight_shape_is_named():
    x, weight, bias = _inputs((3, 8), dtype=torch.float32)
    with pytest.raises(ValueError, match="weight and bias must have shape"):
        torch.ops.openrec.layer_norm(x, weight[:4], bias, 1e-5)


def test_the_cpu_and_unsupported_calls_stay_f_layer_norm():
    x, weight, bias = _inputs((4, 16), dtype=torch.float32)
    assert not layer_norm_kernel_applies(x, (16,), weight, bias)  # CPU
    assert torch.equal(layer_norm(x, (16,), weight, bias, 1e-5), F.layer_norm(x, (16,), weight, bias, 1e-5))
    assert torch.equal(layer_norm(x, (16,), None, None, 1e-5), F.layer_norm(x, (16,), None, None, 1e-5))


@pytest.mark.parametrize("module", [LayerNorm, LayerNorm2d])
def test_module_on_the_cpu_equals_nn_layer_norm(module):
    torch.manual_seed(6)
    norm = module(24, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    ref = torch.nn.LayerNorm(24, eps=1e-6)
    ref.load_state_dict(norm.state_dict())
    x = torch.randn(2, 24, 3, 5) if module is LayerNorm2d else torch.randn(2, 7, 24)
    expected = ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if module is LayerNorm2d else ref(x)
    assert torch.equal(norm(x), expected)
