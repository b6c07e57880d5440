"""Read text from word images: a file, a folder or a glob.

    python tools/infer_rec.py --image IMG_OR_DIR_OR_GLOB [...]            # the released model, on CPU
    python tools/infer_rec.py --model RELEASE_DIR --image ...               # another release folder
    python tools/infer_rec.py --c CFG --o Global.checkpoints=PATH --image IMG_OR_DIR_OR_GLOB [...]
    python tools/infer_rec.py --c CFG --onnx model.onnx --image ...     # onnxruntime (tools/export_onnx.py)

Prints ``path<TAB>text<TAB>confidence`` per image; unreadable files get one error line each while
the others are still read. The exit status is the number of files that failed (capped at 100).
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402

from openrec.config import ConfigError  # noqa: E402
from openrec.cli import add_model_arg, config_parser, model_config_from_args  # noqa: E402
from openrec.engine.checkpoint import CheckpointError  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.engine.infer import TextRecognizer, expand_inputs  # noqa: E402


def main(argv=None) -> int:
    p = config_parser(__doc__, config_required=False)  # without --c: the released model (--model)
    add_model_arg(p)
    p.add_argument("--image", nargs="+", required=True, help="image files, folders or glob patterns")
    p.add_argument("--device", default="cpu")
    p.add_argument("--onnx", default=None, help="run this exported model with onnxruntime instead of PyTorch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cuda-graphs", action="store_true",
                   help="replay the forward from a CUDA graph per input shape (low batch-1 latency; needs --device cuda)")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype on CUDA")
    args = p.parse_args(argv)
    tune_malloc()  # reuse freed tensor memory (openrec/engine/host_memory.py)
    try:
        config, checkpoint = model_config_from_args(args)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        recognizer = TextRecognizer(config, checkpoint, args.device, onnx_path=args.onnx, cuda_graphs=args.cuda_graphs,
                                    amp_dtype=amp)
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 100
    paths = expand_inputs(args.image)
    if not paths:
        print("error: no images found", file=sys.stderr)
        return 100
    failed = 0
    for path, text, conf, error in recognizer.read_files(paths, args.batch_size):
        if error:
            failed += 1
            print(f"{path}\terror: {error}", file=sys.stderr)
        else:
            print(f"{path}\t{text}\t{conf:.4f}")
    return min(failed, 100)


if __name__ == "__main__":
    sys.exit(main())
