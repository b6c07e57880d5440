"""Side-by-side speed of two recognisers (e.g. SVTRv2Mamba vs its attention twin) in one process.

    python tools/bench_rec.py --configs configs/rec/svtrv2/svtrv2_mamba_tiny_gtc_rctc.yml \
        configs/rec/svtrv2/svtrv2_tiny_gtc_rctc.yml --rctc --json output/bench_rec_tiny.json

Rows: train step (fwd + loss + bwd + AdamW) img/s in fp32 and bf16 autocast at B128 3x32x128 and
B32 3x32x384 (eager, and with the encoder's forward and backward replayed from CUDA graphs as
``Global.cuda_graphs`` trains); inference img/s at B128 (fp32, bf16; eager, and replayed from a CUDA graph as
``TextRecognizer(cuda_graphs=True)`` runs it); batch-1 latency (ms; eager and graph); and a
long-text sweep (inference bf16, W = 128..2048 at a fixed batch). ``--shape-mix`` (a JSON from
``scripts/recipe_shape_mix.py``) replaces these rows by the train step (bf16, CUDA-graphed; fp32
eager on CPU) at each batch shape of a training recipe, plus their mean weighted by how often each
shape occurs: the two families compared on the recipe's own mix. CUDA events after warm-up,
median of --iters. The last column is first/second (>1: the first is faster). On CPU
(fewer, smaller rows) wall clock is used. ``--rctc`` swaps each config's head for the plain RCTC
head and CTC loss (the setting of the perf anchors); ``--o`` overrides apply to both configs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import torch  # noqa: E402

from openrec.config import apply_overrides, load_config  # noqa: E402
from openrec.engine.describe import describe_cpu, describe_cpu_run, sample_label_batch  # noqa: E402
from openrec.engine.host_memory import tune_malloc  # noqa: E402
from openrec.engine.infer import CudaGraphForward  # noqa: E402
from openrec.engine.step_profiler import LAUNCH_EVENTS  # noqa: E402
from openrec.engine.train_graphs import GraphedTrainForward  # noqa: E402
from openrec.losses import build_loss  # noqa: E402
from openrec.modeling import build_model  # noqa: E402
from openrec.text import build_label_encoder, charset_from_config  # noqa: E402

RCTC = {"Architecture.Decoder": {"name": "RCTCDecoder"}, "Loss": {"name": "CTCLoss", "zero_infinity": True},
        "LabelEncode": {"name": "CTCLabelEncode"}, "PostProcess": {"name": "CTCLabelDecode"}}


def load(path: str, rctc: bool, overrides: list[str]) -> dict:
    cfg = load_config(path)
    if rctc:
        cfg["Architecture"]["Decoder"] = dict(RCTC["Architecture.Decoder"])
        for key in ("Loss", "LabelEncode", "PostProcess"):
            cfg[key] = dict(RCTC[key])
    return apply_overrides(cfg, overrides) if overrides else cfg


class Timer:
    def __init__(self, device: torch.device, iters: int, warmup: int):
        self.device, self.iters, self.warmup = device, iters, warmup

    def median_ms(self, fn) -> float:
        times = []
        for i in range(self.warmup + self.iters):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                ms = start.elapsed_time(end)
            else:
                t0 = time.perf_counter()
                fn()
                ms = 1000 * (time.perf_counter() - t0)
            if i >= self.warmup:
                times.append(ms)
        return statistics.median(times)


class Subject:
    """One model with its loss, label batch and optimizer, ready to time."""

    def __init__(self, cfg: dict, device: torch.device):
        self.cfg, self.device = cfg, device
        charset = charset_from_config(cfg)
        self.model = build_model(cfg["Architecture"], charset).to(device)
        self.loss_fn = build_loss(cfg["Loss"], charset)
        self.encoder = build_label_encoder(cfg["LabelEncode"], charset)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)  # as the trainer
        self.forward = self.model
        self.params = sum(p.numel() for p in self.model.parameters())

    def train_step_fn(self, batch_size: int, width: int, amp, graphs: bool = False, height: int = 32):
        """graphs: the encoder's forward and backward replayed from CUDA graphs, as Global.cuda_graphs trains."""
        batch = sample_label_batch(self.encoder, batch_size)
        batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        images = torch.randn(batch_size, 3, height, width, device=self.device)
        self.model.train()
        forward = GraphedTrainForward(self.model) if graphs else self.forward

        def step():
            with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None,
                                cache_enabled=not graphs):
                loss = self.loss_fn(forward(images, batch), batch)["loss"]
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return step

    def infer_fn(self, batch_size: int, width: int, amp):
        images = torch.randn(batch_size, 3, 32, width, device=self.device)
        self.model.eval()

        def run():
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=amp or torch.float32,
                                                        enabled=amp is not None):
                self.forward(images)
        return run

    def graph_fn(self, batch_size: int, width: int, amp):
        """Inference replayed from a CUDA graph, as TextRecognizer(cuda_graphs=True) runs it."""
        self.model.eval()
        runner = CudaGraphForward(self.model, (batch_size, 3, 32, width), amp_dtype=amp)
        images = torch.randn(batch_size, 3, 32, width, device=self.device)
        return lambda: runner(images)


