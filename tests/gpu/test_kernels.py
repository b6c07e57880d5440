"""CUDA kernels vs the PyTorch implementation (float64 on the GPU), fresh random inputs every run.

Skipped without a GPU. With OPENREC_REQUIRE_KERNELS=1 (set by scripts/gpu_kernels_check.sh) a
missing extension is a failure, not a silent fall-back to the PyTorch implementation.
"""
import os

import pytest
import torch
from torch.library import opcheck

from openrec.ops import (cuda_kernels_available, cuda_kernels_status, das_sample, das_sample_backward_torch,
                         das_sample_torch, selective_scan, selective_scan_backward_torch, selective_scan_torch)
from openrec.ops.selective_scan import SCAN_CHUNK

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 1e-2}


def _rel(a, b):
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def test_kernels_are_loaded():
    if os.environ.get("OPENREC_REQUIRE_KERNELS") == "1":
        assert cuda_kernels_available(), cuda_kernels_status()
    elif not cuda_kernels_available():
        pytest.skip(cuda_kernels_status())


needs_kernels = pytest.mark.skipif(torch.cuda.is_available() and not cuda_kernels_available(),
                                   reason="CUDA kernels not built")


def _away_from_integers(loc_h, loc_w, eps=1e-3):
    """Points where the bilinear weights are smooth: the offset gradient jumps at integer locations,
    and fp32 vs float64 may round a location to different sides of one."""
    return ((loc_h - loc_h.round()).abs() > eps) & ((loc_w - loc_w.round()).abs() > eps)


DAS_SHAPES = [  # (N, H, W, groups, group_channels, offset scale)
    (1, 5, 33, 4, 16, 2.5),
    (3, 3, 97, 24, 16, 1.0),
    (300, 4, 32, 16, 16, 1.5),
    (600, 2, 16, 8, 16, 3.0),
    (2, 3, 512, 16, 16, 4.0),   # 1536 pixels: the atomic backward unless deterministic
    (5, 7, 9, 6, 12, 2.0),      # 12 channels per group: the scalar (non-vector) path
]


