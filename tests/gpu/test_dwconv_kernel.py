"""Fused depthwise 3x3 CUDA kernel vs its PyTorch implementation (float64 on the GPU), fresh random
inputs every run; determinism; opcheck; CUDA-graph capture; the DA-Mamba block with and without the
kernel. Skipped without a GPU."""
import pytest
import torch
from torch.library import opcheck

from openrec.modeling.encoders.dassm import DASSMBlock
from openrec.ops import cuda_kernels_available, dwconv3x3, dwconv3x3_kernel_applies
from openrec.ops.dwconv import DWCONV_EAGER_MIN_PIXELS, EPILOGUES, dwconv3x3_backward_torch, dwconv3x3_torch
from tests.gpu.test_kernels import TOL, _rel

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(torch.cuda.is_available() and not cuda_kernels_available(),
                                 reason="CUDA kernels not built")]
# (N, C, H, W): odd sizes, one pixel, channel counts that leave lanes idle (12, 100), the models'
# shapes (B128 8x32 at 128 / 512 channels, 4x32 at 1024), long text (W 512), base's 1536 channels.
SHAPES = [(1, 4, 1, 1), (3, 8, 5, 7), (300, 12, 3, 9), (5, 100, 7, 13), (128, 128, 8, 32), (16, 512, 8, 32),
          (8, 1024, 4, 32), (2, 256, 4, 512), (2, 1536, 4, 21)]
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32),
          (torch.float16, torch.float16)]


