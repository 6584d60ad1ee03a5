"""Metrics against independent references and known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from keep.evaluation.evaluate import clip_summary
from keep.metrics.errors import MetricUnavailable
from keep.metrics.flicker import FlowWarpingError, non_occlusion_mask, warp, warping_errors
from keep.metrics.identity import ArcFaceResNet18, IdentitySimilarity, arcface_input, cosine, load_arcface
from keep.metrics.landmarks import KeypointDistance, akd
from keep.metrics.lpips_metric import LPIPSMetric, backbone_file, to_lpips_tensor
from keep.metrics.psnr_ssim import PSNR, SSIM, psnr, ssim


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    pred = np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255).astype(np.uint8)
    return pred, gt


def _face_clip(t=3):
    """A few real aligned face frames (the release's synthetic example), 128x128, or skip."""
    from shared_material import VIDEOS, require
    video = require(VIDEOS / "synthetic_1.mp4")
    from keep.io import read_frames
    return read_frames(video, max_frames=t)


def test_psnr_ssim_match_scikit_image(pair):
    pred, gt = pair
    assert psnr(pred, gt) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=255), abs=1e-10)
    ref = structural_similarity(gt, pred, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ssim(pred, gt) == pytest.approx(ref, abs=1e-8)
    # crop_border shaves the same pixels as slicing before scikit-image
    cropped = peak_signal_noise_ratio(gt[4:-4, 4:-4], pred[4:-4, 4:-4], data_range=255)
    assert psnr(pred, gt, crop_border=4) == pytest.approx(cropped, abs=1e-10)


def test_y_channel_psnr_ssim_match_scikit_image_on_its_y_channel(pair):
    """BasicSR's test_y_channel: BT.601 Y (16-235) of RGB on 0-255, unrounded; scikit-image's rgb2ycbcr
    is an independent implementation of the same conversion."""
    from skimage.color import rgb2ycbcr
    pred, gt = pair
    y_pred, y_gt = rgb2ycbcr(pred)[..., 0], rgb2ycbcr(gt)[..., 0]
    assert 16 <= y_gt.min() and y_gt.max() <= 235
    assert psnr(pred, gt, y_channel=True) == pytest.approx(
        peak_signal_noise_ratio(y_gt, y_pred, data_range=255), abs=1e-9)
    ref = structural_similarity(y_gt, y_pred, data_range=255, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ssim(pred, gt, y_channel=True) == pytest.approx(ref, abs=1e-8)
    # the two conventions are different numbers (the reason both are columns)
    assert abs(psnr(pred, gt, y_channel=True) - psnr(pred, gt)) > 0.1
    assert (PSNR(y_channel=True).label, SSIM(y_channel=True).label, PSNR().label) == ("psnr_y", "ssim_y", "psnr")


def test_identical_frames_known_answers(pair):
    _, gt = pair
    clip = np.stack([gt, gt])
    assert np.all(np.isinf(PSNR()(clip, clip)))
    np.testing.assert_allclose(SSIM()(clip, clip), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        psnr(gt, gt[:-1])


@pytest.fixture
def seeded_alexnet_in_hub(tmp_path, monkeypatch):
    """A torch hub cache holding, under torchvision's AlexNet file name, a seeded random AlexNet: the
    lpips package loads its shipped linear layers (v0.1) on top of it, offline, exactly as it would
    the ImageNet file, so the metric runs end to end (not its 'unavailable' branch) on every machine.
    The cache is moved with TORCH_HOME, not torch.hub.set_dir: set_dir cannot be undone (restoring the
    previous value pins it and later tests' TORCH_HOME is ignored)."""
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, path = backbone_file("alex")
    assert path.parent.parent == tmp_path / "hub"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), path)
    return path


def test_lpips_matches_the_package_on_the_same_backbone(pair, seeded_alexnet_in_hub):
    import lpips
    pred, gt = pair
    clip_pred = np.stack([pred, gt, pred[::-1].copy()])
    clip_gt = np.stack([gt, gt, gt])
    ours = LPIPSMetric("alex", batch_size=2)(clip_pred, clip_gt)      # batches of 2 and 1
    reference = lpips.LPIPS(net="alex", verbose=False)
    refs = [reference(lpips.im2tensor(p), lpips.im2tensor(g)).item() for p, g in zip(clip_pred, clip_gt)]
    assert refs[0] > 1e-4 and refs[2] > 1e-4 and refs[1] == 0.0   # real distances, and 0 for equal frames
    np.testing.assert_allclose(ours, refs, rtol=1e-5, atol=1e-7)


def test_lpips_without_its_backbone_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    url, path = backbone_file("alex")
    with pytest.raises(MetricUnavailable) as err:
        LPIPSMetric("alex")
    assert path.name in str(err.value) and str(path.parent) in str(err.value) and url in str(err.value)


def test_lpips_input_convention_matches_package(pair):
    import lpips
    pred, _ = pair
    np.testing.assert_allclose(to_lpips_tensor(pred[None]).numpy(), lpips.im2tensor(pred).numpy(), atol=1e-6)


def test_arcface_network_shapes_and_strict_loading(tmp_path):
    torch.manual_seed(0)
    net = ArcFaceResNet18().eval()
    keys = net.state_dict().keys()
    # GFPGAN's key layout: IR blocks with bn0/conv1/bn1/prelu/conv2/bn2 and a downsample shortcut
    assert {"conv1.weight", "fc5.weight", "bn5.running_var", "layer2.0.downsample.0.weight",
            "layer1.1.bn0.weight", "layer4.1.prelu.weight"} <= set(keys)
    assert "layer1.0.downsample.0.weight" not in keys     # 64 -> 64, stride 1: identity shortcut
    frames = np.random.default_rng(0).integers(0, 256, (2, 512, 512, 3), dtype=np.uint8)
    x = arcface_input(frames)
    assert x.shape == (2, 1, 128, 128) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0
    with torch.no_grad():
        emb = net(x)
    assert emb.shape == (2, 512)
    # a DataParallel-style checkpoint loads strictly into a fresh network and gives the same output
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "arcface.pth")
    with torch.no_grad():
        np.testing.assert_allclose(load_arcface(tmp_path / "arcface.pth")(x).numpy(), emb.numpy(), atol=1e-5)


