"""Arch building blocks: shapes at tiny sizes, and numerics against independent references."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import keep.archs  # noqa: F401  (fills ARCHS)
from keep.archs.fusion import CFABlock, CFTBlock
from keep.archs.kalman import KalmanFilterNet
from keep.archs.keep_net import KEEP, KEEPOutput
from keep.archs.layers import AttnBlock, CrossAttention, FeedForward, ResBlock
from keep.archs.transformer import CodeTransformer, PosSelfAttention
from keep.archs.vqgan import VQGAN, Encoder, Generator, VectorQuantizer
from keep.archs.warp import flow_warp
from keep.registry import ARCHS

# A KEEP with the release's structure at 64 px (latent 16x16 after two downsamplings).
MICRO = dict(img_size=64, nf=8, ch_mult=(1, 2, 2), res_blocks=1, codebook_size=32, emb_dim=16, dim_embd=32,
             n_head=2, n_layers=1, cross_fuse_nhead=2, cross_fuse_dim=8, num_uncertainty_layers=2,
             kalman_attn_heads=2, kalman_attn_head_dim=8,
             flow_kwargs=dict(feature_channels=16, num_transformer_layers=1, ffn_dim_expansion=1,
                              backbone_channels=(8, 12, 16), upsampler_channels=16))
SMALL_VQ = dict(nf=4, emb_dim=8, ch_mult=(1, 2, 2), res_blocks=1, img_size=32, attn_resolutions=(8,))
TINY_KWARGS = {
    "KEEP": MICRO, "Encoder": SMALL_VQ, "Generator": SMALL_VQ, "VQGAN": dict(SMALL_VQ, codebook_size=16),
    "VectorQuantizer": dict(codebook_size=16, emb_dim=8), "CodeTransformer": dict(
        emb_dim=8, dim_embd=16, n_head=2, n_layers=1, codebook_size=16, latent_tokens=16),
    "TransformerSALayer": dict(embed_dim=16, nhead=2, dim_mlp=32),
    "UncertaintyBlock": dict(dim=16, heads=2, dim_head=8),
    "KalmanFilterNet": dict(dim=16, num_layers=1, heads=2, dim_head=8), "CFTBlock": dict(channels=8),
    "CFABlock": dict(channels=8, heads=2, dim_head=4),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def randomise_(module: nn.Module, seed: int = 0, gain: float = 1.0) -> nn.Module:
    """Fill every parameter with random values (zero-init blocks become non-trivial)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * gain / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return module


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_registered_arch_builds(name):
    net = ARCHS.build({"type": name, **TINY_KWARGS.get(name, {})})
    assert isinstance(net, nn.Module) and sum(p.numel() for p in net.parameters()) > 0


def test_release_tap_and_fuse_indices():
    enc, gen = Encoder(), Generator()
    assert enc.tap_index == {"512": 2, "256": 5, "128": 8, "64": 11, "32": 14, "16": 18}
    assert gen.fuse_index == {"16": 6, "32": 9, "64": 12, "128": 15, "256": 18, "512": 21}
    assert gen.channels == {"16": 512, "32": 256, "64": 256, "128": 128, "256": 128, "512": 64}
    assert len(enc.blocks) == 25 and len(gen.blocks) == 25 and enc.latent_size == 16


def test_encoder_generator_shapes_and_fuse_points():
    enc, gen = Encoder(**SMALL_VQ), Generator(**SMALL_VQ)
    z, taps = enc(torch.randn(2, 3, 32, 32), taps=["8", "16", "32"])
    assert z.shape == (2, 8, 8, 8)
    assert {k: tuple(v.shape) for k, v in taps.items()} == {
        "8": (2, 8, 8, 8), "16": (2, 8, 16, 16), "32": (2, 4, 32, 32)}
    seen = []
    out = gen(z, fuse=lambda size, x: seen.append((size, tuple(x.shape))) or x)
    assert out.shape == (2, 3, 32, 32)
    assert seen == [("8", (2, 8, 8, 8)), ("16", (2, 8, 16, 16)), ("32", (2, 4, 32, 32))]
    assert torch.equal(out, gen(z))  # an identity fuse changes nothing


def test_resblock_and_attnblock_against_reference():
    torch.manual_seed(0)
    block, attn = randomise_(ResBlock(8, 16)), randomise_(AttnBlock(16))
    x = torch.randn(2, 8, 5, 6)
    h = block.conv1(F.silu(F.group_norm(x, 8, block.norm1.weight, block.norm1.bias, 1e-6)))
    h = block.conv2(F.silu(F.group_norm(h, 16, block.norm2.weight, block.norm2.bias, 1e-6)))
    y = block(x)
    torch.testing.assert_close(y, block.conv_out(x) + h)
    n = attn.norm(y)
    q, k, v = (c(n).flatten(2) for c in (attn.q, attn.k, attn.v))  # (N, C, L)
    w = torch.softmax(torch.einsum("ncq,nck->nqk", q, k) / math.sqrt(16), dim=-1)
    ref = y + attn.proj_out(torch.einsum("nqk,nck->ncq", w, v).reshape_as(y))
    torch.testing.assert_close(attn(y), ref, rtol=1e-5, atol=1e-5)