def rows_for(device: torch.device, quick: bool):
    bf16 = torch.bfloat16
    if device.type == "cpu":
        return ([("train fp32 B16 32x128", "train", 16, 128, None), ("infer fp32 B32 32x128", "infer", 32, 128, None),
                 ("latency fp32 B1 32x128", "latency", 1, 128, None)],
                [128, 512], 4)
    rows = [("train fp32 B128 32x128", "train", 128, 128, None), ("train bf16 B128 32x128", "train", 128, 128, bf16),
            ("train fp32 B32 32x384", "train", 32, 384, None), ("train bf16 B32 32x384", "train", 32, 384, bf16),
            ("train graph fp32 B128 32x128", "train_graph", 128, 128, None),
            ("train graph bf16 B128 32x128", "train_graph", 128, 128, bf16),
            ("train graph fp32 B32 32x384", "train_graph", 32, 384, None),
            ("train graph bf16 B32 32x384", "train_graph", 32, 384, bf16),
            ("infer fp32 B128 32x128", "infer", 128, 128, None), ("infer bf16 B128 32x128", "infer", 128, 128, bf16),
            ("infer graph fp32 B128 32x128", "graph", 128, 128, None),
            ("infer graph bf16 B128 32x128", "graph", 128, 128, bf16),
            ("latency fp32 B1 32x128", "latency", 1, 128, None), ("latency bf16 B1 32x128", "latency", 1, 128, bf16),
            ("latency graph fp32 B1 32x128", "graph", 1, 128, None),
            ("latency graph bf16 B1 32x128", "graph", 1, 128, bf16)]
    if quick:
        rows = [r for r in rows if "fp32" not in r[0] or r[1] == "latency"]
    return rows, [128, 256, 512, 1024, 2048], 64


def load_shape_mix(path: str, min_share: float, batch_scale: float) -> list[dict]:
    """The shapes of a scripts/recipe_shape_mix.py JSON holding at least min_share of the images,
    batches scaled by batch_scale (for the CPU); names what is wrong with a bad file."""
    try:
        with open(path) as fh:
            shapes = json.load(fh)["shapes"]
        total = sum(s["batches"] * s["batch"] for s in shapes)
        kept = [dict(s, batch=max(1, round(s["batch"] * batch_scale)), share=s["batches"] * s["batch"] / total)
                for s in shapes if s["batches"] * s["batch"] >= min_share * total]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        raise SystemExit(f"bench_rec: --shape-mix {path}: not a shape-mix JSON ({type(e).__name__}: {e})") from None
    if not kept:
        raise SystemExit(f"bench_rec: --shape-mix {path}: no shape holds {min_share:.1%} of the images")
    return kept


def measure_mix(subject: Subject, timer: Timer, device, shapes: list[dict]) -> dict:
    """Train step at each shape of the mix; the last row is the mix's img/s: all images of the kept
    shapes over the time their batches take, each shape counted as often as the recipe makes it."""
    cuda = device.type == "cuda"
    out, images, seconds = {}, 0.0, 0.0
    for s in shapes:
        name = f"mix train {'graph bf16' if cuda else 'fp32'} B{s['batch']} {s['height']}x{s['width']}"
        ms = timer.median_ms(subject.train_step_fn(s["batch"], s["width"], torch.bfloat16 if cuda else None,
                                                   graphs=cuda, height=s["height"]))
        out[name] = {"ms": ms, "img_s": 1000 * s["batch"] / ms, "unit": "img/s", "share": s["share"]}
        images += s["batches"] * s["batch"]
        seconds += s["batches"] * ms / 1000
        if cuda:
            torch.cuda.empty_cache()
    share = sum(s["share"] for s in shapes)
    out[f"mix weighted ({len(shapes)} shapes, {share:.0%} of images)"] = {"ms": 1000 * seconds / images,
                                                                        "img_s": images / seconds, "unit": "img/s"}
    return out


