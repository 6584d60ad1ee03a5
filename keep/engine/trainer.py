"""One training loop for all three stages.

``train(cfg)`` builds the stage model (:mod:`keep.models`), applies ``init:`` and ``frozen:``,
wraps the trained networks in DDP when launched by torchrun, and runs ``cfg.iters`` steps with AMP,
EMA, gradient clipping, LR schedules, periodic atomic checkpoints, validation and TensorBoard
logging. Everything a step depends on is a function of (config, step) or restored from the
checkpoint, so a resumed run continues exactly as the uninterrupted one would have.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import keep.models  # noqa: F401  (registers the stages)
from keep.config import to_dict
from keep.data.dataset import VideoClipDataset, to_uint8
from keep.data.sampler import StepSampler
from keep.engine import checkpoint as ckpt
from keep.engine.batching import per_process_batch
from keep.engine.config import TrainConfig
from keep.engine.distributed import (DistInfo, any_rank, barrier, broadcast_buffers, cleanup, init_distributed,
                                     mean_over_ranks)
from keep.engine.ema import ModelEma
from keep.engine.errors import TrainSetupError
from keep.engine.init import apply_frozen, apply_init, preflight
from keep.engine.logger import TensorBoard, setup_logging
from keep.engine.nonfinite import NonFiniteGuard, nonfinite_terms
from keep.engine.schedule import LRSchedule
from keep.engine.step import StepContext
from keep.metrics.errors import MetricUnavailable
from keep.metrics.psnr_ssim import psnr
from keep.models.base import StageModel
from keep.registry import ARCHS, MODELS

# A network spec whose parameters exceed this is refused before anything is allocated (a typo such
# as nf: 1000000 would otherwise try to allocate terabytes). The released KEEP has 0.16 G.
MAX_PARAMETERS = 4e9


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device: cuda was asked for but no CUDA GPU is visible; use device: cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of torch's RNG for one step on one rank (token masking, dropout): no RNG state to save."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def resume_candidates(resume: Union[None, bool, str], ckpt_dir: Path) -> List[Path]:
    """Checkpoints to resume from, oldest first (the newest readable one is used).

    ``None``/``False``: none (fresh run); ``True``: this run's checkpoints (fresh if none); a run or
    checkpoint folder: its checkpoints; a file: that file only (no fallback: it was asked for)."""
    if not resume:
        return []
    if resume is True:
        return ckpt.list_checkpoints(ckpt_dir)
    path = Path(resume)
    if path.is_dir():
        found = ckpt.list_checkpoints(path / "checkpoints") or ckpt.list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"--resume {path}: no step_*.pth checkpoint in it")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint")
    return [path]


def resolve_resume(resume: Union[None, bool, str], ckpt_dir: Path) -> Optional[Path]:
    """The newest candidate of :func:`resume_candidates` (None for a fresh run)."""
    found = resume_candidates(resume, ckpt_dir)
    return found[-1] if found else None


def check_network_spec(spec: Dict, what: str) -> None:
    """Build ``spec`` on the meta device (no memory): an unknown type, bad arguments or an absurd
    size become a :class:`TrainSetupError` before anything real is allocated."""
    try:
        with torch.device("meta"):
            module = ARCHS.build(spec)
    except KeyError as err:
        raise TrainSetupError(f"{what}.type: {str(err).strip(chr(34) + chr(39))}") from None
    except (TypeError, ValueError) as err:
        raise TrainSetupError(f"{what}: bad arguments for {spec.get('type')}: {err}") from None
    count = sum(p.numel() for p in module.parameters())
    if count > MAX_PARAMETERS:
        raise TrainSetupError(f"{what}: {spec.get('type')} with these arguments has {count / 1e9:.1f} G parameters "
                              f"({count * 4 / 2**30:.0f} GiB in fp32); check its sizes (nf, dims, ...)")


def _spec_differences(old: Dict, new: Dict) -> List[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in keys if old.get(k) != new.get(k)]


class Trainer:
    """Builds everything a run needs from ``cfg`` (and ``resume``); :meth:`fit` trains, :meth:`close`
    releases the process group and the TensorBoard writer."""

    def __init__(self, cfg: TrainConfig, resume: Union[None, bool, str] = None):
        self.cfg = cfg
        self._threads_before = torch.get_num_threads()  # restored by close(): a library call leaves no trace
        if cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        device_kind = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist: DistInfo = init_distributed(device_kind)
        self.device = pick_device(cfg.device, self.dist.local_rank)
        self.run_dir = Path(cfg.output_dir) / cfg.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.log = setup_logging(self.run_dir, self.dist.is_main)
        self.batch_size, batch_note = per_process_batch(cfg.data.batch_size, cfg.data.gpus, self.dist.world_size)
        self.log.info("%s", batch_note)
        if self.dist.is_main:
            for stale in ckpt.clean_stale_temporaries(self.ckpt_dir, self.run_dir):
                self.log.info("removed %s (a temporary left by a killed save)", stale)
        candidates = resume_candidates(resume, self.ckpt_dir)
        resume_path, resume_state = (ckpt.load_newest_valid(candidates) if candidates else (None, None))
        if resume_state is not None:
            self._check_same_run(resume_path, resume_state)
        # a resumed run takes every weight from its checkpoint: the init files are not needed again
        init_items = preflight(cfg, with_init=resume_path is None)

        check_network_spec(cfg.net, "net")
        if cfg.discriminator:
            check_network_spec(cfg.discriminator, "discriminator")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model: StageModel = MODELS.get(f"stage{cfg.stage}")(cfg)
        loaded = apply_init(self.model.net, init_items, cfg.download_weights)
        if resume_path is None:
            self._check_flow_weights(loaded)
        self.model.after_init(frozenset(loaded))
        trainable = apply_frozen(self.model.net, cfg.frozen)
        self.model.to(self.device)
        total = sum(p.numel() for p in self.model.net.parameters())
        self.log.info("stage %d, net %s: %.2f M parameters, %.2f M trained; device %s, world size %d",
                      cfg.stage, cfg.net["type"], total / 1e6, trainable / 1e6, self.device, self.dist.world_size)
        for note in self.model.notes():
            self.log.warning(note)

        self.ema = ModelEma(self.model.net, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        self.params = {"net": [p for p in self.model.net.parameters() if p.requires_grad]}
        opts = {"net": cfg.optim}
        if self.model.disc is not None:
            self.params["disc"] = list(self.model.disc.parameters())
            opts["disc"] = cfg.optim_d or cfg.optim
        self.optimizers = {k: torch.optim.Adam(self.params[k], lr=o.lr, betas=tuple(o.betas),
                                               weight_decay=o.weight_decay) for k, o in opts.items()}
        self.schedules = {k: LRSchedule(self.optimizers[k], o, cfg.iters) for k, o in opts.items()}
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.ctx = StepContext(self.optimizers, self.params, self.scaler, cfg.amp, self.device,
                               {k: o.grad_clip for k, o in opts.items()})

        self.step = 0
        self.nonfinite = NonFiniteGuard(cfg.nonfinite_patience, self.ckpt_dir)
        self.best: Dict[str, float] = {}
        self.stop_requested = False
        if resume_path is not None:
            self._load(resume_path, resume_state)
        elif resume:
            self.log.info("--resume: no checkpoint in %s yet; starting from step 0", self.ckpt_dir)

        if self.dist.enabled:
            for name, module in self.model.networks().items():
                if any(p.requires_grad for p in module.parameters()):
                    self.model.runners[name] = DistributedDataParallel(
                        module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                        find_unused_parameters=cfg.find_unused_parameters)
        # after a resume, TensorBoard drops the events the crashed run logged past the checkpoint
        self.tb = TensorBoard(self.run_dir, self.dist.is_main, purge_step=self.step or None)

    def _check_same_run(self, path: Path, state: Dict) -> None:
        """A resumed checkpoint must come from the same stage and networks as the config."""
        old = state.get("config") or {}
        if old.get("stage") != self.cfg.stage:
            raise TrainSetupError(f"--resume {path}: a stage {old.get('stage')} checkpoint, but this config "
                                  f"trains stage {self.cfg.stage}")
        for key in ("net", "discriminator"):
            before, now = old.get(key) or {}, getattr(self.cfg, key) or {}
            if before != now:
                raise TrainSetupError(
                    f"--resume {path}: the {key} config changed since that checkpoint "
                    f"({'; '.join(_spec_differences(before, now)[:4])}); restore the old values, or start a "
                    f"new run (another name, or an init: entry from the checkpoint)")

    def _check_flow_weights(self, loaded: set) -> None:
        """Stage II/III with a GMFlow that no init loaded would train against random flows."""
        net = self.model.net
        flow = getattr(net, "flownet", None)
        if self.cfg.stage == 1 or flow is None or not any(True for _ in flow.parameters()):
            return
        missing = [k for k in net.state_dict() if k.startswith("flownet.") and k not in loaded]
        if not missing:
            return
        message = (f"the flow net (GMFlow) has RANDOM weights ({len(missing)} flownet.* tensors not loaded by "
                   f"init): the Kalman prediction and the temporal loss would follow noise. Add "
                   f"`- weight: gmflow-sintel` with prefix_map {{\"\": [\"flownet.model.\"]}} to init "
                   f"(keep download gmflow-sintel), or use net.flow_type: dis (no weights needed)")
        if not self.cfg.allow_random_flow:
            raise TrainSetupError(message + "; allow_random_flow: true runs anyway")
        self.log.warning("%s (allow_random_flow: true)", message)

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> Dict:
        return {"format": ckpt.FORMAT, "step": self.step, "config": to_dict(self.cfg),
                "world_size": self.dist.world_size,
                "nets": {k: m.state_dict() for k, m in self.model.networks().items()},
                "ema": self.ema.state_dict() if self.ema else None,
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedules.items()},
                "scaler": self.scaler.state_dict(),
                "best": dict(self.best),
                "rng": {"scheme": "torch reseeded from (seed, rank, step) every step; data from (seed, epoch, index)",
                        "seed": self.cfg.seed}}

    def save(self) -> Optional[Path]:
        path = None
        self.nonfinite.refuse_to_write(self.step, self._weights(), "checkpoint")   # on every rank alike
        if self.dist.is_main:
            path = ckpt.checkpoint_path(self.ckpt_dir, self.step)
            ckpt.atomic_torch_save(self._state(), path)
            ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints, self.cfg.keep_every)
            self.log.info("step %d: checkpoint %s", self.step, path)
        barrier(self.dist)
        return path

    def _load(self, path: Path, state: Dict) -> None:
        if state.get("world_size") != self.dist.world_size:
            self.log.warning("resuming a %d-process run with %d processes: the data order changes from here",
                             state.get("world_size"), self.dist.world_size)
        try:
            for name, module in self.model.networks().items():
                module.load_state_dict(state["nets"][name])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
                self.schedules[name].load_state_dict(state["schedulers"][name])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            reason = str(err).splitlines()[0][:300]
            raise TrainSetupError(f"--resume {path}: does not fit this run's networks or optimisers ({reason}); "
                                  f"it was written by another config (frozen:, net:, discriminator:)") from None
        self.step = int(state["step"])
        self.best = dict(state.get("best") or {})
        self.log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ data
    def _loader(self) -> DataLoader:
        data = self.cfg.data
        dataset = VideoClipDataset(data.train)
        sampler = StepSampler(len(dataset), self.batch_size, self.cfg.seed, self.step, self.dist.rank,
                              self.dist.world_size)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=data.num_workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=data.num_workers > 0,
                          drop_last=True)

    def _to_device(self, batch: Dict) -> Dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """PSNR (and LPIPS where its weights exist) of the EMA network on the held-out clips; rank 0."""
        results: Dict[str, float] = {}
        if self.dist.is_main and self.cfg.data.val is not None:
            net = self.ema.module if self.ema is not None else self.model.net
            was_training = net.training
            net.eval()
            lpips_metric = self._lpips()
            dataset = VideoClipDataset(self.cfg.data.val)
            psnrs, lpips_values = [], []
            for i in tqdm(range(len(dataset)), desc="validation", leave=False):
                batch = self._to_device({k: v[None] if torch.is_tensor(v) else v for k, v in dataset[i].items()})
                output = self.model.restore(net, batch)
                pred, gt = to_uint8(output[0]), to_uint8(batch["gt"][0])
                psnrs += [psnr(p, g) for p, g in zip(pred, gt)]
                if lpips_metric is not None:
                    lpips_values += list(lpips_metric(pred, gt))
                if i == 0:
                    self.tb.image_grid("val/clip0", self.model.image_grid_inputs(batch, output), self.step)
            net.train(was_training)
            results["psnr"] = float(np.mean([p for p in psnrs if math.isfinite(p)] or [float("inf")]))
            if lpips_values:
                results["lpips"] = float(np.mean(lpips_values))
            self.tb.scalars("val", results, self.step)
            self.log.info("step %d: validation %s", self.step,
                          ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
        barrier(self.dist)
        return results

    def _lpips(self):
        if not hasattr(self, "_lpips_metric"):
            from keep.metrics.lpips_metric import LPIPSMetric
            try:
                self._lpips_metric = LPIPSMetric(device=str(self.device))
            except MetricUnavailable as err:
                self.log.warning("validation: PSNR only, LPIPS unavailable (%s)", err)
                self._lpips_metric = None
        return self._lpips_metric

    # ------------------------------------------------------------------ loop
    def fit(self) -> List[Dict[str, float]]:
        """Run until ``cfg.iters``; returns the per-step logs of this call (rank-local)."""
        cfg = self.cfg
        if self.dist.is_main:
            ckpt.save_resolved_config(to_dict(cfg), self.run_dir)
        history: List[Dict[str, float]] = []
        if self.step >= cfg.iters:
            self.log.info("already at step %d of %d; nothing to train", self.step, cfg.iters)
            # a crash between the last checkpoint and the export left no export: write it now
            if cfg.export and self.dist.is_main and not (self.run_dir / "export.pth").is_file():
                self.export(self.run_dir / "export.pth")
            return history
        loader = iter(self._loader())
        bar = tqdm(total=cfg.iters, initial=self.step, desc=f"stage {cfg.stage}", disable=not self.dist.is_main,
                   dynamic_ncols=True)
        # SIGTERM (a cluster pre-emption, `kill`) asks for a stop: the current step finishes, a
        # checkpoint is written and fit() returns. Ctrl-C stops at once; the last periodic
        # checkpoint stands (a half-done step is never saved).
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread:
            previous_handler = signal.signal(signal.SIGTERM, self._request_stop)
        interval: List[Dict[str, float]] = []   # logs since the last log line (averaged there)
        timing = {"data": 0.0, "step": 0.0}
        try:
            while self.step < cfg.iters and not self.stop_requested:
                torch.manual_seed(step_seed(cfg.seed, self.dist.rank, self.step))
                lrs = {k: s.apply(self.step) for k, s in self.schedules.items()}
                t0 = time.perf_counter()
                batch = self._to_device(next(loader))
                t1 = time.perf_counter()
                self.model.train()
                self.ctx.skipped.clear()
                logs = self.model.training_step(batch, self.step, self.ctx)
                logs.update({f"grad_norm_{k}": v for k, v in self.ctx.grad_norms.items()})
                skipped = self._nonfinite_step(logs)
                self.scaler.update()
                for module in self.model.networks().values():
                    broadcast_buffers(module, self.dist)
                if self.ema is not None and not skipped:
                    self.ema.update(self.model.net, self.step)
                self.step += 1
                timing["data"] += t1 - t0
                timing["step"] += time.perf_counter() - t1
                history.append(logs)
                interval.append(logs)
                self.stop_requested = any_rank(self.stop_requested, self.dist, self.device)
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.iters:
                    self._log_step(interval, lrs, timing, bar)
                    interval, timing = [], {"data": 0.0, "step": 0.0}
                if cfg.image_every and self.step % cfg.image_every == 0 and self.dist.is_main:
                    with torch.no_grad():
                        out = self.model.restore(self.model.net, batch)
                    self.tb.image_grid("train/clip0", self.model.image_grid_inputs(batch, out), self.step)
                validate = (cfg.val_every and self.step % cfg.val_every == 0) or self.step == cfg.iters
                if validate:  # before the save, so the checkpoint records the best value so far
                    self._track_best(self.validate())
                if self.step % cfg.save_every == 0 or self.step == cfg.iters or self.stop_requested:
                    self.save()
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous_handler)
            bar.close()
            self.tb.flush()
        if self.stop_requested:
            self.log.warning("stopped by SIGTERM at step %d; continue with --resume", self.step)
            return history
        if cfg.export and self.dist.is_main:
            self.export(self.run_dir / "export.pth")
        return history

    def _nonfinite_step(self, logs: Dict[str, float]) -> bool:
        """True if this step's loss or gradients were NaN / inf (its update was skipped) and the run may
        go on; raises NonFiniteTraining past ``nonfinite_patience`` (keep.engine.nonfinite)."""
        shared = None
        if self.dist.enabled:   # every process takes the same decision (a stop on one rank only would hang)
            shared = any_rank(bool(nonfinite_terms(logs) or self.ctx.skipped), self.dist, self.device)
        skipped = self.nonfinite.check(self.step + 1, logs, self.ctx.skipped, self._weights(), shared)
        if skipped:
            self.log.warning("step %d: non-finite loss or gradient (%s); update skipped (%d of nonfinite_patience "
                             "%d)", self.step + 1, ", ".join(nonfinite_terms(logs) + self.ctx.skipped),
                             self.nonfinite.streak, self.cfg.nonfinite_patience)
        return skipped

    def _weights(self) -> Dict[str, torch.nn.Module]:
        """Every network whose weights a checkpoint or an export holds."""
        modules = dict(self.model.networks())
        if self.ema is not None:
            modules["ema"] = self.ema.module
        return modules

    def _track_best(self, results: Dict[str, float]) -> None:
        """Keep ``<run>/best.pth`` (an inference file like export.pth) at the best validation PSNR."""
        if not self.dist.is_main or "psnr" not in results or not math.isfinite(results["psnr"]):
            return
        if results["psnr"] > self.best.get("psnr", -math.inf):
            self.best = {"psnr": float(results["psnr"]), "step": float(self.step)}
            self.export(self.run_dir / "best.pth")
            self.log.info("step %d: best validation PSNR so far (%.3f dB): best.pth", self.step, results["psnr"])

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def _log_step(self, interval: List[Dict[str, float]], lrs: Dict[str, float], timing: Dict[str, float],
                  bar: tqdm) -> None:
        """One log line (and TensorBoard point) per interval: every loss averaged over the interval's
        steps (single steps are noisy), across ranks too; data-loading and compute time apart."""
        keys = sorted({k for logs in interval for k in logs})
        local = {k: float(np.mean([logs[k] for logs in interval if k in logs])) for k in keys}
        mean = mean_over_ranks(local, self.dist, self.device)
        steps = max(len(interval), 1)
        data_s, step_s = timing["data"] / steps, timing["step"] / steps
        mean.update({f"lr_{k}": v for k, v in lrs.items()})
        self.tb.scalars("train", mean, self.step)
        self.tb.scalars("time", {"data_s": data_s, "step_s": step_s}, self.step)
        eta = (data_s + step_s) * (self.cfg.iters - self.step)
        self.log.info("step %d/%d  %s  (data %.3f s + compute %.3f s per step, ETA %s)", self.step, self.cfg.iters,
                      "  ".join(f"{k} {v:.4g}" for k, v in mean.items()), data_s, step_s, _hms(eta))
        bar.set_postfix({**{k: f"{v:.3g}" for k, v in mean.items() if k == "loss"},
                         "data": f"{data_s:.2f}s", "compute": f"{step_s:.2f}s"})

    def export(self, path: Path) -> Path:
        """The EMA network as a self-describing inference file ``{"arch": {...}, "params": ...}``."""
        from keep.checkpoint import save_inference_checkpoint
        net = self.ema.module if self.ema is not None else self.model.net
        self.nonfinite.refuse_to_write(self.step, {"net": net}, f"export {path.name}")
        save_inference_checkpoint(net, path, dict(self.cfg.net))
        self.log.info("exported %s weights to %s", "EMA" if self.ema is not None else "network", path)
        return path

    def close(self) -> None:
        self.tb.close()
        cleanup(self.dist)
        torch.set_num_threads(self._threads_before)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(cfg: TrainConfig, resume: Union[None, bool, str] = None) -> Trainer:
    """Train one stage from ``cfg`` (resuming per ``resume``, see :func:`resolve_resume`)."""
    trainer = Trainer(cfg, resume)
    try:
        trainer.fit()
    finally:
        trainer.close()
    return trainer
