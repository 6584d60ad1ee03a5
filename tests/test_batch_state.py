"""Several faces in one network call keep every part of their Kalman state (keep/restore/batching.py).

``KalmanState.stack`` / ``split`` carry every field, the causal key/value cache of the gain's temporal
attention included: two faces restored together, window after window, must come out as each restored
alone. The earlier batching rebuilt the gain context without the cache, so a causal model's attention
span restarted every window. (The restored faces of a random tiny network do not show it: its top-1
code choice absorbs small changes of the gain; the states each call starts from do.)
"""
import numpy as np
import pytest
import torch

import keep
from keep.archs.keep_net import KalmanState
from keep.restore.batching import BatchRestorer
from keep.restore.restorer import FaceRestorer

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 64


@pytest.fixture(scope="module")
def causal_net():
    torch.manual_seed(0)
    net = keep.create_model("keep-tiny", img_size=SIZE, causal=True, causal_window=4).eval()
    with torch.no_grad():
        for p in net.parameters():   # non-zero everywhere: the temporal attention's output starts at zero
            p.normal_(std=0.05)
    return net


def _clip(seed, frames):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.float32)
    return [np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8) for _ in range(frames)]


class Recording(torch.nn.Module):
    """The network, recording the state each call starts from."""

    def __init__(self, net):
        super().__init__()
        self.net, self.img_size, self.states = net, net.img_size, []

    def restore_window(self, x, state=None, **kwargs):
        self.states.append(state)
        return self.net.restore_window(x, state=state, **kwargs)


def test_two_causal_faces_batched_equal_each_restored_alone(causal_net):
    clips = {7: _clip(1, 9), 9: _clip(2, 9)}
    windows = [(0, 3), (3, 6), (6, 9)]         # three windows of 3 frames: the cache (3 frames) spans them
    alone, alone_starts = {}, {}
    for track, clip in clips.items():
        net = Recording(causal_net)
        restorer = FaceRestorer(net, torch.device("cpu"))
        alone[track] = [face for lo, hi in windows for face in restorer.restore(track, clip[lo:hi])]
        alone_starts[track] = net.states[1:] + [restorer._states[track]]
    net = Recording(causal_net)
    together = BatchRestorer(net, torch.device("cpu"))
    batched = {track: [] for track in clips}
    for lo, hi in windows:
        out = together.restore_many([(track, clip[lo:hi]) for track, clip in clips.items()])
        for track, faces in zip(clips, out):
            batched[track] += faces
    assert len(net.states) == 3   # one call per window for both faces
    starts = [state.split() for state in net.states[1:]] + [[together._states[t] for t in clips]]
    for item, track in enumerate(clips):
        # the state each window starts from, and the one carried on: every tensor as restored alone
        for expected, state in zip(alone_starts[track], (s[item] for s in starts)):
            assert state.gain_context.temporal is not None and state.gain_context.temporal[0][0].shape[1] == 3
            for a, b in zip(_tensors(expected), _tensors(state)):
                torch.testing.assert_close(a, b, atol=1e-3, rtol=0)   # measured 4e-5: batching noise
        assert together._states[track].frames_seen == 9
        diff = np.abs(np.stack(alone[track]).astype(int) - np.stack(batched[track]).astype(int))
        # batch 2 vs batch 1 changes only the summation order of some kernels: a level here and there
        assert diff.max() <= 2 and diff.mean() < 0.05, (track, diff.max(), diff.mean())


def test_stack_and_split_are_inverse_and_refuse_mismatched_caches(causal_net):
    clips = [_clip(3, 4), _clip(4, 4)]
    states = []
    with torch.inference_mode():
        for clip in clips:
            x = torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2).float().div(127.5).sub(1)[None]
            states.append(causal_net.restore_window(x)[1])
    stacked = KalmanState.stack(states)
    tokens = states[0].gain_context.anchor[0].shape[1]
    assert stacked.gain_context.temporal[0][0].shape[0] == 2 * tokens
    for state, back in zip(states, stacked.split([4, 5])):
        for a, b in zip(_tensors(state), _tensors(back)):
            assert torch.equal(a, b)
    assert [s.frames_seen for s in stacked.split([4, 5])] == [4, 5]
    with torch.inference_mode():
        x = torch.zeros(1, 1, 3, SIZE, SIZE)
        young = causal_net.restore_window(x)[1]   # one frame: a shorter cache
    with pytest.raises(ValueError, match="cache lengths"):
        KalmanState.stack([states[0], young])


def _tensors(state):
    context = state.gain_context
    return ([state.prev_input, state.prev_output] + [state.prev_feats[k] for k in sorted(state.prev_feats)]
            + list(context.anchor) + list(context.prev) + [t for kv in context.temporal for t in kv])


def test_tracks_with_different_cache_lengths_share_a_step(causal_net):
    """A young track (1 frame of cache) and an old one (3) due together: separate calls, each as alone."""
    old, young = _clip(5, 6), _clip(6, 3)
    together = BatchRestorer(causal_net, torch.device("cpu"))
    together.restore_many([(0, old[:3])])
    together.restore_many([(1, young[:1])])
    out = together.restore_many([(0, old[3:5]), (1, young[1:3])])
    alone_old = FaceRestorer(causal_net, torch.device("cpu"))
    alone_young = FaceRestorer(causal_net, torch.device("cpu"))
    alone_old.restore(0, old[:3])
    alone_young.restore(1, young[:1])
    for faces, expected in ((out[0], alone_old.restore(0, old[3:5])), (out[1], alone_young.restore(1, young[1:3]))):
        diff = np.abs(np.stack(faces).astype(int) - np.stack(expected).astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05