def test_cosine():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[0.0, 3.0], [2.0, 2.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine(a, b), [0.0, 1.0, -1.0], atol=1e-12)


def test_arcface_backend_unavailable_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MetricUnavailable, match="arcface_resnet18.pth"):
        IdentitySimilarity("arcface")
    assert IdentitySimilarity("auto").label == "ids_dlib"     # the substitute, labelled


def test_dlib_identity_identical_and_constant_identity():
    faces = _face_clip(3)
    metric = IdentitySimilarity("dlib")
    same = metric(faces, faces)
    np.testing.assert_allclose(same, 1.0, atol=1e-6)
    # a restored clip whose identity does not change over time: every frame is the same frame
    frozen = np.repeat(faces[:1], 3, axis=0)
    values = metric(frozen, frozen)
    summary = clip_summary({"ids": values}, ["ids", "sigma_ids"])
    assert summary["sigma_ids"] == pytest.approx(0.0, abs=1e-9)
    blurred = np.stack([np.asarray(__import__("cv2").GaussianBlur(f, (0, 0), 4)) for f in faces])
    assert np.all(metric(blurred, faces) < 0.999)


def test_akd_known_answers():
    pts = np.random.default_rng(0).uniform(0, 512, (68, 2))
    assert akd(pts + [1.0, 0.0], pts) == pytest.approx(1.0)
    assert akd(pts + [0.0, -1.0], pts) == pytest.approx(1.0)
    assert akd(pts + [1.0, 1.0], pts) == pytest.approx(np.sqrt(2.0))
    shifted = pts.copy()
    shifted[:34] += [2.0, 0.0]                               # half the points move 2 px
    assert akd(shifted, pts) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        akd(pts[:5], pts)


def test_dlib_akd_identical_frames_and_scale():
    faces = _face_clip(2)
    metric = KeypointDistance()
    np.testing.assert_allclose(metric(faces, faces), 0.0)
    assert metric.label == "akd_dlib"


def test_warp_integer_translation():
    img = np.random.default_rng(0).uniform(0, 1, (20, 24, 3)).astype(np.float32)
    flow = np.zeros((20, 24, 2), np.float32)
    flow[..., 0] = 2.0                                      # out(p) = img(p + (2, 0))
    out, inside = warp(img, flow)
    np.testing.assert_allclose(out[:, :-2], img[:, 2:], atol=1e-5)
    assert inside[:, :-2].all() and not inside[:, -1].any()
    assert non_occlusion_mask(flow, -flow)[:, :-2].all()
    assert not non_occlusion_mask(flow, flow)[:, :-2].any()  # forward and backward disagree


def _moving_texture(t=4, size=64, step=2):
    import cv2
    rng = np.random.default_rng(1)
    big = cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (size + step * t, size),
                     interpolation=cv2.INTER_CUBIC)
    return np.stack([big[:, i * step:i * step + size] for i in range(t)])


