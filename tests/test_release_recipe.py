"""The resolved configs/release/stage{1,2,3}.yaml pinned to the v1.0.0 release's training options, key by
key (shared/spec/official-RECIPE-v1.md). A changed default, base config or key cannot move the release
recipe silently: each row names the official file and line its value comes from.

S1/S2/S3 = options/train/stage1_VQGAN.yml / stage2_KEEP.yml / stage3_KEEP.yml; VM, KGM, KA, LS, DS =
basicsr/models/vqgan_model.py, models/keep_gan_model.py, archs/keep_arch.py, losses/losses.py,
data/vfhq_real_degradation2_dataset.py (github jnjaby/KEEP f382730).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from keep.engine.config_cli import resolve

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NET = {"img_size": 512, "nf": 64, "ch_mult": [1, 2, 2, 4, 4, 8], "codebook_size": 1024, "emb_dim": 256}

# (key in `keep config show --json`, official value, where the release sets it)
STAGE1 = [
    ("stage", 1, "S1:3 VQGANModel"),
    ("net.type", "VQGAN", "S1:34-35 VQAutoEncoder"),
    *[(f"net.{k}", v, "S1:36-40") for k, v in NET.items()],
    ("net.res_blocks", 2, "VA:346-409 defaults"), ("net.attn_resolutions", [16], "VA defaults"),
    ("net.beta", 0.25, "VA defaults"),
    ("discriminator.type", "PatchDiscriminator", "S1:42-45 VQGANDiscriminator"),
    ("discriminator.ndf", 64, "S1:45"), ("discriminator.n_layers", 4, "VA:412-456 default"),
    ("init", [], "S1:49 pretrain_network_g: ~ (random)"),
    ("frozen", [], "no fix_modules"),
    ("optim.lr", 7e-5, "S1:60"), ("optim.betas", [0.9, 0.99], "S1:62"), ("optim.weight_decay", 0.0, "S1:61"),
    ("optim.schedule", "cosine", "S1:70 CosineAnnealingRestartLR"), ("optim.min_lr", 6e-5, "S1:73 eta_min"),
    ("optim.warmup_iters", 0, "S1:77 warmup_iter: -1"),
    ("optim_d.lr", 7e-5, "S1:65"), ("optim_d.betas", [0.9, 0.99], "S1:67"), ("optim_d.weight_decay", 0.0, "S1:66"),
    ("optim_d.schedule", "cosine", "S1:69-73 (one scheduler for G and D)"), ("optim_d.min_lr", 6e-5, "S1:73"),
    ("iters", 1_600_000, "S1:75"),
    ("data.batch_size", 4, "S1:29"), ("data.gpus", 2, "S1:4"),
    ("data.train.clip_length", 1, "DS:22-147 SingleVFHQDataset"), ("data.train.gt_size", 512, "S1:21-22"),
    ("data.train.hflip_prob", 0.0, "S1:23 use_flip: false"), ("data.train.sampling", "frame", "DS:62-69"),
    ("data.train.align", "after_degradation", "S1:17 need_align (aligned on the fly)"),
    ("losses.l1", 1.0, "S1:80-83"), ("losses.perceptual", 1.0, "S1:85-87"),
    ("losses.perceptual_type", "lpips_vgg_release", "S1:86-89 LPIPSLoss use_input_norm + range_norm, LS:256-282"),
    ("losses.gan_type", "hinge", "S1:93"), ("losses.adversarial", 1.0, "S1:94"),
    ("losses.adversarial_weight", "adaptive", "VM:150-157"), ("losses.adaptive_weight_max", 1.0, "VM:153"),
    ("losses.adaptive_weight_scale", 0.8, "VM:79 disc_weight, VM:156"),
    ("losses.codebook", 1.0, "VM:68-71"), ("losses.disc_start", 31, "S1:98 net_d_start_iter"),
    ("losses.disc_passes", "separate", "VM:170-183"),
    ("ema_decay", 0.995, "S1:78"), ("ema_warmup", False, "BM:77-84 fixed decay"),
]

DEGRADATION = [
    ("protocol", "release", "DS:326-375 order blur, noise, down, noise, codec"),
    ("blur_kernel_size", 21, "S2:29"), ("blur_aniso_prob", 0.3, "S2:30-31 kernel_list/kernel_prob"),
    ("blur_sigma", [2.0, 10.0], "S2:32"), ("blur_sigma_y", [2.0, 10.0], "S2:33"),
    ("noise_sigma", [0.0, 10.0], "S2:34"), ("noise_per_frame", True, "DS:330-346"), ("gray_noise_prob", 0.5, "DS:331"),
    ("downsample_interp", "random", "DS:334-342"), ("downsample_probs", [0.3, 0.3, 0.4], "S2:35 resize_prob"),
    ("crf", [25, 45], "S2:36 crf_range"), ("crf_inclusive", False, "DS:349 randint: 25..44"),
    ("codec", "libx264", "S2:37-38"), ("fps", 1, "DS:352 rate=1"), ("quantize", "truncate", "DS:361"),
    ("channels", "bgr", "DS:361-362 BGR as rgb24"), ("scale", 4, "S2:21"), ("upsample", False, "KA:752-755"),
]

VIDEO_DATA = [
    ("data.batch_size", 1, "S2:43 / S3:43"),
    ("data.train.clip_length", 8, "S2:22"), ("data.train.gt_size", 512, "S2:21"),
    ("data.train.intervals", [1, 2, 3, 4, 5, 6], "S2:23 interval_list"),
    ("data.train.reverse_prob", 0.5, "S2:24 random_reverse, DS:290-291"),
    ("data.train.hflip_prob", 0.0, "S2:25 use_flip: false"), ("data.train.sampling", "frame", "DS:256-291"),
    ("data.train.align", "after_degradation", "DS:378-392 degrade, then align"),
    *[(f"data.train.degradation.{k}", v, where) for k, v, where in DEGRADATION],
]

KEEP_NET = [
    ("net.type", "KEEP", "S2:66"), *[(f"net.{k}", v, "S2:67-74") for k, v in NET.items()],
    ("net.dim_embd", 512, "S2:70"), ("net.n_head", 8, "S2:71"), ("net.n_layers", 9, "S2:72"),
    ("net.kalman_attn_head_dim", 48, "S2:79"), ("net.num_uncertainty_layers", 3, "S2:80"),
    ("net.kalman_attn_heads", 8, "KA:593-705 (n_head)"), ("net.mask_ratio", 0.0, "KA:602 default"),
    ("net.flow_type", "gmflow", "S2:78 GMFlow"),
    ("net.kalman_init", "official", "KA:336-340, KA:506-519 KalmanFilter._init_weights"),
]

STAGE2 = [
    ("stage", 2, "S2:3 KEEPModel"), *KEEP_NET,
    ("init.0.path", "experiments/release_stage1/export.pth", "S2:82 vqgan_path (stage I params_ema)"),
    ("init.1.weight", "gmflow-sintel", "S2:78 flownet_path"),
    ("frozen", ["hq_encoder.", "quantize.", "generator.", "flownet.", "fuse_convs_dict.", "cross_fuse."],
     "S2:77 fix_modules"),
    ("optim.lr", 2e-4, "S2:107"), ("optim.betas", [0.9, 0.99], "S2:109"), ("optim.weight_decay", 0.0, "S2:108"),
    ("optim.schedule", "multistep", "S2:112"), ("optim.milestones", [200_000, 400_000], "S2:113"),
    ("optim.gamma", 0.5, "S2:114"), ("optim.warmup_iters", 0, "S2:117"),
    ("iters", 500_000, "S2:116"), ("data.gpus", 2, "S2:5"), *VIDEO_DATA,
    ("losses.cross_entropy", 0.5, "S2:122-123 entropy_loss_weight"), ("losses.feature", 1.0, "S2:120-121"),
    ("losses.l1", 0.0, "S2:125-128 (no gradient: KM:137 detach_16, frozen generator)"),
    ("ema_decay", 0.999, "S2:104"), ("ema_warmup", False, "BM:77-84"),
]

STAGE3 = [
    ("stage", 3, "S3:3 KEEPGANModel"), *KEEP_NET,
    ("net.connect_list", ["16", "32", "64"], "S3:75 cft_list"), ("net.cft_weight", 1.0, "S3:81 cond: 1"),
    ("net.cross_fuse_list", ["16", "32"], "S3:82 cfa_list"), ("net.cross_fuse_nhead", 4, "S3:83"),
    ("net.cross_fuse_dim", 256, "S3:84"),
    ("discriminator.type", "TemporalPatchDiscriminator", "S3:87-91 Discriminator3D"),
    ("discriminator.nf", 32, "S3:90"), ("discriminator.use_spectral_norm", True, "VA:511-591"),
    ("discriminator.num_layers", 6, "VA:511-591 six Conv3d"), ("discriminator.first_padding", [1, 1, 1], "VA:523-529"),
    ("init.0.path", "experiments/release_stage2/export.pth", "S3:95 pretrain_network_g (params_ema)"),
    ("init.0.exclude", ["fuse_convs_dict.", "cross_fuse."], "S3:96 strict_load_g: false (CFT/CFA absent)"),
    ("fusion_init", "official", "KA:189-195, KA:239-249 (all zero)"),
    ("optim.lr", 2e-5, "S3:105"), ("optim.betas", [0.9, 0.99], "S3:107"), ("optim.schedule", "constant", "S3:114-117 milestones []"),
    ("optim_d.lr", 1e-5, "S3:110"), ("optim_d.betas", [0.9, 0.99], "S3:112"), ("optim_d.schedule", "constant", "S3:114-117"),
    ("iters", 50_000, "S3:119"), ("data.gpus", 4, "S3:5"), *VIDEO_DATA,
    ("losses.l1", 0.1, "S3:123-126"), ("losses.perceptual", 1.0, "S3:127-129"),
    ("losses.perceptual_type", "lpips_vgg_release", "S3:128-131 LPIPSLoss, LS:256-282"),
    ("losses.temporal", 0.1, "S3:134-137 CharbonnierLoss"), ("losses.temporal_scales", ["32"], "S3:85 temp_reg_list, KGM:189-234"),
    ("losses.adversarial", 0.01, "S3:142"), ("losses.adversarial_weight", "fixed", "KGM:261-270"),
    ("losses.gan_type", "hinge", "S3:141"), ("losses.disc_start", 31, "S3:146"),
    ("losses.disc_passes", "separate", "KGM:279-292"),
    ("losses.cross_entropy", 0.0, "S3: no cross_entropy_loss"), ("losses.feature", 0.0, "S3: no use_hq_feat_loss"),
    ("ema_decay", 0.999, "S3:102"), ("ema_warmup", False, "BM:77-84"),
]

ROWS = [(1, *row) for row in STAGE1] + [(2, *row) for row in STAGE2] + [(3, *row) for row in STAGE3]


def _lookup(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


_RESOLVED = {}


def _resolved(stage: int):
    if stage not in _RESOLVED:
        _RESOLVED[stage] = resolve(CONFIGS / "release" / f"stage{stage}.yaml")
    return _RESOLVED[stage]


@pytest.mark.parametrize("stage, key, official, where", ROWS, ids=[f"s{r[0]}-{r[1]}" for r in ROWS])
def test_release_config_has_the_official_value(stage, key, official, where):
    value = _lookup(_resolved(stage), key)
    if isinstance(official, float):
        assert value == pytest.approx(official), f"{key} (official {where})"
    else:
        assert value == official, f"{key}: {value!r}, official {official!r} ({where})"


def test_the_three_stages_share_the_network():
    assert _resolved(2)["net"] == {**_resolved(3)["net"]}
