"""CUDA paths (skipped without a GPU): ops on the GPU vs the float64 CPU reference on fresh random
inputs, and a bf16-autocast training step of the design model."""
import pytest
import torch

from openrec.config import load_config
from openrec.losses import build_loss
from openrec.modeling import build_model
from openrec.ops import das_sample, selective_scan
from openrec.text import build_charset, build_label_encoder, collate_labels

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("shape", [(3, 5, 33, 4, 16), (300, 4, 32, 16, 16), (2, 8, 96, 8, 16)])
def test_das_cuda_matches_float64_reference(shape):
    n, h, w, g, cg = shape
    x = torch.randn(n, h, w, g * cg)
    off = torch.randn(n, h, w, 2 * g) * 2.5  # some samples leave the image
    grad = torch.randn(n, h, w, g * cg)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2)):
        # The reference sees exactly the (rounded) values the GPU sees, in float64.
        xi, gi = x.to(dtype), grad.to(dtype)
        xr, orr = xi.double().requires_grad_(), off.double().requires_grad_()
        ref_out = das_sample(xr, orr)
        ref_out.backward(gi.double())
        xc, oc = xi.cuda().requires_grad_(), off.cuda().requires_grad_()
        out = das_sample(xc, oc)
        out.backward(gi.cuda())
        assert _rel(out.cpu(), ref_out.detach()) < tol
        # The offset gradient jumps where a location crosses an integer; fp32 and float64 may put a
        # location within rounding of an integer on different sides, so such points are left out.
        base_h = torch.arange(h, dtype=torch.float64).view(1, h, 1, 1)
        base_w = torch.arange(w, dtype=torch.float64).view(1, 1, w, 1)
        loc = torch.stack([base_w + off[..., 0::2].double(), base_h + off[..., 1::2].double()], -1)
        smooth = ((loc - loc.round()).abs() > 1e-4).all(-1, keepdim=True).expand_as(loc).reshape(off.shape)
        assert _rel(xc.grad.cpu(), xr.grad) < tol
        assert _rel(oc.grad.cpu()[smooth], orr.grad[smooth]) < 10 * tol


@pytest.mark.parametrize("shape", [(256, 128, 256), (3, 16, 4096)])
def test_scan_cuda_matches_float64_reference(shape):
    b, d, length = shape
    inputs = [torch.randn(b, d, length), torch.randn(b, d, length), -torch.rand(d, 1) - 0.1, torch.randn(b, 1, length),
              torch.randn(b, 1, length), torch.randn(d), torch.randn(d)]
    ref = [t.double().requires_grad_() for t in inputs]
    grad = torch.randn(b, d, length)
    selective_scan(*ref).backward(grad.double())
    gpu = [t.cuda().requires_grad_() for t in inputs]
    out = selective_scan(*gpu)
    out.backward(grad.cuda())
    assert _rel(out.cpu(), selective_scan(*[t.detach() for t in ref])) < 1e-5
    for name, a, r in zip("u delta A B C D bias".split(), gpu, ref):
        assert _rel(a.grad.cpu(), r.grad) < 1e-4, name


def test_design_model_bf16_train_step():
    charset = build_charset()
    cfg = load_config("configs/rec/svtrv2/svtrv2_mamba_gtc_rctc.yml")
    model = build_model(cfg["Architecture"], charset).cuda()
    loss_fn = build_loss(cfg["Loss"], charset)
    enc = build_label_encoder(cfg["LabelEncode"], charset)
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in collate_labels(enc, ["hello", "World", "42!"] * 22).items()}
    images = torch.randn(66, 3, 32, 128, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = loss_fn(model(images, batch), batch)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, name  # A_log, D and dt bias stay fp32 under autocast
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        gpu = model(images[:4])["ctc_logits"].float().cpu()
        cpu = model.cpu()(images[:4].cpu())["ctc_logits"]
    assert _rel(gpu, cpu) < 1e-2  # cuDNN may use TF32 for convolutions


def test_layer_norm_keeps_bf16_under_autocast_and_matches_fp32():
    from openrec.modeling.common import LayerNorm, LayerNorm2d
    torch.manual_seed(3)
    norm = LayerNorm(96).cuda()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(64, 50, 96, device="cuda") * 3 + 1).requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.bfloat16
    ref = torch.nn.functional.layer_norm(x.detach(), (96,), norm.weight, norm.bias, norm.eps)
    assert _rel(y.float(), ref) < 1e-2
    y.float().square().sum().backward()
    assert norm.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    x2 = x.detach().clone().requires_grad_()
    torch.nn.functional.layer_norm(x2, (96,), norm.weight, norm.bias, norm.eps).square().sum().backward()
    assert _rel(x.grad, x2.grad) < 3e-2
    with torch.autocast("cuda", dtype=torch.float16):  # fp16 keeps autocast's fp32 norm (range)
        assert norm(x).dtype == torch.float32
    norm.eval()
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        first = norm(x)
        assert norm._bf16_affine() is norm._bf16_affine()  # cached while the parameters do not change
        assert torch.equal(norm(x), first)
    with torch.no_grad():
        norm.weight.mul_(2)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        assert not torch.equal(norm(x), first)  # a parameter update invalidates the cache
    norm2d = LayerNorm2d(96).cuda()
    m = torch.randn(2, 96, 5, 7, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = norm2d(m)
    assert out.shape == m.shape and out.dtype == torch.bfloat16
    assert _rel(out.float(), norm2d(m)) < 1e-2


def test_pointwise_gemm_path_matches_conv_on_channels_last():
    from openrec.modeling.encoders.dassm import pointwise
    conv = torch.nn.Conv2d(64, 96, 1).cuda()
    x = torch.randn(3, 64, 5, 9, device="cuda").to(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = pointwise(conv, x)  # the GEMM path
    ref = torch.nn.functional.conv2d(x.contiguous().double(), conv.weight.double(), conv.bias.double())
    assert y.shape == ref.shape and y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    assert _rel(y, ref) < 1e-2