@needs_kernels
@pytest.mark.parametrize("shape", DAS_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_das_kernel_matches_reference(shape, dtype):
    n, h, w, g, cg, scale = shape
    dev = "cuda"
    x = torch.randn(n, h, w, g * cg, device=dev).to(dtype)
    offset = (torch.randn(n, h, w, 2 * g, device=dev) * scale).to(dtype)
    grad = torch.randn(n, h, w, g * cg, device=dev).to(dtype)
    # The reference is the PyTorch implementation on the same inputs (fp32 math, as the kernel: sample
    # locations like 511 + dx carry fp32 rounding in both); float64 is a looser second check.
    ref = das_sample_torch(x, offset)
    ref_gx, ref_go = das_sample_backward_torch(grad, x, offset)
    xk, ok = x.clone().requires_grad_(), offset.clone().requires_grad_()
    out = das_sample(xk, ok)
    out.backward(grad)
    tol = TOL[dtype]
    assert out.dtype == dtype and xk.grad.dtype == dtype and ok.grad.dtype == dtype
    assert _rel(out, ref) < tol
    assert _rel(xk.grad, ref_gx) < tol
    assert _rel(out, das_sample_torch(x.double(), offset.double())) < 10 * tol
    base_h = torch.arange(h, device=dev, dtype=torch.float64).view(1, h, 1, 1)
    base_w = torch.arange(w, device=dev, dtype=torch.float64).view(1, 1, w, 1)
    od = offset.double().view(n, h, w, g, 2)
    smooth = _away_from_integers(base_h + od[..., 1], base_w + od[..., 0]).unsqueeze(-1).expand(-1, -1, -1, -1, 2)
    smooth = smooth.reshape(offset.shape)
    assert _rel(ok.grad[smooth], ref_go[smooth]) < 10 * tol


@needs_kernels
@pytest.mark.parametrize("layout", ["nchw_permuted", "sliced_channels", "channels_last_memory"])
def test_das_kernel_reads_strided_inputs(layout):
    n, h, w, g, cg = 3, 4, 20, 8, 16
    c = g * cg
    if layout == "nchw_permuted":  # (N,C,H,W) contiguous viewed as (N,H,W,C): channel stride H*W
        x = torch.randn(n, c, h, w, device="cuda").permute(0, 2, 3, 1)
    elif layout == "sliced_channels":
        x = torch.randn(n, h, w, 2 * c, device="cuda")[..., c:]
    else:  # channels_last (N,C,H,W) permuted: contiguous (N,H,W,C), the DASSM case
        x = torch.randn(n, c, h, w, device="cuda").to(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    offset = torch.randn(n, h, w, 2 * g, device="cuda")
    out = das_sample(x, offset)
    assert _rel(out, das_sample_torch(x.double(), offset.double())) < 1e-5
    assert out.is_contiguous()


@needs_kernels
def test_das_zero_offset_is_exact_identity():
    x = torch.randn(4, 3, 17, 64, device="cuda").bfloat16()
    assert torch.equal(das_sample(x, torch.zeros(4, 3, 17, 8, device="cuda")), x)


@needs_kernels
@pytest.mark.parametrize("pixels", [(4, 32), (3, 512)])
def test_das_deterministic_backward_is_bit_identical(pixels):
    h, w = pixels
    x = torch.randn(64, h, w, 128, device="cuda")
    offset = torch.randn(64, h, w, 16, device="cuda") * 2
    grad = torch.randn_like(x)
    runs = [torch.ops.openrec.das_sample_backward(grad, x, offset, True) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    torch.use_deterministic_algorithms(True)
    try:  # the global switch selects the same path through the autograd formula
        xk = x.clone().requires_grad_()
        das_sample(xk, offset).backward(grad)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(xk.grad, runs[0][0])


# (batch, D, L). D = 21 and 36 (bf16) take the kernels' element-wise tile path, the rest 16-byte vectors;
# L = 37, 130 end inside a 64-step super-chunk.
SCAN_SHAPES = [(1, 32, 128), (3, 40, 37), (2, 21, 130), (3, 36, 70), (300, 64, 128), (600, 32, 16), (2, 96, 8192),
               (4, 256, 384)]


def _scan_inputs(b, d, length, dtype):
    dev = "cuda"
    u = torch.randn(b, length, d, device=dev).to(dtype).transpose(1, 2)  # channels-last storage, as in DASSM
    delta = (torch.randn(b, length, d, device=dev) - 1).to(dtype).transpose(1, 2)
    A = -torch.exp(torch.randn(d, 1, device=dev) * 0.5)
    B = torch.randn(b, 1, length, device=dev).to(dtype)
    C = torch.randn(b, 1, length, device=dev).to(dtype)
    return [u, delta, A, B, C, torch.randn(d, device=dev), torch.randn(d, device=dev) * 0.5]


@needs_kernels
@pytest.mark.parametrize("shape", SCAN_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scan_kernel_matches_reference(shape, dtype):
    inputs = _scan_inputs(*shape, dtype)
    grad = torch.randn(shape[0], shape[2], shape[1], device="cuda").to(dtype).transpose(1, 2)
    ref_in = [t.double() for t in inputs]
    ref = selective_scan_torch(*ref_in)
    ref_grads = selective_scan_backward_torch(grad.double(), *ref_in)
    ker_in = [t.detach().clone().requires_grad_() for t in inputs]
    out = selective_scan(*ker_in)
    out.backward(grad)
    tol = TOL[dtype]
    assert out.dtype == dtype
    assert _rel(out, ref) < tol
    for name, a, r in zip("u delta A B C D delta_bias".split(), ker_in, ref_grads):
        assert a.grad.dtype == a.dtype, name
        assert _rel(a.grad, r) < tol, name


@needs_kernels
@pytest.mark.parametrize("dtype,bc_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                            (torch.bfloat16, torch.float32), (torch.float16, torch.float16)])
def test_scan_kernel_reads_strided_and_mixed_dtype_b_c(dtype, bc_dtype):
    """B and C as DASSM passes them: column slices of one x_proj output (read in place), possibly in
    another dtype than u (then read as fp32); gradients flow back into that output."""
    b, d, length, rank = 5, 48, 77, 3
    u, delta, A, _, _, D, bias = _scan_inputs(b, d, length, dtype)
    x_dbl = torch.randn(b, length, rank + 2, device="cuda").to(bc_dtype).requires_grad_()
    B = x_dbl[..., rank].unsqueeze(1)
    C = x_dbl[..., rank + 1].unsqueeze(1)
    assert not B.is_contiguous()
    grad = torch.randn(b, length, d, device="cuda").to(dtype).transpose(1, 2)
    ref_in = [t.detach().double() for t in (u, delta, A, B, C, D, bias)]
    ref = selective_scan_torch(*ref_in)
    ref_grads = selective_scan_backward_torch(grad.double(), *ref_in)
    out = selective_scan(u, delta, A, B, C, D, bias)
    out.backward(grad)
    tol = TOL[dtype]
    assert _rel(out, ref) < tol
    assert _rel(x_dbl.grad[..., rank], ref_grads[3].reshape(b, length)) < tol
    assert _rel(x_dbl.grad[..., rank + 1], ref_grads[4].reshape(b, length)) < tol
    assert torch.count_nonzero(x_dbl.grad[..., :rank]) == 0


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_das_offsets_in_x_dtype_and_float(dtype):
    """Offsets in x's dtype are read as they are, fp32 offsets with 16-bit x too; the offset gradient
    comes back in the offset's dtype either way."""
    n, h, w, g, cg = 7, 4, 30, 8, 16
    x = torch.randn(n, h, w, g * cg, device="cuda").to(dtype)
    grad = torch.randn_like(x)
    for off_dtype in (dtype, torch.float32):
        offset = (torch.randn(n, h, w, 2 * g, device="cuda") * 2).to(off_dtype)
        ok = offset.clone().requires_grad_()
        xk = x.clone().requires_grad_()
        out = das_sample(xk, ok)
        out.backward(grad)
        ref_gx, _ = das_sample_backward_torch(grad, x, offset)
        assert ok.grad.dtype == off_dtype
        assert _rel(out, das_sample_torch(x, offset)) < TOL[dtype]
        assert _rel(xk.grad, ref_gx) < TOL[dtype]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scan_kernel_handles_storage_not_16_byte_aligned(dtype):
    """Tensors that start one element into their storage cannot be moved in 16-byte vectors; the
    kernels fall back to element-wise staging and must give the same answer."""
    b, d, length = 3, 64, 100

    def shifted(t):  # same values, storage offset 1
        flat = torch.empty(t.numel() + 1, device="cuda", dtype=t.dtype)
        flat[1:] = t.reshape(-1)
        return flat[1:].view(t.shape)

    u, delta, A, B, C, D, bias = _scan_inputs(b, d, length, dtype)
    args = [u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.reshape(d), B.reshape(b, length),
            C.reshape(b, length), D, bias]
    grad = torch.randn(b, length, d, device="cuda").to(dtype)
    y, states = torch.ops.openrec.selective_scan(*args, True)
    moved = [shifted(args[0]), shifted(args[1])] + args[2:]
    assert moved[0].data_ptr() % 16 != 0
    y2, states2 = torch.ops.openrec.selective_scan(*moved, True)
    assert torch.equal(y, y2) and torch.equal(states, states2)
    ref = torch.ops.openrec.selective_scan_backward(grad, *args, states, True)
    got = torch.ops.openrec.selective_scan_backward(shifted(grad), *moved, states2, True)
    assert all(torch.equal(a, b) for a, b in zip(ref, got))


@needs_kernels
def test_scan_states_match_reference_and_backward_is_deterministic():
    b, d, length = 8, 64, 300
    u, delta, A, B, C, D, bias = _scan_inputs(b, d, length, torch.float32)
    args = [u.transpose(1, 2), delta.transpose(1, 2), A.reshape(d), B.reshape(b, length), C.reshape(b, length), D, bias]
    y, states = torch.ops.openrec.selective_scan(*args, True)
    y_ref, states_ref = (t.cuda() for t in torch.ops.openrec.selective_scan(*[t.double().cpu() for t in args], True))
    assert states.shape == (b, -(-length // SCAN_CHUNK), d)
    assert _rel(states, states_ref) < 1e-5 and _rel(y, y_ref) < 1e-5
    grad = torch.randn_like(y)
    runs = [torch.ops.openrec.selective_scan_backward(grad, *args, states, True) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@needs_kernels
def test_opcheck_on_cuda():
    x = torch.randn(2, 3, 10, 32, device="cuda", requires_grad=True)
    offset = torch.randn(2, 3, 10, 4, device="cuda", requires_grad=True)
    opcheck(torch.ops.openrec.das_sample.default, (x, offset))
    opcheck(torch.ops.openrec.das_sample_backward.default, (torch.randn_like(x), x.detach(), offset.detach(), True))
    b, length, d = 2, 37, 40
    args = [torch.randn(b, length, d, device="cuda"), torch.randn(b, length, d, device="cuda"),
            -torch.rand(d, device="cuda") - 0.1, torch.randn(b, length, device="cuda"),
            torch.randn(b, length, device="cuda"), torch.randn(d, device="cuda"), torch.randn(d, device="cuda")]
    opcheck(torch.ops.openrec.selective_scan.default, ([t.requires_grad_() for t in args] + [True]))
    _, states = torch.ops.openrec.selective_scan(*args, True)
    opcheck(torch.ops.openrec.selective_scan_backward.default,
            (torch.randn(b, length, d, device="cuda"), *[t.detach() for t in args], states.detach(), True))


@needs_kernels
def test_a_shape_error_in_the_cuda_binding_raises():
    """The binding's TORCH_CHECK must reach Python as an exception. On the lent H100 image (2026-12-06)
    an extension linked by its compiler wrapper with a static libstdc++ crashed the process here with a
    segmentation fault (perf note 41): build with the system g++; setup.py warns when the shared
    libstdc++ is missing."""
    x = torch.randn(1, 2, 3, 4, device="cuda")
    with pytest.raises(RuntimeError, match="openrec::das_sample"):
        torch.ops.openrec.das_sample(x, torch.randn(1, 2, 3, 3, device="cuda"))
