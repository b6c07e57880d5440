"""The blocks' flat CPU inference forwards (openrec/modeling/encoders/dassm_cpu.py for the DA-Mamba
block, openrec/modeling/cpu_flat.py for the attention block): the same bits as the layered forwards,
and taken only where those would make the same calls."""
import pytest
import torch

import openrec.modeling.common as common
import openrec.modeling.encoders.dassm as dassm
from openrec.modeling.encoders import SVTRv2Mamba
from openrec.modeling.common import Block
from openrec.modeling.encoders.dassm import DASSMBlock
from openrec.ops import export_formulation
from openrec.ops.kernels import has_cpu_kernel

needs_cpu_kernels = pytest.mark.skipif(
    not all(has_cpu_kernel(op) for op in ("openrec::dwconv3x3", "openrec::das_sample", "openrec::selective_scan")),
    reason="the C++ CPU kernels are not built")


def _trained_looking(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BatchNorm statistics and DAS offsets (not the identity start), eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "offset" in name or "A_log" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return module.eval()


def _count_calls(monkeypatch, module, name: str) -> list:
    """Replaces module.name (a flat forward) by a wrapper that records each call's input shape."""
    calls = []
    original = getattr(module, name)

    def counting(block, x):
        calls.append(tuple(x.shape))
        return original(block, x)
    monkeypatch.setattr(module, name, counting)
    return calls


def _flat_then_layered(model, x, switch: str, monkeypatch):
    """model(x) without gradients, with the flat forwards and then with switch off (left unset after)."""
    with torch.no_grad():
        flat = model(x)
        monkeypatch.setenv(switch, "0")
        layered = model(x)
    monkeypatch.delenv(switch)
    return flat, layered


@pytest.fixture
def flat_calls(monkeypatch):
    """The DA-Mamba block calls that took the flat forward."""
    return _count_calls(monkeypatch, dassm, "dassm_block_cpu_inference")


@needs_cpu_kernels
@pytest.mark.parametrize("shape", [
    (1, 128, 8, 32),   # batch 1: the 1x1 convolutions as GEMMs
    (3, 48, 5, 7),     # odd map, 48 channels (a vector tail in the kernels)
    (4, 32, 9, 16),    # 576 pixels: above the GEMM limit, oneDNN's convolution
    (2, 16, 1, 1),     # 1x1 maps: no channels-last view, the convolution again
])
def test_flat_forward_gives_the_layered_forwards_bits(shape, monkeypatch, flat_calls):
    torch.manual_seed(sum(shape))
    block = _trained_looking(DASSMBlock(shape[1], head_dim=16), seed=sum(shape))
    x = torch.randn(shape).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        flat = block(x)
        monkeypatch.setenv("OPENREC_DASSM_CPU_FLAT", "0")
        layered = block(x)
    assert flat_calls == [shape]  # the first call only
    assert torch.equal(flat, layered)
    assert flat.is_contiguous(memory_format=torch.channels_last) == layered.is_contiguous(memory_format=torch.channels_last)


@needs_cpu_kernels
def test_a_mamba_encoder_reads_the_same_bits_with_and_without_the_flat_forward(monkeypatch, flat_calls):
    torch.manual_seed(0)
    model = _trained_looking(SVTRv2Mamba(dims=(32, 64), depths=(2, 2), num_heads=(2, 4),
                                         mixer=[["Conv", "Mamba"], ["Mamba", "Mamba"]]), seed=1)
    flat, layered = _flat_then_layered(model, torch.randn(2, 3, 32, 64), "OPENREC_DASSM_CPU_FLAT", monkeypatch)
    assert len(flat_calls) == 3 and torch.equal(flat, layered)


@needs_cpu_kernels
def test_the_flat_forward_is_taken_only_where_the_layered_one_takes_the_same_kernels(monkeypatch, flat_calls):
    block = _trained_looking(DASSMBlock(32, head_dim=16), seed=2)
    x = torch.randn(1, 32, 4, 8).to(memory_format=torch.channels_last)
    with torch.no_grad():
        block(x)
    assert len(flat_calls) == 1
    cases = {
        "training": lambda: block.train()(x),
        "gradients wanted": lambda: torch.enable_grad()(block)(x),
        "float64": lambda: block.double()(x.double()),
        "bf16 autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)(block)(x),
    }
    for name, run in cases.items():
        block.float().eval()
        with torch.no_grad():
            run()
        assert len(flat_calls) == 1, name
    block.float().eval()
    with torch.no_grad(), export_formulation():
        block(x)
    for env, value in (("OPENREC_DWCONV", "torch"), ("OPENREC_DASSM_CPU_FLAT", "0")):
        monkeypatch.setenv(env, value)
        with torch.no_grad():
            block(x)
        monkeypatch.delenv(env)
    assert len(flat_calls) == 1
    seen = []  # a hook on a submodule must fire: the layered forward
    handle = block.token_mixer.da_scan.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.no_grad():
        block(x)
    handle.remove()
    assert seen == [(1, 4, 8, 32)] and len(flat_calls) == 1
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: seen.append(None))
    with torch.no_grad():
        block(x)
    handle.remove()
    assert len(flat_calls) == 1 and len(seen) > 1
    with torch.no_grad():
        block(x)
    assert len(flat_calls) == 2  # hooks gone: the flat forward again
    monkeypatch.setenv("OPENREC_DASSM_CPU_FLAT", "yes")
    with torch.no_grad(), pytest.raises(ValueError, match="OPENREC_DASSM_CPU_FLAT must be 0 or 1"):
        block(x)


