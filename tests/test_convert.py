"""Checkpoint import: state_dicts with the names and shapes of ../shared/compat (random values)."""
import os

import pytest
import torch

from openrec.config import load_config
from openrec.engine.convert import convert_state_dict, fold_res_dwc
from openrec.modeling import build_model

COMPAT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "compat")
BASE = ["Architecture.Decoder.gtc_decoder=null"]


def _tsv_state(name):
    path = os.path.join(COMPAT, name)
    if not os.path.isfile(path):
        pytest.skip(f"{path} not present")
    gen = torch.Generator().manual_seed(0)
    state = {}
    for line in open(path):
        if line.startswith("#"):
            continue
        key, shape = line.rstrip("\n").split("\t")
        shape = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
        state[key] = torch.tensor(0) if not shape else torch.randn(shape, generator=gen) * 0.05
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1
    return state


def _model(cfg):
    torch.manual_seed(1)
    return build_model(load_config(f"configs/rec/svtrv2/{cfg}", BASE)["Architecture"]).eval()


def test_openocr_svtrv2_b_into_attention_twin_every_tensor_lands():
    src = _tsv_state("openocr_svtrv2_base_rctc.tsv")
    model = _model("svtrv2_base_gtc_rctc.yml")
    state, report = convert_state_dict(src, "openocr", model)
    assert len(report["taken"]) == len(src) and not report["fresh"] and not report["dropped"]
    model.load_state_dict(state, strict=True)
    # the FGlobal flatten module shifts OpenOCR's numbering: its block 3 is our block 2
    assert torch.equal(model.state_dict()["encoder.stages.1.blocks.2.mixer.qkv.weight"],
                       src["encoder.stages.1.blocks.3.mixer.qkv.weight"])
    assert torch.equal(model.state_dict()["decoder.ctc_decoder.w_atten_block.mixer.qkv.weight"], src["decoder.w_atten_block.attn.qkv.weight"])


def test_seed_svtrv2mamba_into_ours_every_tensor_lands():
    src = _tsv_state("seed_svtrv2mamba_base_rctc.tsv")
    model = _model("svtrv2_mamba_base_gtc_rctc.yml")
    state, report = convert_state_dict(src, "seed", model)
    constants = [k for k in src if k.endswith("conv_constant")]
    assert len(report["taken"]) == len(src) - len(constants) and not report["fresh"] and not report["dropped"]
    model.load_state_dict(state, strict=True)
    assert torch.equal(state["encoder.stages.2.blocks.0.token_mixer.A_log"], src["encoder.stages.2.blocks.0.token_mixer.A_logs"])


@pytest.mark.parametrize("constant", ["delta", "random"])
def test_res_dwc_folding_preserves_the_function(constant):
    torch.manual_seed(0)
    dim = 8
    weight, bias = torch.randn(dim, 1, 3, 3), torch.randn(dim)
    k = torch.zeros(1, 1, 3, 3)
    if constant == "delta":
        k[..., 1, 1] = 1
    else:
        k = torch.randn(1, 1, 3, 3)
    x = torch.randn(2, dim, 5, 7)
    fork = torch.nn.functional.conv2d(x, weight + k, bias, padding=1, groups=dim)
    ours = x + torch.nn.functional.conv2d(x, fold_res_dwc(weight, k), bias, padding=1, groups=dim)
    torch.testing.assert_close(ours, fork, rtol=1e-5, atol=1e-5)


def test_openocr_into_svtrv2mamba_takes_the_shared_parts_and_agrees_where_they_coincide():
    src = _tsv_state("openocr_svtrv2_base_rctc.tsv")
    twin, mamba = _model("svtrv2_base_gtc_rctc.yml"), _model("svtrv2_mamba_base_gtc_rctc.yml")
    twin.load_state_dict(convert_state_dict(src, "openocr", twin)[0])
    state, report = convert_state_dict(src, "openocr", mamba)
    mamba.load_state_dict(state)
    assert not any("token_mixer" in k or "pos_embed" in k for k in report["taken"])  # DA-Mamba starts fresh
    assert any(k.startswith("encoder.stages.1.blocks.2.token_mixer") for k in report["fresh"])
    assert any(".mixer.qkv" in k for k in report["dropped"])  # the attention blocks it replaces
    assert {"decoder.ctc_decoder.fc.weight", "encoder.pope.patch_embed.0.conv.weight", "encoder.stages.0.downsample.conv.weight",
            "encoder.stages.1.blocks.1.mixer.1.weight"} <= set(report["taken"])
    x = torch.randn(2, 3, 32, 128)
    with torch.no_grad():  # patch embed, stage 0 and its downsampler coincide
        a = twin.encoder.stages[0](twin.encoder.pope(x), (8, 32))
        b = mamba.encoder.stages[0](mamba.encoder.pope(x), (8, 32))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