def test_cross_attention_and_geglu_against_reference():
    attn = randomise_(CrossAttention(12, heads=3, dim_head=5))
    x, ctx = torch.randn(2, 7, 12), torch.randn(2, 9, 12)
    q = attn.to_q(x).view(2, 7, 3, 5).transpose(1, 2)
    k = attn.to_k(ctx).view(2, 9, 3, 5).transpose(1, 2)
    v = attn.to_v(ctx).view(2, 9, 3, 5).transpose(1, 2)
    out = (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(5), -1) @ v).transpose(1, 2).reshape(2, 7, 15)
    torch.testing.assert_close(attn(x, ctx), attn.to_out[0](out), rtol=1e-5, atol=1e-5)
    ff = randomise_(FeedForward(6))
    proj = ff.net[0].proj(x[..., :6])
    torch.testing.assert_close(ff(x[..., :6]), ff.net[2](proj[..., :24] * F.gelu(proj[..., 24:])))
    assert [k for k, _ in ff.named_parameters()] == [
        "net.0.proj.weight", "net.0.proj.bias", "net.2.weight", "net.2.bias"]


def test_position_self_attention_equals_torch_multihead_attention():
    ours = randomise_(PosSelfAttention(16, heads=4))
    ref = nn.MultiheadAttention(16, 4)  # sequence-first, the release's layer
    ref.load_state_dict(ours.state_dict())
    x, pos = torch.randn(3, 10, 16), torch.randn(10, 16)
    seq, pos_seq = x.transpose(0, 1), pos[:, None]
    expected = ref(seq + pos_seq, seq + pos_seq, seq, need_weights=False)[0].transpose(0, 1)
    torch.testing.assert_close(ours(x, pos), expected, rtol=1e-5, atol=1e-5)


def test_code_transformer_shapes():
    net = CodeTransformer(**TINY_KWARGS["CodeTransformer"])
    assert net(torch.randn(2, 8, 4, 4)).shape == (2, 16, 16)
    assert "idx_pred_layer.1.bias" not in net.state_dict()


def test_quantizer_nearest_lookup_and_straight_through():
    vq = VectorQuantizer(16, 8)
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    brute = torch.cdist(z.detach().permute(0, 2, 3, 1).reshape(-1, 8), vq.embedding.weight).argmin(1).view(2, 9)
    quant, loss, idx = vq(z)
    assert torch.equal(idx, brute)
    looked = vq.lookup(idx, (3, 3))
    assert torch.equal(looked[1, :, 2, 0], vq.embedding.weight[idx[1, 6]])
    torch.testing.assert_close(quant, looked)
    torch.testing.assert_close(loss, 1.25 * F.mse_loss(looked, z))
    quant.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight-through


def test_vqgan_forward():
    out = VQGAN(**SMALL_VQ, codebook_size=16)(torch.rand(2, 3, 32, 32) * 2 - 1)
    recon, loss, idx = out
    assert recon.shape == (2, 3, 32, 32) and loss.dim() == 0 and idx.shape == (2, 64)
    assert set(VQGAN(**SMALL_VQ).state_dict()) >= {"quantize.embedding.weight", "encoder.blocks.0.weight"}


def test_fusion_zero_init_modes():
    enc, dec = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    official, last = CFTBlock(8, zero_init="official"), CFTBlock(8, zero_init="last")
    assert all(not m.weight.any() for m in official.modules() if isinstance(m, nn.Conv2d))
    assert last.scale[0].weight.any() and not last.scale[2].weight.any() and not last.shift[2].bias.any()
    torch.testing.assert_close(last(enc, dec), dec)
    cfa_off, cfa = CFABlock(8, 2, 4, zero_init="official"), CFABlock(8, 2, 4, zero_init="last")
    assert all(not m.weight.any() for m in cfa_off.modules() if isinstance(m, nn.Linear))
    assert cfa.attn.to_q.weight.any() and not cfa.attn.to_out[0].weight.any() and not cfa.ff.net[2].weight.any()
    torch.testing.assert_close(cfa(enc, dec), enc)
    with pytest.raises(ValueError, match="zero_init"):
        CFTBlock(8, zero_init="kaiming")


def test_cft_and_cfa_against_reference():
    cft, cfa = randomise_(CFTBlock(8)), randomise_(CFABlock(8, 2, 4))
    enc, dec, prev = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    e = cft.encode_enc(torch.cat([enc, dec], 1))
    torch.testing.assert_close(cft(enc, dec, 0.5), dec + 0.5 * (dec * cft.scale(e) + cft.shift(e)))
    tok, mem = dec.flatten(2).transpose(1, 2), prev.flatten(2).transpose(1, 2)
    x = tok + cfa.norm1(cfa.attn(tok, mem))
    x = x + cfa.norm2(cfa.ff(x))
    torch.testing.assert_close(cfa(dec, prev), x.transpose(1, 2).reshape(2, 8, 4, 4))


