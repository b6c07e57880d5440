"""The C++ CPU kernels of DAS and the scan (csrc/cpu, ``openrec._C_cpu``) against the PyTorch
implementations (the specification) and the definitional loops.

The op tests in test_das.py / test_selective_scan.py run through the ops, so they exercise the C++
kernels when these are built; here the kernels are compared with the PyTorch implementations
directly, and those implementations with the loops, so both stay tested whichever is installed.
"""
import pytest
import torch

from openrec.ops import cpu_kernels_available, cpu_kernels_status, das_sample_torch
from openrec.ops.das import das_sample_backward_torch
from openrec.ops.selective_scan import (selective_scan_channels_last_backward_torch,
                                        selective_scan_channels_last_torch)
from tests.ops.reference_loops import das_sample_loops, selective_scan_loops

needs_cpu_kernels = pytest.mark.skipif(not cpu_kernels_available(), reason=f"no C++ CPU kernels: {cpu_kernels_status()}")
OPS = ("das_sample", "das_sample_backward", "selective_scan", "selective_scan_backward")


def _das_inputs(n, h, w, groups, cg, seed, dtype=torch.float32, spread=3.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, w, groups * cg, generator=gen, dtype=torch.float64)
    offset = torch.randn(n, h, w, 2 * groups, generator=gen, dtype=torch.float64) * spread  # many samples fall outside
    return x.to(dtype), offset.to(dtype)


def _scan_inputs(b, length, d, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    u, delta = r(b, length, d), r(b, length, d) - 1.0
    A = -torch.exp(r(d) * 0.5)
    B, C, D, bias = r(b, length), r(b, length), r(d), r(d)
    return [t.to(dtype) for t in (u, delta, A, B, C, D, bias)]


def test_pytorch_implementations_match_the_loops():
    """Independent of the build: the specification itself against the definitional loops (float64)."""
    x, offset = _das_inputs(2, 5, 7, 3, 4, seed=1, dtype=torch.float64)
    torch.testing.assert_close(das_sample_torch(x, offset), das_sample_loops(x, offset), rtol=1e-12, atol=1e-12)
    u, delta, A, B, C, D, bias = _scan_inputs(2, 37, 5, seed=2, dtype=torch.float64)
    y, _ = selective_scan_channels_last_torch(u, delta, A, B, C, D, bias)
    ref = selective_scan_loops(u.transpose(1, 2), delta.transpose(1, 2), A.unsqueeze(-1), B.unsqueeze(1),
                               C.unsqueeze(1), D, bias)
    torch.testing.assert_close(y, ref.transpose(1, 2), rtol=1e-11, atol=1e-11)


@needs_cpu_kernels
@pytest.mark.parametrize("op", OPS)
def test_kernels_are_registered_for_cpu(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"openrec::{op}", "CPU")


@needs_cpu_kernels
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 5, 7, 3, 4), (3, 4, 33, 8, 16), (1, 8, 32, 4, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_das_forward_is_bit_identical_to_pytorch(shape, dtype):
    x, offset = _das_inputs(*shape, seed=sum(shape), dtype=dtype)
    out = torch.ops.openrec.das_sample(x, offset)
    assert out.dtype == dtype and out.is_contiguous()
    assert torch.equal(out, das_sample_torch(x, offset))


@needs_cpu_kernels
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_das_backward_matches_pytorch(dtype, tol):
    x, offset = _das_inputs(3, 6, 9, 4, 8, seed=7, dtype=dtype)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64).to(dtype)
    gx, goff = torch.ops.openrec.das_sample_backward(grad, x, offset, False)
    rx, roff = das_sample_backward_torch(grad, x, offset)
    torch.testing.assert_close(gx, rx, rtol=tol, atol=tol)
    torch.testing.assert_close(goff, roff, rtol=tol, atol=tol)


@needs_cpu_kernels
def test_das_strided_input_and_far_or_nan_offsets():
    x, offset = _das_inputs(2, 4, 6, 2, 4, seed=3)
    strided = x.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)  # an NCHW map viewed as NHWC
    assert not strided.is_contiguous()
    assert torch.equal(torch.ops.openrec.das_sample(strided, offset), das_sample_torch(x, offset))
    far = offset.clone()
    far[0, 1, 2, 0] = 1e30  # the sample lies far outside: zeros, as in the PyTorch formulation
    far[1, 0, 0, 3] = float("nan")
    out = torch.ops.openrec.das_sample(x, far)
    assert torch.equal(out[0, 1, 2, :4], torch.zeros(4))
    assert torch.isnan(out[1, 0, 0, 4:]).all() and not torch.isnan(out[1, 0, 0, :4]).any()
    mask = torch.ones_like(out, dtype=torch.bool)
    mask[1, 0, 0] = False
    assert torch.equal(out[mask], das_sample_torch(x, far)[mask])


