"""The trainer: one class, one ``train_step``; a reader can follow a step top to bottom.

Config sections: ``Global`` (see settings.py), ``Architecture``, ``Loss``, ``PostProcess``, ``Metric``,
``LabelEncode``, ``Optimizer``, ``LRScheduler``, ``Train`` and ``Eval`` (see openrec/data). Resuming
from ``Global.checkpoints`` continues exactly: same batches, same RNG streams, same loss curve.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import torch
import torch.distributed as dist

from ..config import ConfigError, dump_config
from ..data import build_dataset, build_loader, build_sources, validate_section
from ..losses import build_loss
from ..metrics import build_metric
from ..modeling import build_model
from ..text import build_charset, build_label_encoder, build_postprocess
from .checkpoint import load_checkpoint, load_pretrained, rng_state, save_checkpoint, set_rng_state
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .evaluate import evaluate_sets, format_table
from .guards import NonFiniteGuard, SkipWindow, TrainingStopped
from .logging_utils import RunRecorder, SmoothedValues, setup_logger
from .optim import ModelEMA, build_optimizer, build_scheduler
from .settings import parse_settings
from .step_profiler import StepProfiler
from .train_graphs import GraphedTrainForward

__all__ = ["Trainer", "TrainingStopped"]




class Trainer:
    def __init__(self, config: dict, mode: str = "train"):
        self.config = config
        self.mode = mode
        self.settings, opt_cfg, sched_cfg = parse_settings(config)
        s = self.settings
        # Evaluation needs no loss or label encoder, so released inference configs can be evaluated.
        required = ("Architecture", "Loss", "PostProcess", "LabelEncode") if mode == "train" else ("Architecture", "PostProcess")
        for section in required:
            if section not in config:
                raise ConfigError(f"missing config section {section!r}")

        # ---- devices, processes, determinism ----------------------------------------------------
        want_cuda = s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise ConfigError("Global.device is 'cuda' but no CUDA device is available")
        self.dist: DistInfo = init_distributed("cuda" if want_cuda else "cpu") if mode == "train" else DistInfo()
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if want_cuda else "cpu")
        if s.num_threads:
            torch.set_num_threads(s.num_threads)
        if s.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=False)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.manual_seed(s.seed + self.dist.rank)
        if mode == "train":
            self._check_output_dir(s.output_dir)
        self.logger = setup_logger(s.output_dir if mode == "train" else None, self.dist.is_main)

        # ---- model, loss, text ------------------------------------------------------------------
        self.charset = build_charset(s.character_dict_path, s.use_space_char, s.max_text_length)
        torch.manual_seed(s.seed)  # identical initial weights on every rank
        self.model = build_model(config["Architecture"], self.charset).to(self.device)
        self.raw_model = self.model  # the unwrapped model (self.model becomes the DDP wrapper under DDP)
        torch.manual_seed(s.seed + self.dist.rank)
        self.loss_fn = build_loss(config["Loss"], self.charset) if "Loss" in config else None
        self.post = build_postprocess(config["PostProcess"], self.charset)
        self.metric = build_metric(config.get("Metric", {"name": "RecMetric"}))
        self.label_encoder = build_label_encoder(config["LabelEncode"], self.charset) if "LabelEncode" in config else None
        self.amp_dtype = torch.bfloat16 if s.amp_dtype == "bf16" else torch.float16
        self.use_amp = (s.use_amp and self.device.type == "cuda") or (s.cpu_amp and self.device.type == "cpu")
        if self.use_amp and self.device.type == "cpu":
            self.amp_dtype = torch.bfloat16

        # ---- data -------------------------------------------------------------------------------
        has_eval = bool(config.get("Eval") and config["Eval"].get("datasets"))
        self.eval_loaders = self._build_eval_loaders() if has_eval else {}
        self.state = {"epoch": 0, "batch_in_epoch": 0, "global_step": 0, "best": None, "bad_steps_total": 0}
        self._last_eval_step = self._last_save_step = None
        self.skipped: dict[str, int] = {}
        if mode != "train":
            self.ema = None
            return
        train_cfg = validate_section(config.get("Train"), "Train")
        self.train_dataset = build_dataset(train_cfg, self.charset, self.label_encoder, train=True, seed=s.seed)
        self.train_loader = build_loader(self.train_dataset, train_cfg, True, s.seed, self.dist.rank, self.dist.world_size,
                                         pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = len(self.train_loader.batch_sampler.global_batches(0))
        self.total_steps = s.max_steps or s.epoch_num * self.steps_per_epoch

        # ---- optimisation -----------------------------------------------------------------------
        self.optimizer = build_optimizer(self.model, opt_cfg)
        self.scheduler = build_scheduler(self.optimizer, sched_cfg, self.total_steps, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16
                                           and self.device.type == "cuda")
        self.ema = ModelEMA(self.model, s.ema_decay) if s.ema_decay else None
        # A fused optimizer (the CUDA default) skips the update of a non-finite step on the device, so the
        # step never waits for the GPU; otherwise (fp16 with its scaler, unfused) the host checks each step.
        self.skip_on_device = bool(self.optimizer.defaults.get("fused")) and not self.scaler.is_enabled()
        self.non_finite = NonFiniteGuard(s.max_bad_steps, self.device if self.skip_on_device else torch.device("cpu"),
                                         os.path.join(s.output_dir, "latest.pth"), self.logger)
        self._resume_or_pretrain()
        if self.dist.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None)
        # Global.compile: the training forward runs through torch.compile (fused elementwise and norm
        # kernels, far fewer launches); weights, EMA and checkpoints stay on the plain module.
        # dynamic=False: one static graph per bucket shape. With torch 2.11 the automatic switch to dynamic
        # shapes at the second bucket failed in Inductor (CantSplit on the symbolic token count, H100).
        self.forward = torch.compile(self.model, dynamic=False) if s.compile else self.model
        # Global.cuda_graphs: the encoder's forward and backward replay from CUDA graphs (one pair per
        # input shape); the decoder, loss and optimizer stay eager. See train_graphs.py.
        if s.cuda_graphs:
            if self.device.type != "cuda":
                raise ConfigError("Global.cuda_graphs needs a CUDA device")
            if s.compile:
                raise ConfigError("Global.cuda_graphs and Global.compile exclude each other; pick one")
            if self.dist.enabled:
                raise ConfigError("Global.cuda_graphs is not supported with several processes (DDP)")
            # capture_after=2: the partial batch that ends each bucket's epoch, a new shape every epoch, stays eager
            self.forward = GraphedTrainForward(self.raw_model, capture_after=2, log=self.logger.info)

    # ------------------------------------------------------------------------------------------------
    def _check_output_dir(self, path: str) -> None:
        """Fail before training, not at the first checkpoint, when the output folder is unusable."""
        probe = os.path.join(path, f".write_test.{os.getpid()}")
        try:
            os.makedirs(path, exist_ok=True)
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as e:
            raise ConfigError(f"Global.output_dir: cannot write to {path}: {e.strerror or e}") from None

    def _build_eval_loaders(self) -> dict:
        cfg = validate_section(self.config["Eval"], "Eval")
        loaders = {}
        for source, entry in zip(build_sources(cfg, self.charset)[0], cfg["datasets"]):
            dataset = build_dataset(cfg, self.charset, None, train=False, seed=self.settings.seed, sources=[source])
            loaders[source.name] = build_loader(dataset, cfg, False, self.settings.seed)
        if len(loaders) != len(cfg["datasets"]):
            raise ConfigError("Eval.datasets: two sets share a name; give them distinct 'name' keys")
        return loaders

    def _resume_or_pretrain(self) -> None:
        s = self.settings
        if s.checkpoints:
            ckpt = load_checkpoint(s.checkpoints)
            self.raw_model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            if self.ema is not None and ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"])
            self.state.update(ckpt["state"])
            set_rng_state(ckpt["rng"][min(self.dist.rank, len(ckpt["rng"]) - 1)])
            self.logger.info(f"resumed from {s.checkpoints} at step {self.state['global_step']} "
                             f"(epoch {self.state['epoch']}, batch {self.state['batch_in_epoch']})")
        elif s.pretrained_model:
            report = load_pretrained(self.raw_model, s.pretrained_model)
            self.logger.info(f"pretrained weights from {s.pretrained_model}: {len(report['loaded'])} tensors loaded")
            for key in ("missing", "unexpected", "shape_mismatch"):
                if report[key]:
                    self.logger.info(f"  {key} ({len(report[key])}): {', '.join(report[key][:20])}"
                                     + (" ..." if len(report[key]) > 20 else ""))

    def autocast(self):
        if not self.use_amp:
            return contextlib.nullcontext()
        # A CUDA graph cannot hold autocast's cache of cast weights; without graphs the cache saves casts.
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=not self.settings.cuda_graphs)

    def _global_mean(self, value: float) -> float:
        if not self.dist.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.dist.world_size

    def _check_skips(self, window: SkipWindow) -> None:
        """Stop, after saving, when most samples of the window were unusable (a data folder that vanished,
        fonts that cannot be opened): training on the few left would quietly give another model."""
        skipped, used = window.skipped, window.used
        if self.dist.enabled:
            t = torch.tensor([skipped, used], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            skipped, used = t.tolist()
        reasons = window.top_reasons()
        window.reset()
        limit, seen = self.settings.max_skip_fraction, skipped + used
        if limit is None or seen == 0 or skipped / seen <= limit:
            return
        self.save("latest.pth")
        raise TrainingStopped(
            f"{skipped / seen:.0%} of the last {int(seen)} samples were skipped (Global.max_skip_fraction "
            f"{limit}); most common: {reasons}. Fix the data and resume from {os.path.join(self.settings.output_dir, 'latest.pth')}")

    def _all_ranks(self, flag: bool) -> bool:
        if not self.dist.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    # ------------------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        """One optimisation step on a collated batch. Returns ``losses`` (0-d tensors with the grad norm; read
        them at log steps only, since reading one waits for the GPU) and ``ok`` (0-d bool tensor, false when
        the loss or the gradients were not finite and the update was skipped)."""
        images = batch["image"].to(self.device, non_blocking=True)
        targets = {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v) and k != "image"}
        with self.autocast():
            outputs = self.forward(images, targets)
            losses = self.loss_fn(outputs, targets)
        loss = losses["loss"] * batch.get("loss_weight", 1.0)
        losses = {k: v.detach() for k, v in losses.items()}
        if not self.skip_on_device and not self._all_ranks(bool(torch.isfinite(loss))):
            self.optimizer.zero_grad(set_to_none=True)
            return {"losses": losses, "ok": torch.tensor(False)}
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.settings.grad_clip if self.settings.grad_clip else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), max_norm)
        if self.skip_on_device:
            ok = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
            if self.dist.enabled:
                flag = ok.float()
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                ok = flag > 0
            self.optimizer.found_inf = (~ok).float()  # read by the fused kernel, as under GradScaler
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        else:
            if not self._all_ranks(bool(torch.isfinite(grad_norm))) and not self.scaler.is_enabled():
                self.optimizer.zero_grad(set_to_none=True)
                return {"losses": losses, "ok": torch.tensor(False)}
            ok = torch.tensor(True)
            self.scaler.step(self.optimizer)  # with fp16 the scaler skips steps whose gradients overflowed
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.raw_model)
        return {"losses": losses | {"grad_norm": grad_norm.detach()}, "ok": ok}

    def train(self) -> dict:
        s = self.settings
        main = self.dist.is_main
        os.makedirs(s.output_dir, exist_ok=True)
        if main:
            dump_config(self.config, os.path.join(s.output_dir, "config.yml"))
        recorder = RunRecorder(s.output_dir, s.use_tensorboard, s.plot, self.logger, resume=bool(s.checkpoints)) if main else None
        if recorder is not None and s.checkpoints:
            recorder.truncate_to(self.state["global_step"])
        self.logger.info(f"training {sum(p.numel() for p in self.raw_model.parameters()):,} parameters on "
                         f"{self.device} x {self.dist.world_size} process(es), amp={self.use_amp and str(self.amp_dtype)}, "
                         f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps in all")
        smooth = SmoothedValues()
        sampler = self.train_loader.batch_sampler
        step_loss = float("nan")
        last_good = None
        tick, images_seen, data_wait = time.perf_counter(), 0, 0.0
        paused = 0.0  # evaluation and checkpoint time inside a log window: left out of its img/s
        window, empty_in_a_row = SkipWindow(), 0
        deadline = time.perf_counter() + 60 * s.max_minutes if s.max_minutes else float("inf")
        profiler = (StepProfiler(tuple(s.profile_steps), s.output_dir, self.device, self.logger.info)  # checked by parse_settings
                    if s.profile_steps and main else None)
        out_of_time = False
        try:
            while self.state["global_step"] < self.total_steps and not out_of_time:
                epoch = self.state["epoch"]
                if s.max_steps is None and epoch >= s.epoch_num:
                    break
                sampler.set_epoch(epoch, start_batch=self.state["batch_in_epoch"])
                progress = self._progress(len(sampler), epoch) if main else None
                batches = iter(self.train_loader)
                while True:
                    if profiler is not None:
                        profiler.step_begins(self.state["global_step"] + 1)
                    wait_start = time.perf_counter()
                    batch = next(batches, None)
                    data_wait += time.perf_counter() - wait_start  # the loader's share of the step (logged)
                    if profiler is not None:
                        profiler.data_ready()
                    if batch is None:
                        break
                    window.add(batch, self.skipped)
                    if batch["image"] is None:  # every sample of this batch was unusable
                        if not self.dist.enabled or last_good is None:
                            self.state["batch_in_epoch"] += 1
                            empty_in_a_row += 1
                            if not self.dist.enabled and empty_in_a_row % s.log_every == 0:
                                self._check_skips(window)  # no step is logged while every batch is empty
                            continue
                        batch = dict(last_good, loss_weight=0.0)  # keep DDP ranks in step; contributes nothing
                    else:
                        last_good = batch
                    empty_in_a_row = 0
                    result = self.train_step(batch)
                    self.state["global_step"] += 1
                    self.state["batch_in_epoch"] += 1
                    step = self.state["global_step"]
                    if profiler is not None:  # its report (at the window's last step) is left out of the img/s
                        report_start = time.perf_counter()
                        profiler.step_ends(step)
                        paused += time.perf_counter() - report_start
                    images_seen += len(batch["text"]) * self.dist.world_size
                    self.non_finite.record(result["ok"])
                    if not self.skip_on_device or step % s.log_every == 0:  # a device check waits for the GPU
                        self.non_finite.check(step, self.state)
                    smooth.update(**result["losses"])
                    if progress is not None:
                        progress.update(1)
                    if step % s.log_every == 0:  # every rank takes part in these two reductions
                        step_loss = self._global_mean(float(result["losses"]["loss"]))
                        self._check_skips(window)
                    if step % s.log_every == 0 and main:
                        elapsed = time.perf_counter() - tick - paused
                        stats = {"loss": smooth.median("loss"), "step_loss": step_loss, "lr": self.scheduler.get_last_lr()[0],
                                 "img_per_s": images_seen / max(elapsed, 1e-9), "data_wait": data_wait / max(elapsed, 1e-9),
                                 "epoch": epoch}
                        stats.update({k: smooth.median(k) for k in smooth.values if k.endswith("_loss")})
                        eager = None
                        if isinstance(self.forward, GraphedTrainForward):  # Global.cuda_graphs
                            eager = stats["eager_encoder_steps"] = self.forward.eager_train_calls
                            self.forward.eager_train_calls = 0
                        recorder.record("train", step, stats)
                        if progress is not None:
                            progress.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}",
                                                 ips=f"{stats['img_per_s']:.0f}")
                        self.logger.info(f"epoch {epoch} step {step}/{self.total_steps} loss {stats['loss']:.4f} "
                                         f"lr {stats['lr']:.3e} {stats['img_per_s']:.0f} img/s "
                                         f"(data wait {stats['data_wait']:.0%}"
                                         + (f", {eager} eager encoder step{'' if eager == 1 else 's'}" if eager else "") + ")"
                                         + "".join(f" {k} {smooth.median(k):.4f}" for k in smooth.values if k.endswith("_loss")))
                        tick, images_seen, data_wait, paused = time.perf_counter(), 0, 0.0, 0.0
                    pause_start = time.perf_counter()
                    if s.eval_every and step % s.eval_every == 0:
                        self._evaluate_and_record(recorder, step)
                    if s.save_every and step % s.save_every == 0:
                        self.save("latest.pth")
                    paused += time.perf_counter() - pause_start
                    if time.perf_counter() > deadline:
                        out_of_time = True
                        self.logger.info(f"wall-clock budget of {s.max_minutes} min spent at step {step}; stopping")
                    if step >= self.total_steps or out_of_time:
                        break
                if progress is not None:
                    progress.close()
                finished = self.state["global_step"] >= self.total_steps or out_of_time
                if finished and self.state["batch_in_epoch"] < len(sampler.global_batches(epoch)):
                    break
                self.state["epoch"] += 1
                self.state["batch_in_epoch"] = 0
                pause_start = time.perf_counter()
                if s.eval_each_epoch or finished:
                    self._evaluate_and_record(recorder, self.state["global_step"])
                self.save("latest.pth")
                paused += time.perf_counter() - pause_start
            if self.state["batch_in_epoch"] != 0:  # stopped mid-epoch by max_steps
                self._evaluate_and_record(recorder, self.state["global_step"])
                self.save("latest.pth")
        finally:
            if profiler is not None:
                profiler.finish()
            if recorder is not None:
                recorder.plot()
                recorder.close()
        summary = {"global_step": self.state["global_step"], "best": self.state["best"], "skipped_samples": self.skipped,
                   "bad_steps": self.state["bad_steps_total"]}
        if main:
            with open(os.path.join(s.output_dir, "summary.json"), "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
            if self.skipped:
                self.logger.info("skipped samples: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())))
        return summary

    def _progress(self, total: int, epoch: int):
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=total, desc=f"epoch {epoch}", dynamic_ncols=True, leave=False, file=sys.stderr,
                    mininterval=1.0 if sys.stderr.isatty() else 30.0)

    # ------------------------------------------------------------------------------------------------
    def eval_model(self):
        return self.ema.module if self.ema is not None else self.raw_model

    def evaluate(self, keep_samples: bool = False) -> dict:
        if not self.eval_loaders:
            raise ConfigError("Eval.datasets is empty: nothing to evaluate")
        return evaluate_sets(self.eval_model(), self.eval_loaders, self.post, self.metric, self.device, self.autocast,
                             keep_samples)

    def _evaluate_and_record(self, recorder, step: int) -> None:
        if not self.eval_loaders or self._last_eval_step == step:
            return
        self._last_eval_step = step
        if self.dist.is_main:
            summary = self.evaluate()
            key = self.metric.main_indicator
            value = summary["combined"][key]
            self.logger.info(f"evaluation at step {step}:\n{format_table(summary)}")
            record = {f"{name}/acc": r["acc"] for name, r in summary["sets"].items()}
            record.update({f"{name}/norm_edit_dis": r["norm_edit_dis"] for name, r in summary["sets"].items()})
            record.update({"combined/acc": summary["combined"]["acc"], "average/acc": summary["average"]["acc"]})
            recorder.record("eval", step, record)
            best = self.state["best"]
            if best is None or value >= best["value"]:
                self.state["best"] = {"value": value, "indicator": key, "step": step, "summary": summary}
                self.save("best.pth", weights_only=True)
            recorder.plot()
            self.raw_model.train()
        if self.dist.enabled:
            dist.barrier()

    def save(self, name: str, weights_only: bool = False) -> None:
        """Rank 0 writes; RNG states of every rank are gathered so a resume continues exactly."""
        if name == "latest.pth":
            if self._last_save_step == self.state["global_step"]:
                return
            self._last_save_step = self.state["global_step"]
            self.non_finite.check(self.state["global_step"], self.state)  # bad steps so far go into the state
        rngs = [rng_state()]
        if self.dist.enabled and not weights_only:  # weights-only saves happen on rank 0 alone (best.pth)
            rngs = [None] * self.dist.world_size
            dist.all_gather_object(rngs, rng_state())
        if not self.dist.is_main:
            return
        state = {"model": self.raw_model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                 "config": self.config, "state": dict(self.state)}
        if not weights_only:
            state.update({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                          "scaler": self.scaler.state_dict(), "rng": rngs})
        save_checkpoint(state, os.path.join(self.settings.output_dir, name))

    def close(self) -> None:
        cleanup_distributed()

