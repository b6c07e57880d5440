"""Train a recognizer from a YAML config.

    python tools/train_rec.py --c configs/rec/svtrv2/svtrv2_mamba_quickstart.yml [--o Global.epoch_num=5 ...]
    torchrun --nproc_per_node=2 tools/train_rec.py --c CFG          # DDP on 2 GPUs (or CPU processes)
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from openrec.config import ConfigError  # noqa: E402
from openrec.cli import config_parser, load_config_from_args  # noqa: E402
from openrec.engine.checkpoint import CheckpointError  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.engine.trainer import Trainer, TrainingStopped  # noqa: E402


def main(argv=None) -> int:
    p = config_parser(__doc__)
    args = p.parse_args(argv)
    tune_malloc()  # reuse freed tensor memory (openrec/engine/host_memory.py)
    try:
        trainer = Trainer(load_config_from_args(args), mode="train")
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = trainer.train()
    except (TrainingStopped, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    best = summary["best"]
    if best and trainer.dist.is_main:
        print(f"best {best['indicator']} {100 * best['value']:.2f}% at step {best['step']}; "
              f"outputs in {trainer.settings.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
