"""Losses (supplement Eq. 3-8) and discriminators against hand-computed references."""
import pytest
import torch
import torch.nn.functional as F

from keep.archs.discriminator import PatchDiscriminator, TemporalPatchDiscriminator
from keep.archs.warp import flow_warp
from keep.losses import (GANLoss, PerceptualLoss, TemporalLoss, code_cross_entropy, code_feature_loss,
                         consistency_mask)


def test_gan_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -0.5]), torch.tensor([0.5, -3.0])
    hinge = GANLoss("hinge")
    assert hinge.discriminator_loss(real, fake).item() == pytest.approx(0.5 * ((0 + 1.5) / 2 + (1.5 + 0) / 2))
    assert hinge.generator_loss(fake).item() == pytest.approx(1.25)
    vanilla = GANLoss("vanilla")
    sig = torch.sigmoid
    expected = -0.5 * (torch.log(sig(real)).mean() + torch.log(1 - sig(fake)).mean())
    assert vanilla.discriminator_loss(real, fake).item() == pytest.approx(expected.item(), rel=1e-5)
    assert GANLoss("lsgan").generator_loss(fake).item() == pytest.approx(((0.5 - 1) ** 2 + 16) / 2)
    with pytest.raises(ValueError, match="gan_type"):
        GANLoss("wgan-gp")


def test_code_losses():
    logits = torch.randn(2, 4, 8)
    target = torch.randint(0, 8, (2, 4))
    assert code_cross_entropy(logits, target).item() == pytest.approx(
        F.cross_entropy(logits.reshape(8, 8), target.reshape(8)).item())
    feat = torch.randn(2, 3, 2, 2, requires_grad=True)
    target_feat = torch.randn(2, 3, 2, 2, requires_grad=True)
    loss = code_feature_loss(feat, target_feat)
    loss.backward()
    assert loss.item() == pytest.approx(((feat - target_feat) ** 2).mean().item())
    assert target_feat.grad is None  # sg(): the codebook side gets no gradient


def test_perceptual_loss_random_backbone_is_seeded_and_differentiable():
    a, b = PerceptualLoss({"conv2_2": 1.0}, pretrained=False, seed=1), PerceptualLoss({"conv2_2": 1.0}, pretrained=False, seed=1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    assert a(x, x).item() == 0.0
    la = a(y, x)
    assert la.item() > 0 and la.item() == pytest.approx(b(y, x).item())
    la.backward()
    assert y.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in a.parameters())
    with pytest.raises(ValueError, match="unknown VGG-19 layer"):
        PerceptualLoss({"relu9": 1.0}, pretrained=False)


def _shift_flow(n, h, w, dx):
    flow = torch.zeros(n, 2, h, w)
    flow[:, 0] = dx
    return flow


def test_consistency_mask_marks_inconsistent_flow():
    fwd = _shift_flow(1, 16, 16, 2.0)
    mask = consistency_mask(fwd, -fwd)  # there and back: consistent, except where it leaves the frame
    assert mask[..., :14].min().item() == 1.0 and mask[..., 14:].max().item() == 0.0
    assert consistency_mask(fwd, fwd).mean().item() == 0.0   # there and further: occluded everywhere


def test_temporal_loss_is_zero_for_motion_that_follows_the_gt_flow():
    torch.manual_seed(0)
    t, h, w = 3, 16, 16
    frame0 = torch.rand(1, 3, h, w + 8) * 2 - 1
    # each frame is the previous one moved left by 1 px, so frame t = warp(frame t-1, flow +1 px)
    clip = torch.stack([frame0[..., i:i + w] for i in range(t)], dim=1)

    def flow_fn(a, b_):  # exact flow a -> b_ from the known motion: +1 px when b_ is the previous frame
        n = a.shape[0] // 2
        return torch.cat([_shift_flow(n, h, w, 1.0), _shift_flow(n, h, w, -1.0)])

    loss = TemporalLoss(beta=0.5)
    interior = loss(clip, clip, flow_fn)
    assert interior.item() < 0.02  # only the 1-px border, outside the warped frame, is left
    flicker = clip + torch.randn_like(clip) * 0.3
    assert loss(flicker, clip, flow_fn).item() > 10 * interior.item()


def test_flow_warp_direction_matches_the_loss_convention():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(flow_warp(x, _shift_flow(1, 4, 4, 1.0))[..., :3], x[..., 1:])


def test_discriminator_shapes_and_temporal_receptive_field():
    d2 = PatchDiscriminator(ndf=8, n_layers=3)
    assert d2(torch.rand(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    d3 = TemporalPatchDiscriminator(nf=4, num_layers=3).eval()
    x = torch.rand(1, 5, 3, 32, 32)
    out = d3(x)
    assert out.shape == (1, 5, 8, 4, 4)
    y = x.clone()
    y[:, 4] = 0  # change the last frame only: scores of the middle frame see it (3 layers, kernel 3 in time)
    assert not torch.allclose(d3(y)[:, 2], out[:, 2])
