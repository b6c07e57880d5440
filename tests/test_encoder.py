"""SVTRv2Mamba encoder: shapes, mixer kinds, identity DAS at init, drop rates, parameter counts."""
import warnings

import pytest
import torch
import torch.nn as nn

from openrec.config import load_config
from openrec.modeling import build_model
from openrec.modeling.common import Attention
from openrec.modeling.encoders import SVTRv2Mamba
from openrec.modeling.encoders.dassm import DynamicAdaptiveScan
from openrec.registry import ENCODERS

DESIGN = "configs/rec/svtrv2/svtrv2_mamba_gtc_rctc.yml"


@pytest.fixture(scope="module")
def design_encoder():
    torch.manual_seed(0)
    enc = ENCODERS.build(load_config(DESIGN)["Architecture"]["Encoder"], in_channels=3)
    return enc.eval()


@pytest.mark.parametrize("height", [32, 48, 64])
@pytest.mark.parametrize("width", [64, 128, 256, 512, 1024])
def test_design_encoder_shapes(design_encoder, height, width):
    with torch.no_grad():
        out = design_encoder(torch.randn(1, 3, height, width))
    # POPatchEmbed 4x down, then sub_k [1,1] and [2,1]: (H/8, W/4) at 256 channels.
    assert out.shape == (1, 256, height // 8, width // 4)
    assert torch.isfinite(out).all()


def test_five_dim_input_and_bad_size(design_encoder):
    with torch.no_grad():
        assert design_encoder(torch.randn(2, 2, 3, 32, 64)).shape == (4, 256, 4, 16)
    with pytest.raises(ValueError, match="multiples of 4"):
        design_encoder(torch.randn(1, 3, 32, 66))


def test_every_mixer_kind_and_layout_changes():
    mixer = [["Conv", "Global"], ["Mamba", "FGlobal", "Conv", "Mamba"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = SVTRv2Mamba(dims=[32, 64], depths=[2, 4], num_heads=[2, 4], mixer=mixer, sub_k=[[2, 1]], feat2d=True)
    x = torch.randn(2, 3, 32, 64)
    out = enc(x)
    assert out.shape == (2, 64, 4, 16)
    out.square().mean().backward()
    no_grad = [n for n, p in enc.named_parameters() if p.grad is None]
    # The DAS offset head starts at zero, so its input branch gets no gradient until it moves; all else does.
    assert all("da_scan" in n and "offset" not in n for n in no_grad), no_grad
    assert enc.stages[1].blocks[0].token_mixer.da_scan.offset.weight.grad.abs().sum() > 0


def test_output_layouts():
    kw = dict(dims=[32, 64], depths=[1, 1], num_heads=[2, 2], mixer=[["Conv"], ["Mamba"]], sub_k=[[2, 1]])
    x = torch.randn(2, 3, 32, 64)
    assert SVTRv2Mamba(**kw)(x).shape == (2, 4 * 16, 64)  # tokens
    assert SVTRv2Mamba(**kw, last_stage=True, out_channels=48)(x).shape == (2, 16, 48)
    assert SVTRv2Mamba(**kw, feat2d=True)(x).shape == (2, 64, 4, 16)


def test_fmamba_is_deprecated_alias():
    from openrec.modeling.encoders import svtrv2_mamba
    svtrv2_mamba._fmamba_warned = False
    kw = dict(dims=[32], depths=[2], num_heads=[2], sub_k=[])
    with pytest.warns(FutureWarning, match="FMamba"):
        a = SVTRv2Mamba(**kw, mixer=[["FMamba", "FMamba"]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process only
        SVTRv2Mamba(**kw, mixer=[["FMamba", "Mamba"]])
    b = SVTRv2Mamba(**kw, mixer=[["Mamba", "Mamba"]])
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]


def test_das_is_identity_at_init(design_encoder):
    scans = [m for m in design_encoder.modules() if isinstance(m, DynamicAdaptiveScan)]
    assert len(scans) == 10
    for m in scans:
        assert torch.count_nonzero(m.offset.weight) == 0 and torch.count_nonzero(m.offset.bias) == 0
    seen = []

    def check(module, args, output):
        seen.append(torch.equal(output, args[1].contiguous()))

    hooks = [m.register_forward_hook(check) for m in scans]
    with torch.no_grad():
        design_encoder(torch.randn(2, 3, 32, 128))
    for h in hooks:
        h.remove()
    assert seen == [True] * 10


def test_drop_rates_reach_every_block():
    enc = SVTRv2Mamba(dims=[32, 64], depths=[2, 3], num_heads=[2, 2], sub_k=[[2, 1]],
                      mixer=[["Conv", "Mamba"], ["Global", "Mamba", "FGlobal"]], drop_rate=0.15, attn_drop_rate=0.25)
    blocks = [blk for stage in enc.stages for blk in stage.blocks]
    for blk in blocks:
        rates = [m.p for m in blk.modules() if isinstance(m, nn.Dropout)]
        assert rates and set(rates) == {0.15}, type(blk).__name__
    attentions = [m for m in enc.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2 and all(a.attn_drop == 0.25 for a in attentions)
    # ... and dropout is active in training: two passes differ.
    enc.train()
    x = torch.randn(1, 3, 32, 32)
    assert not torch.equal(enc(x), enc(x))


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("family", ["svtrv2", "svtrv2_mamba"])
@pytest.mark.parametrize("size", ["tiny", "base"])
def test_parameter_counts(family, size):
    cfg = load_config(f"configs/rec/svtrv2/{family}_{size}_gtc_rctc.yml", ["Architecture.Decoder.gtc_decoder=null"])
    model = build_model(cfg["Architecture"])
    enc, total = _count(model.encoder), _count(model)
    print(f"\n{family}-{size}: encoder {enc / 1e6:.2f}M, encoder + RCTC {total / 1e6:.2f}M")
    if (family, size) == ("svtrv2", "base"):
        # OpenOCR's SVTRv2-B: encoder 17,649,600 and encoder + RCTC(95) 19,755,551 parameters.
        assert enc == 17_649_600 and total == 19_755_551
    if (family, size) == ("svtrv2_mamba", "base"):
        assert round(total / 1e6, 2) == 18.00  # the original SVTRv2Mamba-B + RCTC
    if size == "tiny":  # README's table: 4.18M / 3.81M
        assert enc == {"svtrv2": 4_175_072, "svtrv2_mamba": 3_812_480}[family]


def test_pointwise_matches_the_convolution_in_both_layouts():
    from openrec.modeling.encoders.dassm import pointwise
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 12, 1).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    ref = conv(x)
    torch.testing.assert_close(pointwise(conv, x), ref)  # NCHW: the convolution itself
    torch.testing.assert_close(pointwise(conv, x.to(memory_format=torch.channels_last)), ref)  # CPU, 30 rows: GEMM
    conv16 = torch.nn.Conv2d(8, 12, 1).to(torch.bfloat16)
    conv16.load_state_dict({k: v.to(torch.bfloat16) for k, v in conv.state_dict().items()})
    x16 = x.to(torch.bfloat16).to(memory_format=torch.channels_last)
    out = pointwise(conv16, x16)  # 16-bit NHWC storage: the GEMM path
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), conv16.double()(x16.double()), rtol=2e-2, atol=2e-2)


def test_pointwise_on_cpu_takes_the_gemm_only_for_small_channels_last_maps(monkeypatch):
    from openrec.modeling.encoders import dassm
    from openrec.ops import export_formulation
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 24, 1)
    calls = []
    monkeypatch.setattr(conv, "forward", lambda x: calls.append(tuple(x.shape)) or conv._conv_forward(x, conv.weight, conv.bias))
    small = torch.randn(2, 16, 8, 32).to(memory_format=torch.channels_last)  # 512 rows: the GEMM
    out = dassm.pointwise(conv, small)
    assert calls == [] and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(small, conv.weight, conv.bias), rtol=1e-5, atol=1e-5)
    dassm.pointwise(conv, torch.randn(3, 16, 8, 32).to(memory_format=torch.channels_last))  # 768 rows: convolution
    dassm.pointwise(conv, torch.randn(1, 16, 8, 32))  # NCHW: convolution
    with export_formulation():  # exporting: no size test on a dynamic batch
        dassm.pointwise(conv, small)
    assert calls == [(3, 16, 8, 32), (1, 16, 8, 32), (2, 16, 8, 32)]
    monkeypatch.setenv("OPENREC_POINTWISE_CPU_GEMM_ROWS", "0")  # the switch: never the GEMM
    dassm.pointwise(conv, small)
    assert calls[-1] == (2, 16, 8, 32)
    monkeypatch.setenv("OPENREC_POINTWISE_CPU_GEMM_ROWS", "many")
    with pytest.raises(ValueError, match="OPENREC_POINTWISE_CPU_GEMM_ROWS"):
        dassm.pointwise(conv, small)


