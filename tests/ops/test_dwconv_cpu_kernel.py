"""The C++ CPU kernel of openrec::dwconv3x3's forward (csrc/cpu/dwconv_cpu.cpp) against its PyTorch
implementation (the specification), and when ``openrec.ops.dwconv3x3`` routes a call to it."""
import copy
import pytest
import torch
import torch.nn.functional as F

from openrec.ops import cpu_kernels_status, dwconv3x3, dwconv3x3_torch, export_formulation
from openrec.ops.dwconv import EPILOGUES, dwconv3x3_cpu_kernel_applies
from openrec.ops.kernels import has_cpu_kernel

needs_kernel = pytest.mark.skipif(not has_cpu_kernel("openrec::dwconv3x3"),
                                  reason=f"no C++ CPU dwconv kernel: {cpu_kernels_status()}")

# Channels below, at and above the 64-byte vector (16 floats, 8 doubles) and with a scalar tail;
# 1x1 maps (every tap but the centre is padding), odd sizes, the model's shapes.
SHAPES = [(1, 4, 1, 1), (2, 8, 3, 5), (3, 12, 4, 9), (1, 16, 8, 17), (2, 24, 1, 7), (1, 37, 5, 3), (2, 64, 2, 2),
          (1, 256, 4, 32), (1, 512, 8, 32)]


