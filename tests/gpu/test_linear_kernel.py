"""Column-sum CUDA kernel (the bias gradient of openrec.ops.linear) vs a float64 sum on fresh random
inputs; determinism; opcheck; linear() on the kernel path vs F.linear under bf16 autocast. Skipped
without a GPU."""
import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

from openrec.ops import column_sum, cuda_kernels_available, linear, linear_kernel_applies
from tests.gpu.test_kernels import _rel

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(torch.cuda.is_available() and not cuda_kernels_available(),
                                 reason="CUDA kernels not built")]
# (rows, cols): vector paths (cols a multiple of 8 / 4), the scalar path (odd cols), one row, many splits
SHAPES = [(32768, 128), (16384, 1024), (513, 24), (4099, 3), (7, 1), (1, 40), (100003, 16), (2000, 200)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_column_sum_kernel_matches_float64(shape, dtype):
    x = torch.randn(shape, device="cuda").to(dtype)
    out = column_sum(x)
    assert out.dtype == torch.float32 and out.shape == shape[1:]
    want = x.double().sum(0)
    assert (out.double() - want).abs().max().item() <= 1e-5 * (x.double().abs().sum(0).max().item() + 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_column_sum_kernel_reads_storage_not_16_byte_aligned(dtype):
    rows, cols = 3001, 64
    flat = torch.randn(rows * cols + 1, device="cuda").to(dtype)
    x = flat[1:].view(rows, cols)  # 2 or 4 bytes past an aligned start: the scalar path
    torch.testing.assert_close(column_sum(x).double(), x.double().sum(0), rtol=1e-5, atol=1e-4)


def test_column_sum_kernel_is_deterministic():
    x = torch.randn(65536, 256, device="cuda").bfloat16()
    assert torch.equal(column_sum(x), column_sum(x))


def test_column_sum_opcheck_on_cuda():
    opcheck(torch.ops.openrec.column_sum.default, (torch.randn(1000, 48, device="cuda"),))


@pytest.mark.parametrize("with_autocast", [False, True])
def test_linear_kernel_path_matches_f_linear(monkeypatch, with_autocast):
    monkeypatch.setenv("OPENREC_LINEAR", "kernel")
    x = torch.randn(64, 8, 32, 128, device="cuda", requires_grad=True)
    w = (torch.randn(512, 128, device="cuda") / 11).requires_grad_()
    b = torch.randn(512, device="cuda", requires_grad=True)
    grad = torch.randn(64, 8, 32, 512, device="cuda")
    assert linear_kernel_applies(x, w, b)
    results = []
    for fn in (linear, F.linear):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=with_autocast):
            y = fn(x, w, b)
        results.append((y,) + torch.autograd.grad(y, (x, w, b), grad.to(y.dtype)))
    tol = 1e-2 if with_autocast else 1e-5
    for got, want in zip(results[0], results[1]):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert _rel(got, want) <= tol
    # the bias gradient against float64, tighter than the autocast reference (which rounds it to bf16)
    want_b = grad.to(results[0][0].dtype).double().sum((0, 1, 2))
    assert _rel(results[0][3], want_b) <= 1e-5