def _inputs(shape, dtype, weight_dtype):
    c = shape[1]
    x = torch.randn(shape, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    weight = (0.3 * torch.randn(c, 1, 3, 3, device="cuda")).to(weight_dtype)
    bias = torch.randn(c, device="cuda").to(weight_dtype)
    grad = torch.randn(shape, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
    return x, weight, bias, grad


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("dtype,weight_dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_reference(shape, dtype, weight_dtype, mode):
    x, weight, bias, grad = _inputs(shape, dtype, weight_dtype)
    y = torch.ops.openrec.dwconv3x3(x, weight, bias, mode)
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert _rel(y, dwconv3x3_torch(x.double(), weight.double(), bias.double(), mode)) <= TOL[dtype]
    grads = torch.ops.openrec.dwconv3x3_backward(grad, x, weight, bias, mode)
    refs = dwconv3x3_backward_torch(grad.double(), x.double(), weight.double(), bias.double(), mode)
    for name, got, ref, want_dtype in zip(("grad_x", "grad_weight", "grad_bias"), grads, refs,
                                          (dtype, weight_dtype, weight_dtype)):
        assert got.dtype == want_dtype and got.shape == ref.shape, name
        assert _rel(got, ref) <= TOL[dtype], name


@pytest.mark.parametrize("layout", ["nchw", "strided"])
def test_other_layouts_are_read_correctly(layout):
    x, weight, bias, grad = _inputs((3, 64, 6, 20), torch.float32, torch.float32)
    x = x.contiguous() if layout == "nchw" else x[:, :, :, ::2]
    grad = grad[:, :, :, : x.shape[3]].contiguous()
    y = torch.ops.openrec.dwconv3x3(x, weight, bias, 1)
    assert _rel(y, dwconv3x3_torch(x.double(), weight.double(), bias.double(), 1)) <= 1e-5
    got = torch.ops.openrec.dwconv3x3_backward(grad, x, weight, bias, 2)
    for g, r in zip(got, dwconv3x3_backward_torch(grad.double(), x.double(), weight.double(), bias.double(), 2)):
        assert _rel(g, r) <= 1e-5


def test_backward_is_deterministic():
    x, weight, bias, grad = _inputs((128, 128, 8, 32), torch.bfloat16, torch.float32)
    for mode in (0, 2, 3):
        first = torch.ops.openrec.dwconv3x3_backward(grad, x, weight, bias, mode)
        second = torch.ops.openrec.dwconv3x3_backward(grad, x, weight, bias, mode)
        for a, b in zip(first, second):
            assert torch.equal(a, b)


def test_opcheck_on_cuda():
    x, weight, bias, grad = _inputs((2, 32, 5, 9), torch.float32, torch.float32)
    for mode in (0, 1, 2, 3):
        opcheck(torch.ops.openrec.dwconv3x3.default, (x.clone().requires_grad_(), weight.clone().requires_grad_(),
                                                      bias.clone().requires_grad_(), mode))
        opcheck(torch.ops.openrec.dwconv3x3_backward.default, (grad, x, weight, bias, mode))


def test_routing(monkeypatch):
    x, weight, bias, _ = _inputs((2, 8, 4, 4), torch.float32, torch.float32)
    big = torch.randn(DWCONV_EAGER_MIN_PIXELS // 64, 8, 8, 8, device="cuda")
    monkeypatch.delenv("OPENREC_DWCONV", raising=False)
    assert dwconv3x3_kernel_applies(x, weight, bias)  # the default: small eager calls too (no cuDNN plan per shape)
    monkeypatch.setenv("OPENREC_DWCONV", "auto")
    assert not dwconv3x3_kernel_applies(x, weight, bias)  # a small eager call: host-bound, stays cuDNN
    assert dwconv3x3_kernel_applies(big, weight, bias)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = dwconv3x3_kernel_applies(x, weight, bias)
    assert captured  # inside a capture even small calls take the kernel
    monkeypatch.setenv("OPENREC_DWCONV", "kernel")
    assert dwconv3x3_kernel_applies(x, weight, bias)
    assert not dwconv3x3_kernel_applies(x.double(), weight.double(), bias.double())
    assert not dwconv3x3_kernel_applies(x[:, :6].contiguous(), weight[:6], bias[:6])  # 6 channels: not % 4
    monkeypatch.setenv("OPENREC_DWCONV", "torch")
    assert not dwconv3x3_kernel_applies(x, weight, bias)
    monkeypatch.setenv("OPENREC_DWCONV", "fused")
    with pytest.raises(ValueError, match="OPENREC_DWCONV"):
        dwconv3x3(x, weight, bias)


def test_inside_a_cuda_graph_capture():
    x, weight, bias, grad = _inputs((16, 128, 8, 32), torch.bfloat16, torch.float32)
    eager = torch.ops.openrec.dwconv3x3(x, weight, bias, 2), torch.ops.openrec.dwconv3x3_backward(grad, x, weight,
                                                                                                   bias, 2)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.ops.openrec.dwconv3x3_backward(grad, x, weight, bias, 2)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.ops.openrec.dwconv3x3(x, weight, bias, 2), torch.ops.openrec.dwconv3x3_backward(grad, x, weight,
                                                                                                    bias, 2)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out[0], eager[0])
    for a, b in zip(out[1], eager[1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_dassm_block_with_and_without_the_kernel(amp, monkeypatch):
    """fp32: the block with the kernel equals the cuDNN block. bf16 autocast: against the fp32 block
    the kernel's errors are no larger than cuDNN's (the gradient of the DAS offset branch passes
    LayerNorm, GELU and the sampling, so bf16 roundings alone move it by several percent)."""
    torch.manual_seed(0)
    block = DASSMBlock(128).cuda().eval()  # eval: no drop path, BN running stats
    torch.nn.init.normal_(block.token_mixer.da_scan.offset.weight, std=0.05)  # zero at init: no gradient to dw_conv
    x = torch.randn(8, 128, 8, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    names = ("y", "grad x", "pos_embed w", "conv2d b", "ffn conv w", "das dw w")

    def run(mode, dtype):
        monkeypatch.setenv("OPENREC_DWCONV", mode)
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            y = block(xi)
        y.float().backward(grad)
        return (y.float(), xi.grad.float(), block.pos_embed.conv.weight.grad, block.token_mixer.conv2d.bias.grad,
                block.mlp.conv.conv.weight.grad, block.token_mixer.da_scan.dw_conv.weight.grad)

    with torch.backends.cudnn.flags(allow_tf32=False):
        exact = run("torch", None)
        kernel, cudnn = run("kernel", amp), run("torch", amp)
    for name, k, c, e in zip(names, kernel, cudnn, exact):
        if amp is None:
            assert _rel(k, e) <= 1e-5, name
        else:
            assert _rel(k, e) <= 1.5 * _rel(c, e) + 1e-3, name


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("epilogue", ["residual", "silu", "none", "gelu_residual"])
def test_autocast_output_dtype_follows_the_unfused_path(amp, epilogue, monkeypatch):
    """An fp32 x under autocast: the unfused path convolves in the autocast dtype and adds the residual in
    fp32 (fp32 + bf16 -> fp32), so the kernel path must return the same dtype and, for the residual, add
    x in fp32 (a residual stream that reaches a block in fp32 must not drop to 16 bits there)."""
    torch.manual_seed(0)
    x = torch.randn(4, 64, 8, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(64, 1, 3, 3, device="cuda") * 0.3, torch.randn(64, device="cuda") * 0.1
    out = {}
    for mode in ("kernel", "torch"):
        monkeypatch.setenv("OPENREC_DWCONV", mode)
        with torch.autocast("cuda", dtype=amp):
            out[mode] = dwconv3x3(x, weight, bias, epilogue)
    assert out["kernel"].dtype == out["torch"].dtype
    # Both paths round the convolution to 16 bits (cuDNN with the weights cast to 16 bits, the kernel
    # from fp32 weights), so they differ by an ulp here and there: each is held to the float64 answer.
    exact = dwconv3x3_torch(x.double(), weight.double(), bias.double(), EPILOGUES[epilogue])
    for mode in ("kernel", "torch"):
        assert _rel(out[mode], exact) <= TOL[amp], mode
    if epilogue == "residual":  # x itself enters unrounded: y = fp32 x + the 16-bit convolution
        monkeypatch.setenv("OPENREC_DWCONV", "kernel")
        with torch.autocast("cuda", dtype=amp):
            z = dwconv3x3(x, weight, bias, "none")
        assert z.dtype == amp and torch.equal(out["kernel"], x + z)
