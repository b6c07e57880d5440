"""Export the inference path (encoder + CTC/RCTC head) to ONNX with standard operators.

    python tools/export_onnx.py --c CFG --o Global.checkpoints=PATH --out model.onnx [--bench]
    python tools/export_onnx.py --out model.onnx                  # the released model (openrec/pretrained)
    python tools/export_onnx.py --model RELEASE_DIR --out model.onnx

Dynamic batch, height (32..64, a multiple of 8) and width (a multiple of 4). Checks onnxruntime
against PyTorch at widths 64-384 and batch 1 and 8; --bench times batch-1 CPU latency of both.
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402

from openrec.cli import add_model_arg, config_parser, model_config_from_args  # noqa: E402
from openrec.config import ConfigError  # noqa: E402
from openrec.engine.checkpoint import CheckpointError  # noqa: E402
from openrec.engine.export import InferenceWrapper, export_onnx  # noqa: E402
from openrec.engine.infer import TextRecognizer  # noqa: E402


def _median_ms(fn, runs: int = 30) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main(argv=None) -> int:
    p = config_parser(__doc__, config_required=False)  # without --c: a release folder (--model)
    add_model_arg(p)
    p.add_argument("--out", required=True)
    p.add_argument("--bench", action="store_true")
    args = p.parse_args(argv)
    try:
        config, checkpoint = model_config_from_args(args)
        recognizer = TextRecognizer(config, checkpoint)
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    export_onnx(recognizer.model, args.out)
    import onnxruntime as ort
    session = ort.InferenceSession(args.out, providers=["CPUExecutionProvider"])
    wrapper = InferenceWrapper(recognizer.model)
    worst = 0.0
    for batch in (1, 8):
        for width in (64, 128, 256, 384):
            x = torch.randn(batch, 3, 32, width)
            with torch.no_grad():
                ref = wrapper(x).numpy()
            worst = max(worst, float(abs(session.run(None, {"image": x.numpy()})[0] - ref).max()))
    print(f"wrote {args.out}; onnxruntime vs PyTorch: max |diff| of probabilities {worst:.2e}")
    if args.bench:
        x = torch.randn(1, 3, 32, 128)
        with torch.no_grad():
            torch_ms = _median_ms(lambda: wrapper(x))
        ort_ms = _median_ms(lambda: session.run(None, {"image": x.numpy()}))
        print(f"batch-1 32x128 CPU latency ({torch.get_num_threads()} threads): PyTorch {torch_ms:.2f} ms, "
              f"onnxruntime {ort_ms:.2f} ms")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
