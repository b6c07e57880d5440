"""Captures the encoder for six input shapes beside a thread that pins and frees host memory, as the
DataLoader's pin-memory thread does, in one CUDA capture mode per process (a failed capture can leave
the process's CUDA state unusable; perf note 32):

    python scripts/capture_modes_check.py thread_local   # what GraphedTrainForward uses: 6 captured
    python scripts/capture_modes_check.py global         # CUDA's default: the capture is invalidated
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import openrec.engine.train_graphs as train_graphs  # noqa: E402
from tests.gpu.test_train_graphs import capture_beside_a_pinning_thread  # noqa: E402


def main(mode: str) -> int:
    if mode not in ("global", "thread_local"):
        raise SystemExit(f"mode must be 'global' or 'thread_local', got {mode!r}")
    train_graphs.CAPTURE_ERROR_MODE = mode  # "global": CUDA's (and make_graphed_callables') default
    try:
        captured, errors = capture_beside_a_pinning_thread()
    except Exception as error:  # noqa: BLE001 - the result being measured
        print(f"{mode}: capture failed: {type(error).__name__}: {str(error).splitlines()[0]}")
        return 1
    print(f"{mode}: {captured} shapes captured, {len(errors)} errors in the pinning thread")
    return 0 if captured == 6 and not errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "thread_local"))
