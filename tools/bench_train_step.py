"""Time the model's train step (fwd + loss + bwd + AdamW) on random images, without the data pipeline.

    python tools/bench_train_step.py --c CFG [--batch 128 --height 32 --width 128 --steps 30 --amp bf16]

CUDA events around each step after warm-up; prints the median ms and img/s. On CPU, wall clock.

--trainer times the trainer's own step instead (grad clipping, non-finite guard, scheduler, the config's
optimizer), by wall clock over all steps, twice: with the host checking each step for a non-finite
loss (a GPU synchronisation per step) and with the check on the device (the CUDA default; needs
the fused optimizer, so on CPU only the first is timed).
"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402

from openrec.cli import config_parser, load_config_from_args  # noqa: E402
from openrec.engine.describe import sample_label_batch  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.text import charset_from_config  # noqa: E402
from openrec.losses import build_loss  # noqa: E402
from openrec.modeling import build_model  # noqa: E402
from openrec.text import build_label_encoder  # noqa: E402


def main(argv=None) -> int:
    p = config_parser(__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    p.add_argument("--trainer", action="store_true", help="time Trainer.train_step (see above)")
    args = p.parse_args(argv)
    tune_malloc()  # reuse freed tensor memory (openrec/engine/host_memory.py)
    cfg = load_config_from_args(args)
    if args.trainer:
        return bench_trainer_step(cfg, args)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    charset = charset_from_config(cfg)
    model = build_model(cfg["Architecture"], charset).to(dev).train()
    loss_fn = build_loss(cfg["Loss"], charset)
    batch = sample_label_batch(build_label_encoder(cfg["LabelEncode"], charset), args.batch)
    batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}
    images = torch.randn(args.batch, 3, args.height, args.width, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    times = []
    for i in range(args.steps + 5):
        if dev.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(model(images, batch), batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            ms = 1000 * (time.perf_counter() - t0)
        if i >= 5:
            times.append(ms)
    med = statistics.median(times)
    print(f"{os.path.basename(args.config)} train step B{args.batch} {args.height}x{args.width} amp={args.amp} on {dev}: "
          f"{med:.1f} ms median, {1000 * args.batch / med:.0f} img/s")
    return 0


def bench_trainer_step(cfg: dict, args) -> int:
    import tempfile

    from openrec.engine.trainer import Trainer
    cfg = dict(cfg)
    cfg.pop("Eval", None)
    with tempfile.TemporaryDirectory() as out:
        cfg["Global"] = dict(cfg.get("Global", {}), output_dir=out, use_tensorboard=False, plot=False,
                             use_amp=args.amp != "none", amp_dtype="fp16" if args.amp == "fp16" else "bf16")
        cfg["Train"] = dict(cfg["Train"], num_workers=0)
        trainer = Trainer(cfg)
        batch = sample_label_batch(trainer.label_encoder, args.batch)
        batch["image"] = torch.randn(args.batch, 3, args.height, args.width)
        if trainer.device.type == "cuda":
            batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        # the device-side check needs the fused optimizer (the CUDA default); elsewhere only the host check runs
        for on_device in (False, True) if trainer.skip_on_device else (False,):
            trainer.skip_on_device = on_device
            for _ in range(5):
                trainer.train_step(batch)
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step(batch)
            sync()
            ms = 1000 * (time.perf_counter() - t0) / args.steps
            print(f"{os.path.basename(args.config)} trainer step B{args.batch} {args.height}x{args.width} amp={args.amp} "
                  f"on {trainer.device}, non-finite check {'on the device' if on_device else 'by the host'}: "
                  f"{ms:.1f} ms, {1000 * args.batch / ms:.0f} img/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