def test_layer_norm_is_nn_layer_norm_on_cpu():
    from openrec.modeling.common import LayerNorm, LayerNorm2d
    torch.manual_seed(0)
    norm = LayerNorm(6, eps=1e-6)
    ref = torch.nn.LayerNorm(6, eps=1e-6)
    ref.load_state_dict(norm.state_dict())
    x = torch.randn(4, 5, 6)
    torch.testing.assert_close(norm(x), ref(x), rtol=0, atol=0)
    m = torch.randn(2, 6, 3, 4)
    torch.testing.assert_close(LayerNorm2d(6)(m), torch.nn.functional.layer_norm(m.permute(0, 2, 3, 1), (6,)).permute(0, 3, 1, 2))


@pytest.mark.parametrize("optimizer", ["fused", "foreach"])
def test_layer_norm_bf16_copies_follow_every_optimizer_step(optimizer):
    # The bf16 copies of weight and bias are cached for inference. Fused AdamW updates parameters
    # without bumping their version counters; a cache keyed on versions alone once served the
    # step-1000 weights to every later evaluation of a training run.
    from openrec.modeling.common import LayerNorm
    norm = LayerNorm(8).eval()
    opt = torch.optim.AdamW(norm.parameters(), lr=0.1, **{optimizer: True})
    with torch.no_grad():
        before = norm._bf16_affine()
        assert norm._bf16_affine()[0] is before[0]  # cached while nothing changes
    for p in norm.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    with torch.no_grad():
        weight, bias = norm._bf16_affine()
    assert torch.equal(weight, norm.weight.detach().to(torch.bfloat16)) and not torch.equal(weight, before[0])
    assert torch.equal(bias, norm.bias.detach().to(torch.bfloat16))
    norm.load_state_dict({"weight": torch.full((8,), 3.0), "bias": torch.zeros(8)})
    with torch.no_grad():
        assert torch.equal(norm._bf16_affine()[0], torch.full((8,), 3.0, dtype=torch.bfloat16))


def test_attention_helper_on_cpu_is_sdpa_and_leaves_the_backend_flags_alone(monkeypatch):
    from openrec.modeling import common
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 5, 8), torch.randn(3, 2, 7, 8), torch.randn(3, 2, 7, 8)
    mask = torch.rand(3, 1, 1, 7) > 0.3
    mask[..., 0] = True
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def watched(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(common.F, "scaled_dot_product_attention", watched)
    out = common.attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(out, scores.softmax(-1) @ v, rtol=1e-5, atol=1e-6)
    assert seen == [torch.backends.cuda.cudnn_sdp_enabled()]