@needs_cpu_kernels
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 37, 5), (3, 256, 128), (1, 4096, 16)])
@pytest.mark.parametrize("softplus", [True, False])
def test_scan_forward_matches_pytorch(shape, softplus):
    args = _scan_inputs(*shape, seed=sum(shape))
    if not softplus:
        args[1], args[6] = args[1].abs(), args[6].abs()
    y, states = torch.ops.openrec.selective_scan(*args, softplus)
    ry, rstates = selective_scan_channels_last_torch(*args, delta_softplus=softplus)
    assert y.dtype == torch.float32 and states.dtype == torch.float32 and y.is_contiguous()
    torch.testing.assert_close(y, ry, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states, rstates, rtol=1e-5, atol=1e-5)
    y64, s64 = torch.ops.openrec.selective_scan(*[t.double() for t in args], softplus)
    ry64, rs64 = selective_scan_channels_last_torch(*[t.double() for t in args], delta_softplus=softplus)
    torch.testing.assert_close(y64, ry64, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s64, rs64, rtol=1e-12, atol=1e-12)


@needs_cpu_kernels
def test_scan_fp32_one_pass_over_wide_ranges_non_finite_values_and_strides():
    """The fp32 forward evaluates softplus and exp itself (csrc/cpu/scan_fused_cpu.h): z across the
    softplus threshold, exp underflow and overflow, NaN and inf, channel tails (33 = 16 + 16 + 1) and
    strided inputs, against the sequential definition in fp32 (the doubling formulation orders
    non-finite products differently)."""
    u, delta, A, B, C, D, bias = _scan_inputs(2, 40, 33, seed=21)
    delta = delta * 25.0  # z from about -100 to 75
    delta[0, 5, 3], delta[1, 7, 20], u[1, 9, 32], delta[0, 11, 17] = float("nan"), float("inf"), float("-inf"), -float("inf")
    A = A.clone()
    A[0] = 3.0  # a growing channel: exp(dt A) overflows to inf once dt is large
    u_strided = u.transpose(1, 2).contiguous().transpose(1, 2)  # (b, L, d) with stride 1 along L
    y, _ = torch.ops.openrec.selective_scan(u_strided, delta, A, B, C, D, bias, True)
    ref = selective_scan_loops(u.transpose(1, 2), delta.transpose(1, 2), A[:, None], B[:, None], C[:, None], D, bias)
    torch.testing.assert_close(y, ref.transpose(1, 2), rtol=1e-5, atol=1e-5, equal_nan=True)
    assert y[0, 5:, 3].isnan().all() and y[1, 7:, 20].isinf().any() and y[0, :, 4].isfinite().all()


@needs_cpu_kernels
def test_scan_bf16_inputs():
    args = _scan_inputs(2, 64, 16, seed=4)
    low = [t.bfloat16() if i in (0, 1, 3, 4) else t for i, t in enumerate(args)]
    y, _ = torch.ops.openrec.selective_scan(*low, True)
    ry, _ = selective_scan_channels_last_torch(*low)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ry.float(), rtol=1e-2, atol=1e-2)


@needs_cpu_kernels
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
@pytest.mark.parametrize("softplus", [True, False])
def test_scan_backward_matches_pytorch(dtype, tol, softplus):
    args = _scan_inputs(3, 45, 24, seed=11, dtype=dtype)
    if not softplus:  # keep dt positive so exp(dt A) is a decay, as in real use
        args[1], args[6] = args[1].abs(), args[6].abs()
    args[1][0, :3] += 30.0  # above softplus's linear threshold
    grad = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64).to(dtype)
    _, states = torch.ops.openrec.selective_scan(*args, softplus)
    got = torch.ops.openrec.selective_scan_backward(grad, *args, states, softplus)
    ref = selective_scan_channels_last_backward_torch(grad, *args, delta_softplus=softplus)
    for name, g, r in zip("u delta A B C D delta_bias".split(), got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        torch.testing.assert_close(g, r, rtol=tol, atol=tol * max(1.0, r.abs().max().item()), msg=f"grad of {name}")


@needs_cpu_kernels
def test_results_do_not_depend_on_the_thread_count():
    x, offset = _das_inputs(4, 8, 16, 4, 16, seed=5)
    args = _scan_inputs(4, 128, 64, seed=6)
    grad_x = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    grad_y = torch.randn(args[0].shape, generator=torch.Generator().manual_seed(2))

    def run():
        y, states = torch.ops.openrec.selective_scan(*args, True)
        return (torch.ops.openrec.das_sample(x, offset), *torch.ops.openrec.das_sample_backward(grad_x, x, offset, False),
                y, *torch.ops.openrec.selective_scan_backward(grad_y, *args, states, True))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(max(2, threads))
        many = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, many):
        assert torch.equal(a, b)


@needs_cpu_kernels
def test_bad_shapes_raise_value_errors_naming_the_op():
    x, offset = _das_inputs(1, 2, 3, 2, 4, seed=0)
    with pytest.raises(ValueError, match="openrec::das_sample"):
        torch.ops.openrec.das_sample(x, offset[..., :3])
    args = _scan_inputs(1, 5, 4, seed=0)
    args[2] = args[2][:3]
    with pytest.raises(ValueError, match="openrec::selective_scan"):
        torch.ops.openrec.selective_scan(*args, True)
