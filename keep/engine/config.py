"""The schema of a training config (``configs/stage*.yaml``), validated strictly by :mod:`keep.config`.

One schema serves the three stages; ``stage`` picks the training model (:mod:`keep.models`).
Freezing and initialisation from a previous stage are settings here (``frozen:``, ``init:``), never
arguments of the networks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from keep.config import ConfigError
from keep.data.dataset import ClipDatasetConfig


@dataclass
class DataConfig:
    train: ClipDatasetConfig
    val: Optional[ClipDatasetConfig] = None     # held-out clips for validation (PSNR, LPIPS)
    batch_size: int = 1                         # clips per process (GPU); global batch = this x world size (gpus: 0)
    # The GPU count batch_size was set for (the release: 2, 2, 4). 0: batch_size is per process whatever
    # the launch. N > 0: the global batch is batch_size x N, kept for any world size W by training each
    # process on batch_size x N / W clips; refused when W does not divide it (keep.engine.batching)
    gpus: int = 0
    num_workers: int = 2


@dataclass
class OptimConfig:
    """Adam and its learning-rate schedule (evaluated from the step, so resuming needs no state)."""

    lr: float = 2e-4
    betas: Tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    schedule: str = "constant"                  # constant | cosine | multistep
    warmup_iters: int = 0                       # linear warm-up from 0
    milestones: List[int] = field(default_factory=list)   # multistep: steps where lr *= gamma
    gamma: float = 0.5
    min_lr: float = 0.0                         # cosine: final lr
    grad_clip: float = 0.0                      # max global grad norm; 0 = no clipping


@dataclass
class InitConfig:
    """Load weights from a checkpoint into the stage's network before training.

    ``weight`` names a file of the :mod:`keep.weights` registry (e.g. ``gmflow-sintel``); ``path`` is
    any file: a training checkpoint of this project (its EMA weights are used), an exported
    inference file (``params``), a BasicSR/CodeFormer file (``params_ema`` or ``params``) or a raw
    state dict. ``prefix_map`` renames source key prefixes to one or more target prefixes (e.g. a
    stage I VQGAN's ``encoder.`` feeds both ``encoder.`` and ``hq_encoder.`` of KEEP); keys not
    matched by any prefix keep their names when the map is empty and are dropped otherwise.
    ``exclude`` skips target keys with these prefixes (modules that must keep their fresh init).
    """

    path: str = ""
    weight: str = ""                            # registry name instead of a path
    key: str = "auto"                           # auto | params_ema | params | ema | net | model
    prefix_map: Dict[str, List[str]] = field(default_factory=dict)
    exclude: List[str] = field(default_factory=list)
    required: bool = True                       # false: a missing file is logged and training starts from random


@dataclass
class LossConfig:
    """Loss weights (0 = term off) and loss options. Which terms a stage uses: see docs/training.md."""

    l1: float = 0.0
    perceptual: float = 0.0
    adversarial: float = 0.0
    codebook: float = 0.0                       # stage I: VQ codebook + commitment (Eq. 3)
    cross_entropy: float = 0.0                  # stage II: code index CE (Eq. 4)
    feature: float = 0.0                        # stage II: L2 feature loss (Eq. 4)
    temporal: float = 0.0                       # stage III: flow-warped temporal loss (Eq. 7)
    gan_type: str = "hinge"                     # hinge | vanilla | lsgan
    # stage I: "adaptive" scales the adversarial term by the VQGAN rule (Esser et al. 2021),
    # ||grad_last(L_rec + L_per)|| / ||grad_last(L_adv)||, clamped to [0, adaptive_weight_max], times
    # `adversarial`; "fixed" uses `adversarial` as is. Other stages: always fixed.
    adversarial_weight: str = "adaptive"
    adaptive_weight_max: float = 1.0
    # stage I: the adaptive weight times this (the release's `disc_weight` 0.8, vqgan_model.py:79, :156)
    adaptive_weight_scale: float = 1.0
    # discriminator update: "joint" = real and fake in one forward (one BatchNorm batch), "separate" =
    # a forward (and backward) for the real batch, then one for the fake (the release, vqgan_model.py:170-183)
    disc_passes: str = "joint"
    # vgg (VGG-19 features, L1) | lpips_vgg (LPIPS, VGG-16, inputs in [-1, 1]) | lpips_vgg_release (the
    # release's LPIPSLoss: inputs ImageNet-normalised before LPIPS's own scaling, keep/losses/lpips_loss.py)
    perceptual_type: str = "vgg"
    disc_start: int = 0                         # step from which the adversarial terms are on
    perceptual_pretrained: bool = True          # false: random VGG (smoke runs only; logged)
    perceptual_layers: Dict[str, float] = field(default_factory=lambda: {
        "conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0})
    # stage III temporal loss: [] = masked L1 on the output frames (TemporalLoss, Eq. 7-8); decoder scales
    # (e.g. ["32"]) = the release's Charbonnier on the features after CFT/CFA there (FeatureTemporalLoss)
    temporal_scales: List[str] = field(default_factory=list)
    consistency_alpha: float = 0.01             # forward-backward check (Eq. 8)
    consistency_beta: float = 0.5


@dataclass
class TrainConfig:
    """A full training run of one stage."""

    name: str                                   # run folder: <output_dir>/<name>
    stage: int                                  # 1, 2 or 3
    net: Dict[str, Any]                         # network spec: {type: <ARCHS name>, **kwargs}
    data: DataConfig
    iters: int
    kind: str = "train"                         # schema tag shared by every configs/*.yaml
    output_dir: str = "experiments"
    seed: int = 0
    device: str = "auto"                        # auto | cpu | cuda
    # torch CPU threads per process; 0 = torch's default. Tiny networks run fastest on one thread
    # (several threads spin-wait on a shared or small machine)
    cpu_threads: int = 0
    discriminator: Optional[Dict[str, Any]] = None   # {type: PatchDiscriminator | TemporalPatchDiscriminator, ...}
    init: List[InitConfig] = field(default_factory=list)
    frozen: List[str] = field(default_factory=list)  # parameter-name prefixes of `net` kept fixed
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    optim_d: Optional[OptimConfig] = None       # discriminator optimiser (default: same as optim)
    amp: str = "none"                           # none | bf16 | fp16 (fp16 uses a GradScaler)
    ema_decay: float = 0.999                    # EMA of the network's parameters and buffers; 0 = off
    log_every: int = 100
    val_every: int = 5000                       # 0 = only at the end
    save_every: int = 5000
    keep_checkpoints: int = 3                   # newest checkpoints kept on disk
    image_every: int = 0                        # TensorBoard training image grids; 0 = off
    find_unused_parameters: bool = False        # DDP flag, per stage
    download_weights: bool = False              # fetch missing pretrained files instead of failing
    export: bool = True                         # write <run>/export.pth (EMA weights) at the end
    keep_every: int = 0                         # milestone checkpoints (step % keep_every == 0) never pruned; 0 = none
    ema_warmup: bool = True                     # EMA decay min(ema_decay, (1 + n) / (10 + n)) after n updates
    # One size for everything that depends on it: net.img_size, data.{train,val}.gt_size, and the
    # degradation's blur sigma range and kernel (given for 512-px faces, scaled by resolution / 512).
    # 0 = off. Applied once at load: the resolved config.yaml holds the explicit sizes and 0 here.
    resolution: int = 0
    # stage II/III with a GMFlow flow net that no init loads: its weights are random and the Kalman
    # prediction carries no information. Refused unless this is true (then only a warning).
    allow_random_flow: bool = False
    # stage III: how the fusion modules (CFT, CFA) start, see keep.models.stage3; "gated": bounded first
    # steps, every weight learns (default); "official": the release's all-zero init (only biases and
    # LayerNorm affines learn); "net": as the network built them (zero_init)
    fusion_init: str = "gated"
    # consecutive steps with a NaN / inf loss or gradient tolerated (their updates are skipped) before the
    # run stops with an error; 0 = stop at the first (keep.engine.nonfinite)
    nonfinite_patience: int = 0

    def __post_init__(self) -> None:
        if self.kind != "train":
            raise ConfigError(f"kind: expected 'train' for a training config, got {self.kind!r}")
        if self.stage not in (1, 2, 3):
            raise ConfigError(f"stage: expected 1, 2 or 3, got {self.stage}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp: expected none, bf16 or fp16, got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: expected auto, cpu or cuda, got {self.device!r}")
        if self.iters < 1:
            raise ConfigError(f"iters must be >= 1, got {self.iters}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        for name in ("log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if "type" not in self.net:
            raise ConfigError("net: needs a 'type' (a registered network, e.g. KEEP or VQAutoEncoder)")
        for i, item in enumerate(self.init):
            if bool(item.path) == bool(item.weight):
                raise ConfigError(f"init[{i}]: give exactly one of path (a file) or weight (a keep.weights name)")
        if self.losses.adversarial_weight not in ("adaptive", "fixed"):
            raise ConfigError(f"losses.adversarial_weight: expected adaptive or fixed, got {self.losses.adversarial_weight!r}")
        if self.losses.perceptual_type not in ("vgg", "lpips_vgg", "lpips_vgg_release"):
            raise ConfigError(f"losses.perceptual_type: expected vgg, lpips_vgg or lpips_vgg_release, "
                              f"got {self.losses.perceptual_type!r}")
        if self.fusion_init not in ("gated", "official", "net"):
            raise ConfigError(f"fusion_init: expected gated, official or net, got {self.fusion_init!r}")
        if self.losses.disc_passes not in ("joint", "separate"):
            raise ConfigError(f"losses.disc_passes: expected joint or separate, got {self.losses.disc_passes!r}")
        if self.losses.adaptive_weight_scale < 0:
            raise ConfigError(f"losses.adaptive_weight_scale must be >= 0, got {self.losses.adaptive_weight_scale}")
        if self.keep_every < 0:
            raise ConfigError(f"keep_every must be >= 0, got {self.keep_every}")
        if not isinstance(self.net, dict):
            raise ConfigError("net: expected a mapping {type: ..., **arguments}")
        if self.resolution:
            self._apply_resolution()
        if self.losses.gan_type not in ("hinge", "vanilla", "lsgan"):
            raise ConfigError(f"losses.gan_type: expected hinge, vanilla or lsgan, got {self.losses.gan_type!r}")
        for opt in (self.optim, self.optim_d):
            if opt is not None and opt.schedule not in ("constant", "cosine", "multistep"):
                raise ConfigError(f"optim.schedule: expected constant, cosine or multistep, got {opt.schedule!r}")
        if self.nonfinite_patience < 0:
            raise ConfigError(f"nonfinite_patience must be >= 0, got {self.nonfinite_patience}")
        check_optim_numbers(self.optim, self.optim_d)


    def _apply_resolution(self) -> None:
        """Set every size-dependent key from ``resolution`` (then reset it to 0, see the field)."""
        r = self.resolution
        if r < 16 or r % 16:
            raise ConfigError(f"resolution must be a positive multiple of 16, got {r}")
        sizes = [("net.img_size", self.net.get("img_size", 512))]
        datasets = [("data.train", self.data.train)] + ([("data.val", self.data.val)] if self.data.val else [])
        sizes += [(f"{name}.gt_size", d.gt_size) for name, d in datasets]
        clash = [f"{key}={value}" for key, value in sizes if value not in (512, r)]
        if clash:
            raise ConfigError(f"resolution: {r} conflicts with {', '.join(clash)}; set the size in one place")
        self.net = {**self.net, "img_size": r}
        factor = r / 512
        for _, d in datasets:
            d.gt_size = r
            deg = d.degradation
            deg.blur_sigma = tuple(round(v * factor, 4) for v in deg.blur_sigma)
            deg.blur_sigma_y = tuple(round(v * factor, 4) for v in deg.blur_sigma_y)
            deg.blur_kernel_size = max(3, int(round(deg.blur_kernel_size * factor)) | 1)
        self.resolution = 0


def check_optim_numbers(*opts: Optional[OptimConfig]) -> None:
    """Learning rates and the other optimiser numbers must be finite and >= 0: ``lr: .inf`` would
    train on NaN from the first update."""
    for name, opt in zip(("optim", "optim_d"), opts):
        for key in ("lr", "weight_decay", "gamma", "min_lr", "grad_clip"):
            value = getattr(opt, key) if opt is not None else 0.0
            if not (value >= 0.0 and value != float("inf")):   # NaN fails the first test
                raise ConfigError(f"{name}.{key}: expected a finite number >= 0, got {value}")


# kind -> schema, for tools that read every configs/*.yaml
SCHEMAS = {"train": TrainConfig}