def test_flow_warp_integer_shift_and_borders():
    x = torch.randn(2, 3, 6, 7)
    flow = torch.zeros(2, 2, 6, 7)
    torch.testing.assert_close(flow_warp(x, flow), x)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # sample from (row - 1, col + 2)
    out = flow_warp(x, flow)
    torch.testing.assert_close(out[:, :, 1:, :5], x[:, :, :-1, 2:])
    # outside the image reads zero (up to the grid's float rounding, as in the release)
    assert out[:, :, 0].abs().max() < 1e-6 and out[:, :, :, 5:].abs().max() < 1e-6
    half = flow_warp(x, torch.full((2, 2, 6, 7), 0.5) * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
    torch.testing.assert_close(half[..., :6], (x[..., :6] + x[..., 1:]) / 2)
    with pytest.raises(ValueError, match="flow"):
        flow_warp(x, torch.zeros(2, 2, 5, 7))


def test_kalman_gains_shape_range_and_causality():
    net = randomise_(KalmanFilterNet(16, num_layers=2, heads=2, dim_head=8), seed=1, gain=0.5)
    z = torch.randn(1, 5, 16, 4, 4)
    gains, context = net.gains(z)
    assert gains.shape == (1, 5, 1, 4, 4) and bool(((gains > 0) & (gains < 1)).all())
    assert len(context.anchor) == 2 and torch.equal(context.anchor[0], z[:, 0].flatten(2).transpose(1, 2))
    changed = z.clone()
    changed[:, 4] += torch.randn(16, 4, 4)  # not a constant shift: LayerNorm would cancel it
    # temporal attention spans the window: the last frame changes the gain of the first
    assert not torch.allclose(net.gains(changed)[0][:, 0], gains[:, 0])
    for block in net.uncertainty_estimator:
        nn.init.zeros_(block.attn_temp.to_out[0].weight)
    gains, _ = net.gains(z)
    # without it, the sparse-causal attention only looks back (anchor = frame 0, frame t-1)
    torch.testing.assert_close(net.gains(changed)[0][:, :4], gains[:, :4])
    update = net.update(torch.zeros(1, 16, 4, 4), torch.ones(1, 16, 4, 4), gains[:, 2])
    torch.testing.assert_close(update, gains[:, 2].expand(1, 16, 4, 4))  # the gain weights the prediction


def test_keep_forward_shapes_eval_and_training():
    net = KEEP(**MICRO).eval()
    x = torch.rand(2, 3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = net(x, return_intermediates=True, feature_scales=["32"])
    assert isinstance(out, KEEPOutput) and out.frames.shape == (2, 3, 3, 64, 64)
    assert out.logits.shape == (2, 3, 256, 32) and out.indices.shape == (2, 3, 256)
    assert out.z_obs.shape == (2, 3, 16, 16, 16) and out.gains.shape == (2, 3, 1, 16, 16)
    assert out.flows.shape == (2, 2, 2, 64, 64) and out.gen_feats["32"].shape == (2, 3, 16, 32, 32)
    low = torch.rand(1, 2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        small = net(low, need_upscale=True)
        big = net(F.interpolate(low[0], scale_factor=4, mode="bilinear", align_corners=False)[None])
    assert small.shape == (1, 2, 3, 64, 64)
    torch.testing.assert_close(small, big)  # need_upscale is a bilinear x4 first
    with pytest.raises(ValueError, match="64x64"):
        net(torch.rand(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        net(torch.rand(2, 3, 64, 64))


@pytest.mark.parametrize("detach_codes", [False, True])
def test_keep_training_gradients_follow_detach_codes(detach_codes):
    net = KEEP(**MICRO).train()
    out = net(torch.rand(1, 2, 3, 64, 64) * 2 - 1, detach_codes=detach_codes)
    assert isinstance(out, KEEPOutput)  # training mode returns the intermediates
    out.frames.square().mean().backward()
    reached = net.encoder.blocks[-1].weight.grad
    # stage II: straight-through into the fused state reaches E_L; stage III: only CFT/CFA learn
    assert (reached is not None and reached.abs().sum() > 0) == (not detach_codes)
    assert net.fuse_convs_dict["16"].scale[2].weight.grad.abs().sum() > 0
    assert net.flownet.model.upsampler[0].weight.grad is None


def test_keep_mask_ratio_zeroes_tokens_in_training_only():
    net = KEEP(**MICRO, mask_ratio=0.5).train()
    x = torch.rand(1, 2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z_train = net(x).z_obs
        z_eval = net.eval()(x, return_intermediates=True).z_obs
    token_zero = (z_train == 0).all(dim=2)
    assert 0.3 < token_zero.float().mean() < 0.7 and not (z_eval == 0).all(dim=2).any()
    with pytest.raises(ValueError, match="mask_ratio"):
        KEEP(**MICRO, mask_ratio=1.0)