def measure(subject: Subject, timer: Timer, device, quick: bool, only: list[str]) -> dict:
    rows, widths, sweep_batch = rows_for(device, quick)
    sweep = [(f"long-text infer B{sweep_batch} 32x{w}", w) for w in widths]
    if only:
        rows = [r for r in rows if any(o in r[0] for o in only)]
        sweep = [(name, w) for name, w in sweep if any(o in name for o in only)]
    out = {}
    for name, kind, batch_size, width, amp in rows:
        if kind in ("train", "train_graph"):
            ms = timer.median_ms(subject.train_step_fn(batch_size, width, amp, graphs=kind == "train_graph"))
        elif kind == "infer":
            ms = timer.median_ms(subject.infer_fn(batch_size, width, amp))
        elif kind == "latency":
            ms = timer.median_ms(subject.infer_fn(1, width, amp))
        else:
            ms = timer.median_ms(subject.graph_fn(batch_size, width, amp))
        out[name] = {"ms": ms, "img_s": 1000 * batch_size / ms, "unit": "ms" if batch_size == 1 else "img/s"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    amp = torch.bfloat16 if device.type == "cuda" else None
    for name, width in sweep:
        ms = timer.median_ms(subject.infer_fn(sweep_batch, width, amp))
        out[name] = {"ms": ms, "img_s": 1000 * sweep_batch / ms, "unit": "img/s"}
    return out


def profile_row(subject: Subject, kind: str, batch_size: int, width: int, amp, height: int = 32, steps: int = 3,
                detail: bool = False) -> None:
    """Prints the top CUDA kernels and the top CPU-side ops of a few calls of one row, and the
    number of kernel launches per call (the eager step is often CPU-bound: launches matter).
    ``detail``: 60 rows with full kernel names, and (eager kinds) the ops grouped by input shape."""
    from torch.profiler import ProfilerActivity, profile
    fn = {"train": lambda: subject.train_step_fn(batch_size, width, amp, height=height),
          "train_graph": lambda: subject.train_step_fn(batch_size, width, amp, graphs=True, height=height),
          "infer": lambda: subject.infer_fn(batch_size, width, amp),
          "graph": lambda: subject.graph_fn(batch_size, width, amp)}[kind]()
    cuda = subject.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []),
                 record_shapes=detail) as prof:
        for _ in range(steps):
            fn()
        sync()
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in LAUNCH_EVENTS)  # a graph replay counts once
    print(f"-- profile: {kind} B{batch_size} {height}x{width} {amp or 'fp32'}: {launches / steps:.0f} kernel launches per call",
          flush=True)
    rows, width_chars = (60, 160) if detail else (22, 58)
    if cuda:
        print(events.table(sort_by="self_cuda_time_total" if detail else "cuda_time_total", row_limit=rows,
                           max_name_column_width=width_chars), flush=True)
    if detail and cuda and not kind.endswith("graph"):
        by_shape = prof.key_averages(group_by_input_shape=True)
        print(by_shape.table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=40,
                             max_shapes_column_width=80), flush=True)
    print(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=58), flush=True)


PROFILE_KINDS = ("train", "train_graph", "infer", "graph")