def test_flicker_known_answers():
    metric = FlowWarpingError("farneback")
    assert metric.label == "ewarp_farneback"
    still = np.repeat(_moving_texture(1), 4, axis=0)
    values = metric(still, still)
    assert np.isnan(values[0]) and np.all(values[1:] == 0.0)   # identical frames: no flicker
    moving = _moving_texture()
    rng = np.random.default_rng(2)
    jitter = np.clip(moving + rng.normal(0, 10, moving.shape), 0, 255).astype(np.uint8)
    steady = float(np.nanmean(warping_errors(moving, moving, metric.flow_fn)))
    shaky = float(np.nanmean(warping_errors(jitter, moving, metric.flow_fn)))
    assert steady < 2e-3 and shaky > 2 * steady
    # independent noise of std 10 in each frame and channel: E ≈ 3 channels · 2 · (10/255)² where the
    # warp is exact (Eq. 8 sums the squared differences over the channels)
    assert shaky == pytest.approx(3 * 2 * (10 / 255) ** 2, rel=0.5)


def test_warping_error_matches_hand_computation_on_a_translation():
    """A texture moving 3 px left per frame, an exact integer flow: E_t computed by hand with array
    slicing (no warping code) equals the metric, including the mask (the last 3 columns leave the frame)."""
    rng = np.random.default_rng(3)
    width, shift, t_len = 40, 3, 4
    strip = rng.integers(0, 256, (24, width + shift * t_len, 3), dtype=np.uint8)
    gt = np.stack([strip[:, t * shift:t * shift + width] for t in range(t_len)])   # gt[t](x) = gt[t-1](x + 3)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)

    def exact_flow(img_a, img_b):
        # img_a(p) = img_b(p + flow): find the integer horizontal shift (the test's own oracle)
        errors = {d: np.mean((img_a[:, max(0, -d):width - max(0, d)].astype(int)
                              - img_b[:, max(0, d):width + min(0, d)]) ** 2) for d in range(-5, 6)}
        flow = np.zeros(img_a.shape[:2] + (2,), np.float32)
        flow[..., 0] = min(errors, key=errors.get)
        return flow

    values = warping_errors(pred, gt, exact_flow)
    assert np.isnan(values[0])
    for t in range(1, t_len):
        # frame t-1 sampled at x + 3 is defined for x <= width - 1 - 3; Eq. 8: sum over channels
        diff = (pred[t, :, :width - shift].astype(np.float64) - pred[t - 1, :, shift:]) / 255.0
        hand = np.sum(diff ** 2) / (24 * (width - shift))
        assert values[t] == pytest.approx(hand, rel=1e-6)


def test_gmflow_backend_loads_release_layout(tmp_path):
    """The GMFlow path of the flicker metric: a checkpoint in the gmflow release layout ({'model': ...})
    loads strictly and yields (H, W, 2) flows in the metric's convention."""
    from keep.archs.flow import FlowEstimator
    from keep.metrics.flicker import gmflow_flow_fn, load_gmflow
    torch.manual_seed(0)
    torch.save({"model": FlowEstimator().model.state_dict()}, tmp_path / "gmflow.pth")
    flow_fn = gmflow_flow_fn(load_gmflow(tmp_path / "gmflow.pth"))
    frames = _moving_texture(t=2, size=64)
    flow = flow_fn(frames[1], frames[0])
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()


def test_gt_analysis_is_done_once_per_frame_across_metrics_and_methods(monkeypatch):
    """IDS and AKD share the GT face box, and a second method reuses the GT embeddings: the results
    equal a fresh computation, with no second detection or GT embedding."""
    import keep.metrics.dlib_face as dlib_face
    from keep.metrics import identity
    faces = _face_clip(3)
    blurred = np.stack([np.asarray(__import__("cv2").GaussianBlur(f, (0, 0), 3)) for f in faces])
    fresh_ids = IdentitySimilarity("dlib")(blurred, faces)

    monkeypatch.setattr(dlib_face, "_BOXES", dlib_face.FrameCache())
    detections, embedded = [], []
    real_detect, real_embed = dlib_face._detect_face_box, identity.dlib_embeddings
    monkeypatch.setattr(dlib_face, "_detect_face_box", lambda f: detections.append(1) or real_detect(f))
    monkeypatch.setattr(identity, "dlib_embeddings", lambda f, b: embedded.append(len(f)) or real_embed(f, b))
    ids, akd_metric = IdentitySimilarity("dlib"), KeypointDistance()
    first = ids(blurred, faces)
    akd_metric(blurred, faces)
    assert len(detections) == 3                 # one per GT frame, shared by IDS and AKD
    second = ids(faces, faces)                  # another "method" against the same GT
    assert len(detections) == 3 and embedded == [3, 3, 3]   # pred, GT, then only the new pred
    np.testing.assert_allclose(first, fresh_ids, atol=1e-12)
    np.testing.assert_allclose(second, 1.0, atol=1e-6)
