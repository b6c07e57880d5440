"""openrec.ops.linear and the column-sum op behind its bias gradient: the PyTorch implementation vs a
float64 sum, gradcheck of the autograd function, opcheck, and routing (CPU and inference stay F.linear)."""
import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

from openrec.ops import column_sum, column_sum_torch, linear, linear_kernel_applies
from openrec.ops.linear import _LinearFunction


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1000, 24), (33, 200)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_column_sum_is_the_sum_over_rows_in_float32(shape, dtype):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    out = column_sum(x)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and out.shape == shape[1:]
    torch.testing.assert_close(out.double(), x.double().sum(0), rtol=1e-5, atol=1e-5)


def test_column_sum_rejects_other_ranks():
    with pytest.raises(ValueError, match=r"openrec::column_sum: x must be \(rows, cols\)"):
        column_sum(torch.randn(2, 3, 4))


def test_column_sum_opcheck():
    opcheck(torch.ops.openrec.column_sum.default, (torch.randn(9, 5),))
    opcheck(torch.ops.openrec.column_sum.default, (torch.randn(4, 6, dtype=torch.float64),))


def test_linear_function_gradcheck():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_LinearFunction.apply, (x, w, b))


def test_linear_function_matches_f_linear_with_a_non_contiguous_input():
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(2, 6, 3, 4, generator=gen, dtype=torch.float64)
    x = base.permute(0, 2, 3, 1).requires_grad_()  # a channels-last-like view, as pointwise() passes
    w = torch.randn(5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    y = _LinearFunction.apply(x, w, b)
    got = torch.autograd.grad(y, (x, w, b), grad)
    y_ref = F.linear(x, w, b)
    want = torch.autograd.grad(y_ref, (x, w, b), grad)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_linear_stays_f_linear_on_cpu_and_without_grad():
    x, w, b = torch.randn(4, 6, requires_grad=True), torch.randn(3, 6), torch.randn(3)
    assert not linear_kernel_applies(x, w, b)
    with torch.no_grad():
        assert not linear_kernel_applies(x, w, b)
    torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), rtol=0, atol=0)
    assert column_sum_torch(torch.ones(3, 2, dtype=torch.bfloat16)).tolist() == [3.0, 3.0]