def parse_profile(spec: str, device: torch.device) -> tuple[str, int, int, torch.dtype | None, int]:
    """``KIND:B:W:DTYPE`` or ``KIND:B:HxW:DTYPE`` -> (kind, batch, width, autocast dtype or None, height);
    names a malformed spec. KIND: train, train_graph (encoder replayed from CUDA graphs), infer, graph
    (inference replayed); a height other than 32 (the recipe's buckets) for the train kinds only."""
    parts = spec.split(":")
    size = parts[2].split("x") if len(parts) == 4 else []
    if len(parts) != 4 or parts[0] not in PROFILE_KINDS or parts[3] not in ("fp32", "bf16") \
            or not (parts[1].isdigit() and len(size) in (1, 2) and all(v.isdigit() for v in size)):
        raise SystemExit(f"bench_rec: --profile {spec!r}: expected ({'|'.join(PROFILE_KINDS)}):BATCH:[HEIGHTx]WIDTH:(fp32|bf16)")
    height = int(size[0]) if len(size) == 2 else 32
    if height != 32 and parts[0] not in ("train", "train_graph"):
        raise SystemExit(f"bench_rec: --profile {spec!r}: only train kinds take a height other than 32")
    amp = torch.bfloat16 if parts[3] == "bf16" else None
    if device.type == "cpu" and amp is not None:
        raise SystemExit("bench_rec: bf16 profiles need a GPU")
    if device.type == "cpu" and parts[0] in ("train_graph", "graph"):
        raise SystemExit(f"bench_rec: {parts[0]} profiles need a GPU (CUDA graphs)")
    return parts[0], int(parts[1]), int(size[-1]), amp, height


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs=2, required=True, metavar="CFG", help="first (e.g. Mamba) and second")
    parser.add_argument("--rctc", action="store_true", help="plain RCTC head + CTC loss for both")
    parser.add_argument("--o", nargs="*", default=[], help="overrides for both configs, e.g. Global.seed=1")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="bf16 rows and latency only")
    parser.add_argument("--rows", nargs="*", default=[], help="only rows whose name contains one of these")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both models (inductor; the custom ops stay opaque kernels)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--shape-mix", default=None, metavar="JSON",
                        help="time the train step at a recipe's batch shapes instead (scripts/recipe_shape_mix.py)")
    parser.add_argument("--mix-min-share", type=float, default=0.005,
                        help="with --shape-mix: skip shapes holding less than this fraction of the images")
    parser.add_argument("--mix-batch-scale", type=float, default=None,
                        help="with --shape-mix: multiply the batch sizes (default 1 on a GPU, 1/16 on CPU)")
    parser.add_argument("--profile", nargs="*", default=None, metavar="KIND:B:[Hx]W:DTYPE",
                        help="profile these calls of each model instead of timing rows, e.g. "
                             "train:128:128:bf16 infer:64:2048:bf16 train_graph:256:40x112:bf16 (no value: train:128:128:bf16)")
    parser.add_argument("--profile-detail", action="store_true",
                        help="with --profile: full kernel names, 60 rows, eager ops grouped by input shape")
    args = parser.parse_args(argv)
    malloc_tuned = tune_malloc()  # reuse freed tensor memory (openrec/engine/host_memory.py)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    profiles = None if args.profile is None else [parse_profile(spec, device) for spec in args.profile or
                                                  ["train:128:128:bf16"]]
    mix = None
    if args.shape_mix:
        scale = args.mix_batch_scale or (1.0 if device.type == "cuda" else 1 / 16)
        mix = load_shape_mix(args.shape_mix, args.mix_min_share, scale)
    torch.backends.cudnn.benchmark = True
    timer = Timer(device, args.iters, args.warmup)
    results, names = [], []
    for path in args.configs:
        torch.manual_seed(0)
        subject = Subject(load(path, args.rctc, args.o), device)
        if args.compile:
            subject.forward = torch.compile(subject.model)
        names.append(os.path.splitext(os.path.basename(path))[0])
        print(f"{names[-1]}: {subject.params / 1e6:.2f}M params", flush=True)
        if profiles is not None:
            for kind, batch_size, width, amp, height in profiles:
                profile_row(subject, kind, batch_size, width, amp, height=height, detail=args.profile_detail)
            del subject
            continue
        results.append(measure_mix(subject, timer, device, mix) if mix else
                       measure(subject, timer, device, args.quick, args.rows))
        del subject
    if profiles is not None:
        return 0
    where = torch.cuda.get_device_name() if device.type == "cuda" else describe_cpu_run(malloc_tuned)
    # Eager GPU rows are bound by the host's launch speed, which differs between lent machines of one GPU kind.
    host_cpu = describe_cpu()
    host = f", host {host_cpu}" if device.type == "cuda" else ""
    print(f"\n{where}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}{host}")
    width = max(34, *(len(row) for row in results[0]))
    print(f"{'row':{width}s} {names[0][:22]:>22s} {names[1][:22]:>22s} {'ratio':>6s}")
    table = []
    for row in results[0]:
        a, b = results[0][row], results[1][row]
        if a["unit"] == "ms":
            ratio, va, vb = b["ms"] / a["ms"], f"{a['ms']:.2f} ms", f"{b['ms']:.2f} ms"
        else:
            ratio, va, vb = a["img_s"] / b["img_s"], f"{a['img_s']:.0f} img/s", f"{b['img_s']:.0f} img/s"
        table.append({"row": row, names[0]: a, names[1]: b, "ratio": ratio})
        print(f"{row:{width}s} {va:>22s} {vb:>22s} {ratio:6.2f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"device": where, "host_cpu": host_cpu, "torch": torch.__version__,
                       "date": time.strftime("%Y-%m-%d"), "configs": args.configs, "rctc": args.rctc, "overrides": args.o, "compile": args.compile,
                       "shape_mix": args.shape_mix,
                       "rows": table}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
