"""Streaming state: windows carried through KalmanState vs one window; batch independence; image baseline."""
import pytest
import torch
from torch import nn

from keep.archs.keep_net import KEEP, KalmanState
from test_archs import MICRO, randomise_

T = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def make_net(temporal_attention: bool = True) -> KEEP:
    """MICRO KEEP at 32 px (8x8 latent) with 3 uncertainty blocks and random weights everywhere but the flow net (whose
    default init gives smooth, moderate flows), so CFT, CFA and the gain are all non-trivial."""
    torch.manual_seed(0)
    net = KEEP(**dict(MICRO, img_size=32, connect_list=("8", "16", "32"), cross_fuse_list=("8", "16"),
                      num_uncertainty_layers=3)).eval()
    for name, child in net.named_children():
        if name != "flownet":
            randomise_(child, seed=len(name))
    with torch.no_grad():
        net.position_emb.normal_(0, 0.1)
        if not temporal_attention:
            for block in net.kalman_filter.uncertainty_estimator:
                nn.init.zeros_(block.attn_temp.to_out[0].weight)
    return net


@pytest.fixture(scope="module")
def clip():
    gen = torch.Generator().manual_seed(1)
    base = torch.rand(2, 1, 3, 32, 32, generator=gen) * 2 - 1
    # frames that move a little from one to the next, like a video
    frames = [torch.roll(base, shifts=(i, 2 * i), dims=(-2, -1)) + 0.05 * torch.randn(base.shape, generator=gen)
              for i in range(T)]
    return torch.cat(frames, dim=1).clamp(-1, 1)


def run_windows(net, x, sizes, **kwargs):
    outs, state, start = [], None, 0
    for size in sizes:
        out, state = net.restore_window(x[:, start:start + size], state, **kwargs)
        outs.append(out)
        start += size
    return torch.cat(outs, dim=1), state


@pytest.mark.parametrize("sizes", [(2, 3), (1, 1, 3), (4, 1)])
def test_carried_state_equals_one_window_without_temporal_attention(clip, sizes):
    net = make_net(temporal_attention=False)
    x = clip[:1]
    with torch.inference_mode():
        full = net(x, return_intermediates=True)
        streamed, state = run_windows(net, x, sizes)
    assert full.gains.std() > 1e-3 and full.indices.unique().numel() > 4  # a non-trivial network
    torch.testing.assert_close(streamed, full.frames, rtol=1e-4, atol=1e-4)
    assert state.frames_seen == T
    torch.testing.assert_close(state.prev_output, full.frames[:, -1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(state.anchor_codes, full.z_obs[:, 0])
    torch.testing.assert_close(state.prev_codes, full.z_obs[:, -1], rtol=1e-5, atol=1e-5)


def test_state_none_is_a_fresh_start_and_next_window_is_predicted(clip):
    """``state=None`` (the release's forward) starts a new video: the window's first frame is restored with
    nothing before it, exactly as a video of that one frame; no call leaves state behind in the module."""
    net = make_net(temporal_attention=True)
    x = clip[:1]
    with torch.inference_mode():
        fresh_first, _ = net.restore_window(x[:, 2:])      # before any other call
        first, state = net.restore_window(x[:, :2])
        carried = net(x[:, 2:], state=state, return_intermediates=True)
        fresh, _ = net.restore_window(x[:, 2:])            # reset per window = each window alone
        frame_2_alone = net(x[:, 2:3])                     # a one-frame video: no history, no prediction
        frame_0_alone = net(x[:, :1])
    assert torch.equal(fresh, fresh_first)                 # the earlier windows left nothing behind
    torch.testing.assert_close(fresh[:, 0], frame_2_alone[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(first[:, 0], frame_0_alone[:, 0], rtol=1e-4, atol=1e-4)
    assert (fresh[:, 1:] - frame_2_alone[:, :1]).abs().max() > 1e-3   # later frames do use their window
    assert carried.flows.shape == (1, 3, 2, 32, 32)  # a flow into the window's first frame too
    # frame 0 of the carried window is a Kalman prediction, not a restart
    assert (carried.frames[:, 0] - fresh[:, 0]).abs().max() > 1e-3
    assert carried.state.frames_seen == T


def test_batch_items_are_independent(clip):
    net = make_net(temporal_attention=True)
    with torch.inference_mode():
        both, state = run_windows(net, clip, (2, 3))
        for item in range(2):
            single, single_state = run_windows(net, clip[item:item + 1], (2, 3))
            torch.testing.assert_close(both[item:item + 1], single, rtol=1e-3, atol=1e-3)
            torch.testing.assert_close(state.prev_feats["8"][item:item + 1], single_state.prev_feats["8"],
                                       rtol=1e-4, atol=1e-4)


def test_without_propagation_every_frame_is_restored_alone(clip):
    net = make_net()
    with torch.inference_mode():
        out, state = net.restore_window(clip, propagate=False)
        singles = torch.cat([net(clip[:, i:i + 1]) for i in range(T)], dim=1)
        propagated = net(clip)
    assert state is None
    torch.testing.assert_close(out, singles, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[:, 0], propagated[:, 0], rtol=1e-4, atol=1e-4)  # frame 0 is not filtered
    assert (out[:, 1:] - propagated[:, 1:]).abs().max() > 1e-3


def test_precomputed_flows_are_used_and_checked(clip):
    net = make_net()
    x = clip[:1, :3]
    with torch.inference_mode():
        ref = net(x, return_intermediates=True)
        again = net(x, flows=ref.flows)
        zero = net(x, flows=torch.zeros_like(ref.flows))
        with pytest.raises(ValueError, match="flows must be"):
            net(x, state=ref.state, flows=ref.flows)  # a carried state needs T flows, not T - 1
        with pytest.raises(ValueError, match="new stream"):
            net(clip[:, :2], state=ref.state)  # batch of 2 after a batch of 1
    torch.testing.assert_close(again, ref.frames)
    assert (zero - ref.frames).abs().max() > 1e-4


def test_state_detach_cuts_the_graph(clip):
    net = make_net().train()
    out = net(clip[:1, :2])
    assert out.state.prev_feats["8"].requires_grad
    cut = out.state.detach()
    assert isinstance(cut, KalmanState) and not cut.prev_feats["8"].requires_grad
    assert not any(t.requires_grad for t in cut.gain_context.anchor + cut.gain_context.prev)
