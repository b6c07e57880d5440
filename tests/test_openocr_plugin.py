"""The OpenOCR plug-in under a stand-in ``openrec`` package that shadows ours, as in an OpenOCR checkout."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STAND_IN_ENCODERS = '''
from importlib import import_module

name_to_module = {
    "SVTRv2LNConvTwo33": ".svtrv2_lnconv_two33",
    "SVTRv2Mamba": "svtrv2mamba_ocr.encoder",   # the one added line
}


def build_encoder(config):
    config = dict(config)
    name = config.pop("name")
    module = import_module(name_to_module[name], __package__)
    return getattr(module, name)(**config)
'''

CHECK = '''
import sys, torch
import openrec
from openrec.modeling.encoders import build_encoder
assert openrec.__file__.startswith(sys.argv[1]), openrec.__file__   # OpenOCR's package, not ours
cfg = {"name": "SVTRv2Mamba", "in_channels": 3, "max_sz": [32, 128], "dims": [64, 128, 256], "depths": [1, 2, 2],
       "num_heads": [2, 4, 8], "mixer": [["Conv"], ["Conv", "Mamba"], ["Mamba", "FGlobal"]],
       "local_k": [[5, 5], [5, 5], [-1, -1]], "sub_k": [[1, 1], [2, 1], [-1, -1]], "use_pos_embed": False,
       "last_stage": False, "feat2d": True, "num_convs": [[2], [2, 2], [2, 2]], "kernel_sizes": [[3], [3, 3], [3, 3]],
       "qk_scale": None, "pope_bias": False, "drop_path_rate": 0.1, "last_drop": 0.1, "eps": 1e-6}
enc = build_encoder(cfg)
out = enc(torch.randn(2, 3, 32, 128))
assert out.shape == (2, 256, 4, 32) and enc.out_channels == 256, out.shape
assert "A_log" in enc.no_weight_decay()
mods = [m for m in sys.modules if m.startswith("openrec.")]
assert all(not sys.modules[m].__file__ or sys.modules[m].__file__.startswith(sys.argv[1]) for m in mods), mods
try:
    build_encoder(dict(cfg, drop_rat=0.1))
except ValueError as e:
    assert "unknown key 'drop_rat'" in str(e), e
else:
    raise AssertionError("a typo key was accepted")
print("ok")
'''


def test_plugin_builds_our_encoder_inside_an_openocr_like_checkout(tmp_path):
    pkg = tmp_path / "openrec" / "modeling" / "encoders"
    pkg.mkdir(parents=True)
    (tmp_path / "openrec" / "__init__.py").write_text("# OpenOCR's own package\n")
    (tmp_path / "openrec" / "modeling" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text(textwrap.dedent(STAND_IN_ENCODERS))
    (tmp_path / "check.py").write_text(CHECK)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    res = subprocess.run([sys.executable, str(tmp_path / "check.py"), str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout + res.stderr
