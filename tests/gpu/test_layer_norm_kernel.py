"""LayerNorm CUDA kernel vs its PyTorch implementation (float64 on the GPU), fresh random inputs every
run; determinism; routing of the encoders' LayerNorm module. Skipped without a GPU."""
import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

from openrec.modeling.common import LayerNorm, LayerNorm2d
from openrec.ops import cuda_kernels_available, layer_norm, layer_norm_kernel_applies
from openrec.ops.layer_norm import LAYER_NORM_EAGER_MIN_ROWS, layer_norm_backward_torch, layer_norm_torch
from tests.gpu.test_kernels import TOL, _rel

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(torch.cuda.is_available() and not cuda_kernels_available(),
                                 reason="CUDA kernels not built")]
SHAPES = [(1, 1), (3, 7), (1000, 64), (32773, 128), (517, 384), (64, 512), (5, 33), (2, 3, 4, 100), (128, 4, 32, 256)]


def _inputs(shape, dtype, weight_dtype):
    c = shape[-1]
    x = (torch.randn(shape, device="cuda") * 2 + torch.randn(shape[:-1] + (1,), device="cuda")).to(dtype)
    weight = (1 + 0.5 * torch.randn(c, device="cuda")).to(weight_dtype)
    bias = torch.randn(c, device="cuda").to(weight_dtype)
    return x, weight, bias, torch.randn(shape, device="cuda").to(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,weight_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                (torch.bfloat16, torch.float32), (torch.float16, torch.float16)])
def test_kernel_matches_reference(shape, dtype, weight_dtype):
    x, weight, bias, grad = _inputs(shape, dtype, weight_dtype)
    y, mean, rstd = torch.ops.openrec.layer_norm(x, weight, bias, 1e-6)
    y_ref, mean_ref, rstd_ref = layer_norm_torch(x.double(), weight.double(), bias.double(), 1e-6)
    assert y.dtype == dtype and mean.dtype == rstd.dtype == torch.float32 and mean.shape == shape[:-1]
    assert _rel(y, y_ref) <= TOL[dtype]
    assert _rel(mean, mean_ref) <= 1e-5 and _rel(rstd, rstd_ref) <= 1e-5
    grads = torch.ops.openrec.layer_norm_backward(grad, x, mean, rstd, weight)
    # The reference backward from the same inputs and the kernel's own statistics.
    refs = layer_norm_backward_torch(grad.double(), x.double(), mean.double(), rstd.double(), weight.double())
    for name, got, ref, want_dtype in zip(("grad_x", "grad_weight", "grad_bias"), grads, refs,
                                          (dtype, weight_dtype, weight_dtype)):
        assert got.dtype == want_dtype, name
        assert _rel(got, ref) <= TOL[dtype], name


def test_backward_is_deterministic():
    x, weight, bias, grad = _inputs((32773, 128), torch.bfloat16, torch.bfloat16)
    _, mean, rstd = torch.ops.openrec.layer_norm(x, weight, bias, 1e-6)
    first = torch.ops.openrec.layer_norm_backward(grad, x, mean, rstd, weight)
    second = torch.ops.openrec.layer_norm_backward(grad, x, mean, rstd, weight)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_opcheck_on_cuda():
    x, weight, bias, grad = _inputs((300, 96), torch.float32, torch.float32)
    opcheck(torch.ops.openrec.layer_norm.default, (x.requires_grad_(), weight.requires_grad_(),
                                                   bias.requires_grad_(), 1e-5))
    _, mean, rstd = torch.ops.openrec.layer_norm(x.detach(), weight.detach(), bias.detach(), 1e-5)
    opcheck(torch.ops.openrec.layer_norm_backward.default, (grad, x.detach(), mean, rstd, weight.detach()))


def test_wide_rows_and_float64_stay_f_layer_norm(monkeypatch):
    monkeypatch.setenv("OPENREC_LAYER_NORM", "kernel")
    for shape, dtype in (((10, 513), torch.float32), ((10, 64), torch.float64)):
        x, weight, bias, _ = _inputs(shape, dtype, dtype)
        assert not layer_norm_kernel_applies(x, shape[-1:], weight, bias)
        assert torch.equal(layer_norm(x, shape[-1:], weight, bias, 1e-5), F.layer_norm(x, shape[-1:], weight, bias, 1e-5))


def _count_kernel_calls(monkeypatch) -> list:
    calls = []
    kernel = torch.ops.openrec.layer_norm
    monkeypatch.setattr(torch.ops.openrec, "layer_norm", lambda *a: calls.append(1) or kernel(*a), raising=False)
    return calls


def test_default_routing_takes_the_kernel_for_small_eager_calls(monkeypatch):
    monkeypatch.delenv("OPENREC_LAYER_NORM", raising=False)
    x = torch.randn(64, 128, device="cuda")
    assert layer_norm_kernel_applies(x, (128,), torch.ones(128, device="cuda"), torch.zeros(128, device="cuda"))


def test_auto_routing_small_eager_calls_stay_pytorch_captures_and_large_calls_use_the_kernel(monkeypatch):
    monkeypatch.setenv("OPENREC_LAYER_NORM", "auto")
    norm = LayerNorm(128).cuda()
    calls = _count_kernel_calls(monkeypatch)
    small = torch.randn(64, 256, 128, device="cuda")  # 16k rows: a host-bound eager step
    with torch.no_grad():
        norm(small)
        assert not calls
        norm(torch.randn(LAYER_NORM_EAGER_MIN_ROWS, 128, device="cuda"))
        assert len(calls) == 1
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up before capture, as torch.cuda.graph expects
            norm(small)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = norm(small)
        assert len(calls) == 2
        graph.replay()
        torch.testing.assert_close(out, F.layer_norm(small, (128,), norm.weight, norm.bias, norm.eps),
                                   rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("OPENREC_LAYER_NORM", "Torch")
    with pytest.raises(ValueError, match="OPENREC_LAYER_NORM"):
        norm(small)


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_encoder_layer_norm_runs_the_kernel_and_matches_pytorch(amp, monkeypatch):
    """LayerNorm2d on a channels-last map, as in the encoders: the kernel path (counted) against
    F.layer_norm with the same parameters, outputs and parameter gradients."""
    torch.manual_seed(0)
    norm = LayerNorm2d(128, eps=1e-6).cuda()
    with torch.no_grad():
        norm.weight.normal_(1, 0.3)
        norm.bias.normal_()
    x = torch.randn(64, 128, 8, 32, device="cuda").to(memory_format=torch.channels_last)
    calls = _count_kernel_calls(monkeypatch)
    monkeypatch.setenv("OPENREC_LAYER_NORM", "kernel")  # 16k rows: eagerly, "auto" would not use it

    def run():
        norm.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp is not None):
            y = norm(x)
        y.float().square().sum().backward()
        return y.detach().float(), norm.weight.grad.clone(), norm.bias.grad.clone()

    got = run()
    assert calls, "the module did not reach the kernel"
    monkeypatch.setenv("OPENREC_LAYER_NORM", "torch")
    calls.clear()
    ref = run()
    assert not calls
    for a, b in zip(got, ref):
        assert _rel(a, b) <= (1e-5 if amp is None else 1e-2)


def test_plain_layer_norm_module_under_fp16_autocast_is_pytorchs():
    norm = LayerNorm(64).cuda()
    x = torch.randn(10, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        y = norm(x)
    assert y.dtype == torch.float32  # autocast's fp32 LayerNorm, as nn.LayerNorm gives