def _inputs(shape, dtype=torch.float32, seed=0, channels_last=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(shape[1], 1, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(shape[1], generator=gen, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    return x.to(dtype), weight.to(dtype), bias.to(dtype)


@needs_kernel
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_kernel_matches_the_pytorch_implementation(shape, epilogue, dtype, tol):
    x, weight, bias = _inputs(shape, dtype, seed=sum(shape))
    out = torch.ops.openrec.dwconv3x3(x, weight, bias, EPILOGUES[epilogue])
    ref = dwconv3x3_torch(x, weight, bias, EPILOGUES[epilogue])
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


@needs_kernel
def test_a_known_value():
    """All-ones 3x3 weights on a map of ones count each pixel's neighbours inside the map (zero padding)."""
    x = torch.ones(1, 20, 3, 4)  # 20 channels: one vector of 16 and a scalar tail of 4
    out = torch.ops.openrec.dwconv3x3(x, torch.ones(20, 1, 3, 3), torch.full((20,), 0.5), 1)
    neighbours = torch.tensor([[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]], dtype=torch.float32)
    assert torch.equal(out, (1 + 0.5 + neighbours).expand(1, 20, 3, 4))


@needs_kernel
def test_any_input_layout_and_bf16():
    x, weight, bias = _inputs((2, 20, 5, 6), seed=3, channels_last=False)  # NCHW
    ref = dwconv3x3_torch(x, weight, bias, 1)
    torch.testing.assert_close(torch.ops.openrec.dwconv3x3(x, weight, bias, 1), ref, rtol=2e-6, atol=2e-6)
    wide = torch.randn(2, 20, 5, 12)[..., ::2]  # a strided view
    torch.testing.assert_close(torch.ops.openrec.dwconv3x3(wide, weight, bias, 2), dwconv3x3_torch(wide, weight, bias, 2),
                               rtol=2e-6, atol=2e-6)
    low = [t.bfloat16() for t in (x, weight, bias)]
    out = torch.ops.openrec.dwconv3x3(*low, 3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), dwconv3x3_torch(*low, 3).float(), rtol=1e-2, atol=1e-2)


@needs_kernel
def test_results_do_not_depend_on_the_thread_count():
    """The kernel's own loops give the same bits at any thread count. ATen's vectorised SiLU and GELU,
    which modes 2 and 3 apply as the formulation does, do not (their scalar tails move with the
    thread split: F.silu and F.gelu alone differ between 1 and 2 threads), so those modes are
    checked against ATen's functions at the same thread count."""
    x, weight, bias = _inputs((3, 48, 7, 33), seed=4)
    threads = torch.get_num_threads()
    runs = []
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            out = [torch.ops.openrec.dwconv3x3(x, weight, bias, m) for m in range(4)]
            assert torch.equal(out[2], F.silu(out[0]))
            g = F.gelu(x)
            assert torch.equal(out[3], torch.ops.openrec.dwconv3x3(g, weight, bias, 1))
            runs.append(out)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@needs_kernel
def test_bad_arguments_raise_value_errors_naming_the_op():
    x, weight, bias = _inputs((1, 8, 2, 2))
    with pytest.raises(ValueError, match="openrec::dwconv3x3"):
        torch.ops.openrec.dwconv3x3(x, weight[:4], bias, 0)
    with pytest.raises(ValueError, match="mode must be"):
        torch.ops.openrec.dwconv3x3(x, weight, bias, 7)


@needs_kernel
def test_inference_calls_take_the_kernel_and_training_calls_do_not():
    x, weight, bias = _inputs((2, 16, 4, 6), seed=5)
    assert dwconv3x3_cpu_kernel_applies(x, weight, bias)
    for epilogue, mode in EPILOGUES.items():
        assert torch.equal(dwconv3x3(x, weight, bias, epilogue), torch.ops.openrec.dwconv3x3(x, weight, bias, mode))
    leaf = weight.clone().requires_grad_()
    assert not dwconv3x3_cpu_kernel_applies(x, leaf, bias)  # autograd through F.conv2d, as before
    with torch.no_grad():
        assert dwconv3x3_cpu_kernel_applies(x, leaf, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not dwconv3x3_cpu_kernel_applies(x, weight, bias)
    with export_formulation():
        assert not dwconv3x3_cpu_kernel_applies(x, weight, bias)
    assert not dwconv3x3_cpu_kernel_applies(x.half(), weight.half(), bias.half())
    assert not dwconv3x3_cpu_kernel_applies(x, weight, None)


@needs_kernel
def test_openrec_dwconv_torch_keeps_the_unfused_code(monkeypatch):
    x, weight, bias = _inputs((2, 16, 4, 6), seed=6)
    monkeypatch.setenv("OPENREC_DWCONV", "torch")
    assert not dwconv3x3_cpu_kernel_applies(x, weight, bias)
    g = F.gelu(x)
    assert torch.equal(dwconv3x3(x, weight, bias, "gelu_residual"), g + F.conv2d(g, weight, bias, padding=1, groups=16))
    monkeypatch.setenv("OPENREC_DWCONV", "torhc")
    with pytest.raises(ValueError, match="OPENREC_DWCONV must be auto, torch or kernel"):
        dwconv3x3(x, weight, bias, "residual")


@needs_kernel
def test_a_mamba_model_reads_the_same_with_and_without_the_kernel(monkeypatch):
    from openrec.modeling.encoders import SVTRv2Mamba
    torch.manual_seed(0)
    model = SVTRv2Mamba(dims=(32, 64), depths=(2, 2), num_heads=(2, 4), mixer=[["Mamba"] * 2, ["Mamba"] * 2]).eval()
    for m in model.modules():  # trained-looking BatchNorm statistics and DAS offsets, not the identity start
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "offset" in name:
                p.normal_(0, 0.5)
        x = torch.randn(2, 3, 32, 64)
        fused = model(x)
        monkeypatch.setenv("OPENREC_DWCONV", "torch")
        unfused = model(x)
        exact = copy.deepcopy(model).double()(x.double())
    # Against the float64 model, at the scale of the output (|y| up to ~20 here): a fixed 1e-4 between
    # the two fp32 paths failed on one CPU where oneDNN's convolution rounds differently (both paths
    # were 2e-4 and 6e-4 from float64 there).
    tol = 1e-4 * exact.abs().max().item()
    torch.testing.assert_close(fused.double(), exact, rtol=0, atol=tol)
    torch.testing.assert_close(unfused.double(), exact, rtol=0, atol=tol)
    assert not torch.equal(fused, unfused)  # the kernel did run (a different summation order)
