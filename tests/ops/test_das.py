"""DAS op vs the definitional loops (float64), gradients, gradcheck, opcheck, identity, dtypes."""
import pytest
import torch
from torch.library import opcheck

from openrec.ops import das_sample, das_sample_backward_torch, das_sample_torch
from tests.ops.reference_loops import das_sample_loops

CASES = [  # (N, H, W, groups, group_channels, offset scale)
    (2, 3, 5, 1, 4, 0.7),
    (1, 4, 7, 3, 2, 2.5),     # offsets push samples partly outside
    (3, 2, 6, 2, 3, 9.0),     # many samples wholly outside the image
    (1, 1, 4, 4, 1, 1.3),     # H = 1
]


def _inputs(n, h, w, g, cg, scale, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, w, g * cg, generator=gen, dtype=dtype)
    offset = torch.randn(n, h, w, 2 * g, generator=gen, dtype=dtype) * scale
    return x, offset


@pytest.mark.parametrize("case", CASES)
def test_forward_and_grads_match_loops_float64(case):
    x, offset = _inputs(*case, seed=hash(case) % 1000)
    x1, o1 = x.clone().requires_grad_(), offset.clone().requires_grad_()
    x2, o2 = x.clone().requires_grad_(), offset.clone().requires_grad_()
    out = das_sample(x1, o1)
    ref = das_sample_loops(x2, o2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(o1.grad, o2.grad, rtol=1e-12, atol=1e-12)


def test_wholly_outside_gives_zero_and_zero_grads():
    x = torch.randn(1, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    offset = torch.full((1, 3, 4, 4), 50.0, dtype=torch.float64, requires_grad=True)
    out = das_sample(x, offset)
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert torch.count_nonzero(x.grad) == 0 and torch.count_nonzero(offset.grad) == 0


def test_gradcheck():
    x, offset = _inputs(2, 3, 4, 2, 3, 1.7, seed=1)
    # Keep sample points away from integer coordinates, where the bilinear weights have kinks.
    offset = offset.floor() + 0.2 + 0.6 * torch.rand_like(offset)
    assert torch.autograd.gradcheck(das_sample, (x.requires_grad_(), offset.requires_grad_()))


def test_opcheck():
    x, offset = _inputs(2, 3, 4, 2, 4, 1.5, seed=2, dtype=torch.float32)
    opcheck(torch.ops.openrec.das_sample.default, (x.requires_grad_(), offset.requires_grad_()))
    grad = torch.randn_like(x)
    opcheck(torch.ops.openrec.das_sample_backward.default, (grad, x.detach(), offset.detach(), True))


def test_zero_offset_is_exact_identity_fp32():
    x = torch.randn(2, 5, 9, 32)
    assert torch.equal(das_sample(x, torch.zeros(2, 5, 9, 4)), x)


def test_integer_offset_is_exact_shift():
    x = torch.randn(1, 4, 6, 2, dtype=torch.float64)
    offset = torch.tensor([1.0, -1.0]).expand(1, 4, 6, 2)  # sample at (h-1, w+1)
    out = das_sample(x, offset)
    torch.testing.assert_close(out[:, 1:, :-1], x[:, :-1, 1:], rtol=0, atol=0)
    assert torch.count_nonzero(out[:, 0]) == 0 and torch.count_nonzero(out[:, :, -1]) == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_use_fp32_math(dtype):
    x, offset = _inputs(2, 4, 8, 2, 8, 2.0, seed=3, dtype=torch.float32)
    ref = das_sample(x, offset)
    out = das_sample(x.to(dtype), offset)
    assert out.dtype == dtype
    ref_from_rounded = das_sample(x.to(dtype).float(), offset)
    torch.testing.assert_close(out.float(), ref_from_rounded, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    gx, go = das_sample_backward_torch(torch.ones_like(x).to(dtype), x.to(dtype), offset.to(dtype))
    assert gx.dtype == dtype and go.dtype == dtype


def test_fp32_close_to_float64():
    x, offset = _inputs(2, 4, 32, 8, 16, 3.0, seed=4)
    out32 = das_sample(x.float(), offset.float())
    torch.testing.assert_close(out32.double(), das_sample_torch(x, offset), rtol=1e-5, atol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="divisible"):
        das_sample(torch.randn(1, 2, 2, 6), torch.randn(1, 2, 2, 8))
    with pytest.raises(ValueError, match="differ"):
        das_sample(torch.randn(1, 2, 2, 4), torch.randn(1, 2, 3, 4))
