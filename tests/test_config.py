"""Config loading, overrides and the strictness errors of the builders."""
import copy

import pytest
import yaml

from openrec.config import ConfigError, apply_overrides, load_config
from openrec.modeling import build_model
from openrec.text import build_charset
from tests.helpers import tiny_arch

DESIGN = "configs/rec/svtrv2/svtrv2_mamba_gtc_rctc.yml"


def test_overrides_at_depth_three_sharing_a_prefix_all_apply():
    cfg = load_config(DESIGN, [
        "Architecture.Encoder.drop_rate=0.1",
        "Architecture.Encoder.attn_drop_rate=0.2",
        "Architecture.Decoder.gtc_decoder.num_layer=2",
        "Architecture.Encoder.dims.0=32",
        "Train.loader.num_workers=8",
        "Train.loader.batch_size_per_card=64",
        "Global.use_amp=False",
        "Architecture.Encoder.sub_k=[[2, 1], [1, 1]]",
    ])
    enc = cfg["Architecture"]["Encoder"]
    assert enc["drop_rate"] == 0.1 and enc["attn_drop_rate"] == 0.2 and enc["dims"] == [32, 128, 256]
    assert enc["depths"] == [6, 6, 6] and enc["feat2d"] is True  # siblings kept
    assert cfg["Architecture"]["Decoder"]["gtc_decoder"] == {"name": "SMTRDecoder", "num_layer": 2}
    assert cfg["Train"]["loader"] == {"num_workers": 8, "batch_size_per_card": 64}
    assert cfg["Global"]["use_amp"] is False and enc["sub_k"] == [[2, 1], [1, 1]]


def test_base_inheritance_and_replace(tmp_path):
    base = tmp_path / "base.yml"
    base.write_text(yaml.safe_dump({"A": {"x": 1, "y": {"z": 2}}, "B": {"name": "Old", "k": 1}}))
    child = tmp_path / "child.yml"
    child.write_text(yaml.safe_dump({"_BASE_": "base.yml", "A": {"y": {"w": 3}}, "B": {"_REPLACE_": True, "name": "New"}}))
    assert load_config(str(child)) == {"A": {"x": 1, "y": {"z": 2, "w": 3}}, "B": {"name": "New"}}
    loop = tmp_path / "loop.yml"
    loop.write_text("_BASE_: loop.yml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(loop))


def test_override_errors_name_the_key():
    with pytest.raises(ConfigError, match="Section.key=value"):
        apply_overrides({}, ["Global.epoch_num"])
    with pytest.raises(ConfigError, match="dims.9"):
        apply_overrides({"A": {"dims": [1, 2]}}, ["A.dims.9=3"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no/such/config.yml")


def _arch(**encoder):
    arch = tiny_arch("RCTC")
    arch["Encoder"].update(encoder)
    return arch


@pytest.mark.parametrize("arch,match", [
    (_arch(drop_rat=0.1), r"unknown key 'drop_rat'.*did you mean 'drop_rate'"),
    (_arch(dims="64"), r"'dims' = '64' has the wrong type"),
    (_arch(drop_rate="0.1"), r"'drop_rate' = '0.1' has the wrong type \(expected float\)"),
    (_arch(feat2d=1), r"'feat2d' = 1 has the wrong type \(expected bool\)"),
    (_arch(mixer=[["Conv"], ["Mamba"], ["Mamba"]]), r"mixer\[2\] lists 1 mixers but depths\[2\] = 2"),
    (_arch(dims=[32, 64, 104], num_heads=[2, 2, 2]), r"dims\[2\] = 104 is not divisible by head_dim = 16"),
    (_arch(dims=[32, 64, 96], num_heads=[2, 2, 5]), r"dims\[2\] = 96 is not divisible by num_heads\[2\] = 5"),
    (_arch(mixer=[["Conv"], ["Local"], ["Mamba", "Global"]]), r"unknown mixer 'Local' \(accepted: Conv, Mamba, Global"),
    (_arch(depths=[1, 1]), r"depths has 2 entries but dims has 3"),
    (_arch(in_channels=1), r"'in_channels' is set by the builder"),
    (_arch(name="SVTRv3"), r"unknown encoder 'SVTRv3'.*accepted: SVTRv2Mamba"),
])
def test_strict_encoder_errors(arch, match):
    with pytest.raises(ConfigError, match=match):
        build_model(arch)


def test_strict_decoder_and_architecture_errors():
    arch = tiny_arch("GTC")
    arch["Decoder"]["gtc_decoder"]["num_layers"] = 2
    with pytest.raises(ConfigError, match=r"Architecture.Decoder.gtc_decoder \(SMTRDecoder\): unknown key 'num_layers'.*'num_layer'"):
        build_model(arch)
    arch = copy.deepcopy(tiny_arch("RCTC"))
    arch["Neck"] = None
    with pytest.raises(ConfigError, match=r"Architecture: unknown key 'Neck'"):
        build_model(arch)
    arch = tiny_arch("RCTC")
    del arch["Encoder"]["name"]
    with pytest.raises(ConfigError, match="missing 'name'"):
        build_model(arch)


def test_all_shipped_configs_build():
    import glob
    charset = build_charset()
    for path in glob.glob("configs/rec/svtrv2/svtrv2*.yml"):
        cfg = load_config(path)
        model = build_model(cfg["Architecture"], charset)
        assert model.encoder.out_channels == cfg["Architecture"]["Encoder"]["dims"][-1], path
