"""Small shared fixtures for the model tests."""
import copy
import importlib.util
import os

TINY_ENCODER = {
    "name": "SVTRv2Mamba",
    "dims": [32, 64, 96],
    "depths": [1, 1, 2],
    "num_heads": [2, 2, 3],
    "mixer": [["Conv"], ["Mamba"], ["Mamba", "Global"]],
    "sub_k": [[1, 1], [2, 1]],
    "drop_path_rate": 0.0,
    "feat2d": True,
}

HEADS = {
    "CTC": {"name": "CTCDecoder"},
    "RCTC": {"name": "RCTCDecoder"},
    "GTC": {"name": "GTCDecoder", "ctc_decoder": {"name": "RCTCDecoder"},
            "gtc_decoder": {"name": "SMTRDecoder", "num_layer": 1, "drop_path_rate": 0.0}, "infer_gtc": True},
}
LOSSES = {"CTC": {"name": "CTCLoss"}, "RCTC": {"name": "CTCLoss"}, "GTC": {"name": "GTCLoss", "ctc_weight": 1.0}}
LABELS = {"CTC": {"name": "CTCLabelEncode"}, "RCTC": {"name": "CTCLabelEncode"}, "GTC": {"name": "GTCLabelEncode"}}


def tiny_arch(head: str = "RCTC", **encoder_overrides) -> dict:
    enc = copy.deepcopy(TINY_ENCODER)
    enc.update(encoder_overrides)
    return {"Encoder": enc, "Decoder": copy.deepcopy(HEADS[head])}


def load_script(*parts: str):
    """A script of the repository (e.g. "tools", "bench_rec.py") imported as a module, not run."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), *parts)
    spec = importlib.util.spec_from_file_location(parts[-1].removesuffix(".py"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
