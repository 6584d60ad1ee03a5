"""The release's training pieces (issue 22), each against an independent computation:

* the perceptual loss: LPIPS-VGG fed ImageNet-normalised images (CodeFormer's double normalisation),
  against the ``lpips`` package fed the same transform written out here. Offline the VGG-16 ImageNet
  backbone is random (seeded); the LPIPS v0.1 linear layers are the package's own file.
* the feature temporal loss: Charbonnier on decoder features, GT flow resized and rescaled, no mask,
  against a warp written with integer index shifts;
* the stage I adaptive-weight factor 0.8 and the separate real / fake discriminator passes;
* the official CFT/CFA zero init and ours ("gated"): which parameters receive a gradient.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import keep.models  # noqa: F401
from keep.config import load_config
from keep.engine.config import TrainConfig
from keep.engine.init import apply_frozen
from keep.engine.step import StepContext
from keep.losses import FeatureTemporalLoss, LPIPSLoss, resize_flow
from keep.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ---------------------------------------------------------------- LPIPS with the double normalisation
def test_lpips_release_is_the_package_on_imagenet_normalised_inputs():
    import lpips
    torch.manual_seed(0)
    pred = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    target = torch.rand(2, 3, 32, 32) * 2 - 1
    ours = LPIPSLoss(pretrained=False, seed=3, input_norm="imagenet")
    # the reference: the package's LPIPS with the same (random, offline) VGG-16 weights and its own
    # v0.1 linear layers read from the package's file here
    reference = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    reference.net.load_state_dict(ours.model.net.state_dict())
    lin_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
    reference.load_state_dict(torch.load(lin_file, map_location="cpu", weights_only=True), strict=False)
    for name, value in torch.load(lin_file, map_location="cpu", weights_only=True).items():
        assert torch.equal(ours.model.state_dict()[name], value), name   # the shipped linear layers

    def release_transform(x):  # LPIPSLoss of the release: range_norm, then use_input_norm
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return ((x + 1) / 2 - mean) / std

    expected = reference(release_transform(target), release_transform(pred), normalize=False).mean()
    got = ours(pred, target)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    plain = reference(target, pred, normalize=False).mean()          # LPIPS as the package intends
    assert abs(float(plain) - got.item()) > 1e-3 * abs(got.item())   # the transform matters
    assert torch.allclose(LPIPSLoss(pretrained=False, seed=3)(pred, target), plain, rtol=1e-5, atol=1e-7)
    got.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_release_configs_use_the_release_lpips():
    for stage in (1, 3):
        cfg = load_config(TrainConfig, CONFIGS / "release" / f"stage{stage}.yaml",
                          ["losses.perceptual_pretrained=false"])
        loss = MODELS.get(f"stage{stage}")(cfg).perceptual
        assert isinstance(loss, LPIPSLoss) and loss.input_norm == "imagenet"


# ---------------------------------------------------------------- feature temporal loss
def _shift_left(x: np.ndarray, d: int) -> np.ndarray:
    """out[..., i, j] = x[..., i, j + d], zero where j + d leaves the image (a warp by flow x = +d)."""
    out = np.zeros_like(x)
    out[..., :, : x.shape[-1] - d] = x[..., :, d:]
    return out


def test_feature_temporal_loss_against_a_hand_computation():
    rng = np.random.default_rng(0)
    b, t, c = 2, 3, 4
    feats = {"16": rng.standard_normal((b, t, c, 16, 16)).astype(np.float32),
             "32": rng.standard_normal((b, t, c, 32, 32)).astype(np.float32)}
    # GT flow at 64 px: 4 px to the right everywhere (frame t-1 sampled 4 px right of frame t's pixel)
    flows = torch.zeros(b * (t - 1), 2, 64, 64)
    flows[:, 0] = 4.0
    got = FeatureTemporalLoss()({k: torch.from_numpy(v) for k, v in feats.items()}, flows)
    expected = 0.0
    for size, feat in feats.items():
        d = 4 * int(size) // 64                      # the flow rescaled to the feature size: 1 or 2 px
        prev, curr = feat[:, :-1], feat[:, 1:]
        expected += np.sqrt((curr - _shift_left(prev, d)) ** 2 + 1e-12).mean()
    assert abs(float(got) - expected) < 1e-5 * expected
    # a static feature map against a moving one: zero loss when the features follow the flow
    base = rng.standard_normal((1, 1, 4, 16, 40)).astype(np.float32)
    moving = np.concatenate([base[..., 8:24]] + [base[..., 8 - k:24 - k] for k in (1, 2)], axis=1)  # moves right 1 px/frame
    flow = torch.zeros(2, 2, 64, 64)
    flow[:, 0] = -4.0                                # at 16 px: -1, frame t at j is frame t-1 at j - 1
    loss = FeatureTemporalLoss()({"16": torch.from_numpy(moving)}, flow)
    inner = np.sqrt((moving[:, 1:, :, :, 1:] - moving[:, :-1, :, :, :-1]) ** 2 + 1e-12)
    assert inner.max() < 1e-5 and float(loss) < 0.1   # only the border column (zeros) contributes


def test_resize_flow_rescales_values_and_size():
    flow = torch.zeros(1, 2, 64, 32)
    flow[:, 0], flow[:, 1] = 8.0, -4.0
    small = resize_flow(flow, (16, 16))
    assert small.shape == (1, 2, 16, 16)
    assert torch.allclose(small[:, 0], torch.full((1, 16, 16), 4.0)) and torch.allclose(small[:, 1], torch.full((1, 16, 16), -1.0))


# ---------------------------------------------------------------- stage I: adaptive weight x 0.8
def _tiny_stage1(*overrides):
    cfg = load_config(TrainConfig, CONFIGS / "tiny_stage1.yaml", ["losses.perceptual=0", *overrides])
    torch.manual_seed(0)
    return MODELS.get("stage1")(cfg)


def test_adaptive_weight_scale_multiplies_the_clamped_ratio():
    torch.manual_seed(1)
    frames = torch.rand(2, 3, 64, 64) * 2 - 1
    weights = {}
    for scale in (1.0, 0.8):
        model = _tiny_stage1(f"losses.adaptive_weight_scale={scale}", "losses.adversarial=0.5")
        recon, _, _ = model.net(frames)
        l1 = F.l1_loss(recon, frames)
        logs = {}
        model.shared_generator_losses(recon, frames, True, logs, reconstruction=l1, last_layer=model.last_layer())
        # by hand: ||d l1 / dW|| / (||d g_adv / dW|| + 1e-4), clamped to [0, 1], x scale x 0.5
        last = model.last_layer()
        g_rec = torch.autograd.grad(l1, last, retain_graph=True)[0]
        g_adv = torch.autograd.grad(-model.disc(recon).mean(), last)[0]
        ratio = min(float(g_rec.norm() / (g_adv.norm() + 1e-4)), 1.0)
        assert logs["adv_weight"] == pytest.approx(ratio * scale * 0.5, rel=1e-5)
        weights[scale] = logs["adv_weight"]
    assert weights[0.8] == pytest.approx(0.8 * weights[1.0], rel=1e-5)


# ---------------------------------------------------------------- separate real / fake D passes
def _disc_grads(passes: str, real, fake):
    model = _tiny_stage1(f"losses.disc_passes={passes}")
    model.disc.train()
    opt = {"disc": torch.optim.SGD(model.disc.parameters(), lr=0.0)}
    ctx = StepContext(opt, {"disc": list(model.disc.parameters())}, torch.amp.GradScaler("cpu", enabled=False),
                      "none", torch.device("cpu"), {})
    reference = copy.deepcopy(model.disc)
    logs = {}
    model.discriminator_step(real, fake, ctx, logs)
    return {n: p.grad.clone() for n, p in model.disc.named_parameters()}, reference, logs


def test_separate_passes_are_two_batchnorm_batches():
    torch.manual_seed(2)
    real, fake = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 0.2
    grads, disc, logs = _disc_grads("separate", real, fake)
    # by hand: hinge on each batch through its own forward (own BatchNorm statistics), summed
    loss = F.relu(1 - disc(real)).mean() + F.relu(1 + disc(fake)).mean()
    loss.backward()
    for name, p in disc.named_parameters():
        assert torch.allclose(grads[name], p.grad, rtol=1e-4, atol=1e-6), name
    assert logs["d_loss"] == pytest.approx(float(loss), rel=1e-5)
    joint, _, _ = _disc_grads("joint", real, fake)     # one batch of both: other statistics, other gradients
    assert any(not torch.allclose(joint[n], 0.5 * grads[n], rtol=1e-3, atol=1e-6) for n in grads)


# ---------------------------------------------------------------- CFT / CFA init: who learns
def _gradient_receivers(fusion_init: str, steps: int = 3):
    cfg = load_config(TrainConfig, CONFIGS / "tiny_stage3.yaml",
                      [f"fusion_init={fusion_init}", "losses.perceptual=0", "losses.adversarial=0",
                       "losses.temporal_scales=[\"32\"]", "optim.lr=1e-2"])
    torch.manual_seed(0)
    model = MODELS.get("stage3")(cfg)
    model.after_init(frozenset())
    apply_frozen(model.net, cfg.frozen)
    params = [p for p in model.net.parameters() if p.requires_grad]
    ctx = StepContext({"net": torch.optim.Adam(params, lr=1e-2)}, {"net": params},
                      torch.amp.GradScaler("cpu", enabled=False), "none", torch.device("cpu"), {})
    torch.manual_seed(1)
    gt = torch.rand(1, 3, 3, 64, 64) * 2 - 1
    batch = {"gt": gt, "lq": F.avg_pool2d(gt.flatten(0, 1), 4).view(1, 3, 3, 16, 16)}
    receivers = set()
    for step in range(steps):
        model.train()
        model.training_step(batch, step, ctx)
        receivers |= {n for n, p in model.net.named_parameters() if p.grad is not None and p.grad.abs().max() > 0}
    fusion = {n for n, p in model.net.named_parameters() if n.startswith(("fuse_convs_dict.", "cross_fuse."))}
    return receivers, fusion


def test_official_fusion_init_lets_only_biases_and_layernorms_learn():
    receivers, fusion = _gradient_receivers("official")
    local = {n.split(".", 2)[2] for n in receivers}
    assert receivers <= fusion
    assert local == {"scale.2.bias", "shift.2.bias",                                   # CFT
                     "attn.to_out.0.bias", "ff.net.2.bias",                            # CFA
                     "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"}, sorted(local)


def test_gated_fusion_init_lets_every_fusion_weight_learn():
    receivers, fusion = _gradient_receivers("gated")
    assert receivers <= fusion and receivers == fusion, sorted(fusion - receivers)[:8]


# ---------------------------------------------------------------- the release's other inits and shapes
def test_official_kalman_init_is_normal_002_and_kaiming():
    from torch import nn
    from keep.archs.kalman import KalmanFilterNet
    torch.manual_seed(0)
    ours = KalmanFilterNet(64, 2, 2, 32)
    official = KalmanFilterNet(64, 2, 2, 32, init="official")
    zero_by_default = [n for n, p in ours.named_parameters() if "attn_temp.to_out.0.weight" in n]
    params = dict(ours.named_parameters())
    assert zero_by_default and all(float(params[n].detach().abs().max()) == 0 for n in zero_by_default)
    for name, module in official.named_modules():
        if isinstance(module, nn.Linear):
            assert abs(float(module.weight.std()) - 0.02) < 0.002, name      # overwrites the zero to_out too
            assert module.bias is None or float(module.bias.abs().max()) == 0
        elif isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            assert abs(float(module.weight.std()) / math.sqrt(2 / fan_in) - 1) < 0.25, name
            assert module.bias is None or float(module.bias.abs().max()) == 0


def test_release_temporal_discriminator_pads_its_first_conv_by_one():
    from keep.archs.discriminator import TemporalPatchDiscriminator
    d = TemporalPatchDiscriminator(nf=4, num_layers=4, use_spectral_norm=False, first_padding=[1, 1, 1])
    size = 64
    for i in range(4):                                  # Conv3d output size: (n + 2p - 5) // 2 + 1
        size = (size + 2 * (1 if i == 0 else 2) - 5) // 2 + 1
    out = d(torch.zeros(1, 5, 3, 64, 64))
    assert out.shape == (1, 5, 16, size, size) and size == 4
    first = d.conv[0](torch.zeros(1, 3, 5, 64, 64))    # (B, C, T, H, W): T kept, 64 -> 31 (ours: 32)
    assert first.shape[2:] == (5, 31, 31)
    default = TemporalPatchDiscriminator(nf=4, num_layers=4, use_spectral_norm=False)
    assert default.conv[0](torch.zeros(1, 3, 5, 64, 64)).shape[2:] == (5, 32, 32)