@pytest.fixture
def flat_attention_calls(monkeypatch):
    """The attention block calls that took the flat forward."""
    return _count_calls(monkeypatch, common, "attention_block_cpu_inference")


@pytest.mark.parametrize("prenorm", [False, True])  # SVTRv2's post-norm blocks; the RCTC head's pre-norm one
@pytest.mark.parametrize("shape,heads", [((1, 256, 128), 4), ((3, 7, 48), 2)])
def test_flat_attention_block_gives_the_layered_forwards_bits(prenorm, shape, heads, monkeypatch, flat_attention_calls):
    torch.manual_seed(shape[1])
    block = Block(shape[2], heads, prenorm=prenorm, eps=1e-6).eval()
    with torch.no_grad():
        for p in block.parameters():  # LayerNorms away from (1, 0)
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(shape)
    with torch.inference_mode():
        flat = block(x)
        monkeypatch.setenv("OPENREC_ATTENTION_CPU_FLAT", "0")
        layered = block(x)
    assert flat_attention_calls == [shape]
    assert torch.equal(flat, layered)


def test_the_attention_twin_reads_the_same_bits_and_the_flat_block_keeps_its_gates(monkeypatch, flat_attention_calls):
    torch.manual_seed(0)
    model = SVTRv2Mamba(dims=(32, 64), depths=(2, 2), num_heads=(2, 4), mixer=[["Conv", "Global"], ["Global", "FGlobal"]]).eval()
    x = torch.randn(2, 3, 32, 64)
    flat, layered = _flat_then_layered(model, x, "OPENREC_ATTENTION_CPU_FLAT", monkeypatch)
    assert torch.equal(flat, layered) and len(flat_attention_calls) == 3
    with torch.no_grad():
        model.train()(x)                                        # training
        model.eval()
        torch.autocast("cpu", dtype=torch.bfloat16)(model)(x)  # autocast
        handle = model.stages[0].blocks[1].mlp.register_forward_hook(lambda *a: None)
        model(x)                                                # a hook below the block
        handle.remove()
    model(x)                                                    # gradients wanted
    assert len(flat_attention_calls) == 3 + 2  # the block without the hook, in the hooked run
    monkeypatch.setenv("OPENREC_ATTENTION_CPU_FLAT", "no")
    with torch.no_grad(), pytest.raises(ValueError, match="OPENREC_ATTENTION_CPU_FLAT must be 0 or 1"):
        model(x)
