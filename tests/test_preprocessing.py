"""Preprocessing constants of the third-party networks against the reference code, one test per constant
(issue 9, item 3), and the release's lone-last-frame rule (item 5).

Where the reference is importable (facexlib 0.3.0, lpips 0.1.4, torchvision) the test runs it; the
facts of code that is not (the KEEP release's ``facelib`` copy, GFPGAN) are written here with the file
they come from. The KEEP v0.1.0 release's ``facelib/detection/retinaface/retinaface.py`` and
``retinaface_utils.py`` are line for line facexlib 0.3.0's detection path (config, mean, priors, decode,
NMS through ``torchvision.ops.nms``); its ``facelib/utils/face_restoration_helper.py`` calls
``detect_faces(input_img)`` with the defaults (see ../shared/spec/official-PIPELINE.md, sections 3 and 6).
"""
import inspect
import re

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from shared_material import SHARED, require
from test_restore import pytestmark as needs_clips_and_fill
from test_restore import tiny_weights  # noqa: F401  (fixture: the tiny KEEP network, filled weights)

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------------
# RetinaFace: the release's values (facelib/detection/retinaface/retinaface.py: cfg_re50, mean_tensor,
# detect_faces defaults)
# ------------------------------------------------------------------------------------------
RELEASE_MEAN_BGR = (104.0, 117.0, 123.0)
RELEASE_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
RELEASE_STEPS = (8, 16, 32)
RELEASE_VARIANCES = (0.1, 0.2)
RELEASE_CONFIDENCE, RELEASE_NMS = 0.8, 0.4
# five landmark offsets (in units of variance * prior size) that look like a face: eyes apart, so the
# detector's eye-distance filter keeps it
FACE_LANDM = (-3.0, -2.0, 3.0, -2.0, 0.0, 0.0, -2.0, 3.0, 2.0, 3.0)


def release_priors(height: int, width: int) -> np.ndarray:
    """(N, 4) priors (cx, cy, w, h) relative to the image, in PriorBox's order (level, row, column,
    size), written from the release's constants: centres at (j + 0.5) * step, side = min size, no clip."""
    levels = []
    for step, sizes in zip(RELEASE_STEPS, RELEASE_MIN_SIZES):
        rows, cols = -(-height // step), -(-width // step)
        i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        level = np.empty((rows, cols, len(sizes), 4))
        level[..., 0] = ((j + 0.5) * step / width)[..., None]
        level[..., 1] = ((i + 0.5) * step / height)[..., None]
        level[..., 2] = np.array(sizes) / width
        level[..., 3] = np.array(sizes) / height
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels)


def prior_index(height: int, width: int, level: int, row: int, col: int, size: int) -> int:
    """Index in :func:`release_priors` of the prior of ``level`` at (row, col), ``size`` 0 or 1."""
    offset = sum(-(-height // s) * -(-width // s) * 2 for s in RELEASE_STEPS[:level])
    return offset + (row * -(-width // RELEASE_STEPS[level]) + col) * 2 + size


@pytest.fixture(scope="module")
def retinaface():
    from keep.face.detect import build_retinaface
    return build_retinaface()


def detect_raw(net, monkeypatch, image, faces, **detector_kwargs):
    """Our RetinaFaceDetector on ``image`` (RGB) with the network's forward replaced by chosen raw
    outputs: ``faces`` maps a prior index to (score, loc (4), landm (10)); every other prior scores 0.
    Returns (detections, the tensor the network was given)."""
    from keep.face.detect import RetinaFaceDetector
    seen = {}

    def forward(x):
        seen["input"] = x.clone()
        n = len(release_priors(*x.shape[2:]))
        loc, landm, conf = torch.zeros(1, n, 4), torch.zeros(1, n, 10), torch.zeros(1, n, 2)
        conf[..., 0] = 1.0
        for index, (score, box, points) in faces.items():
            loc[0, index], landm[0, index] = torch.tensor(box), torch.tensor(points)
            conf[0, index] = torch.tensor([1.0 - score, score])
        return loc, conf, landm

    monkeypatch.setattr(net, "forward", forward)
    found = RetinaFaceDetector(torch.device("cpu"), net=net, **detector_kwargs).detect(image)
    return found, seen["input"]


def test_retinaface_input_is_bgr_minus_the_release_mean(retinaface, monkeypatch):
    """The release feeds the BGR frame as float minus (104, 117, 123) in B, G, R order; our detector takes
    RGB frames, so it must swap the channels first (an image whose channels differ tells them apart)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (640, 704, 3), dtype=np.uint8)      # short side 640: no resize
    image[..., 0] //= 4                                             # R, G, B with different statistics
    _, x = detect_raw(retinaface, monkeypatch, image, {})
    bgr = image[..., ::-1].astype(np.float32) - np.array(RELEASE_MEAN_BGR, np.float32)
    np.testing.assert_array_equal(x[0].permute(1, 2, 0).numpy(), bgr)


def test_retinaface_priors_are_the_releases(retinaface, monkeypatch):
    """Priors (min sizes, steps, no clip) of the network our detector builds equal the release's, for the
    size the detector really feeds (real_1's 388x512 frame enlarged to 640x844), and a detection with zero
    offsets comes back as its prior box, divided by the resize factor as the release does."""
    from facexlib.detection.retinaface_utils import PriorBox
    height, width = 844, 640
    ours = PriorBox(retinaface.cfg, image_size=(height, width)).forward().numpy()
    np.testing.assert_allclose(ours, release_priors(height, width), atol=1e-6)

    chosen = [prior_index(height, width, 0, 20, 30, 0), prior_index(height, width, 1, 30, 10, 1),
              prior_index(height, width, 2, 5, 15, 0)]                # far apart: NMS keeps all three
    found, x = detect_raw(retinaface, monkeypatch, np.zeros((512, 388, 3), np.uint8),
                          {i: (0.99, (0.0,) * 4, (0.0,) * 10) for i in chosen}, min_eye_distance=0.0)
    assert tuple(x.shape[2:]) == (height, width)
    scale = 640 / 388
    priors = release_priors(height, width)[chosen] * [width, height, width, height]
    expected = np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1) / scale
    boxes = np.array(sorted((d.box for d in found), key=lambda b: b[0]))
    np.testing.assert_allclose(boxes, expected[np.argsort(expected[:, 0])], atol=1e-3)
    for d in found:        # zero landmark offsets: all five points at the prior's centre
        np.testing.assert_allclose(d.landmarks, np.tile((d.box[:2] + d.box[2:]) / 2, (5, 1)), atol=1e-3)


def test_retinaface_box_and_landmark_decoding_use_the_release_variances(retinaface, monkeypatch):
    """Offsets decode with variances (0.1, 0.2): centre + loc * 0.1 * prior size, size * exp(loc * 0.2),
    landmarks = centre + landm * 0.1 * prior size; equal to facexlib's decode / decode_landm (the release's
    functions) on the same tensors."""
    from facexlib.detection.retinaface_utils import decode, decode_landm
    height, width = 640, 704
    index = prior_index(height, width, 1, 20, 22, 1)                 # a 128 px prior
    loc, landm = (0.5, -0.4, 0.3, -0.2), tuple(v * 1.3 for v in FACE_LANDM)
    found, _ = detect_raw(retinaface, monkeypatch, np.zeros((height, width, 3), np.uint8), {index: (0.9, loc, landm)})
    assert len(found) == 1
    cx, cy, w, h = release_priors(height, width)[index] * [width, height, width, height]
    v0, v1 = RELEASE_VARIANCES
    centre = np.array([cx + loc[0] * v0 * w, cy + loc[1] * v0 * h])
    size = np.array([w * np.exp(loc[2] * v1), h * np.exp(loc[3] * v1)])
    np.testing.assert_allclose(found[0].box, np.concatenate([centre - size / 2, centre + size / 2]), atol=1e-3)
    points = np.array([cx, cy]) + np.array(landm).reshape(5, 2) * v0 * np.array([w, h])
    np.testing.assert_allclose(found[0].landmarks, points, atol=1e-3)

    prior = torch.from_numpy(release_priors(height, width)[index:index + 1]).float()
    pixels = torch.tensor([width, height] * 5, dtype=torch.float32)
    np.testing.assert_allclose(found[0].box, (decode(torch.tensor([loc]), prior, RELEASE_VARIANCES)[0]
                                              * pixels[:4]).numpy(), atol=1e-3)
    np.testing.assert_allclose(found[0].landmarks.ravel(), (decode_landm(torch.tensor([landm]), prior,
                                                                         RELEASE_VARIANCES)[0] * pixels).numpy(), atol=1e-3)


def test_retinaface_confidence_threshold_is_the_releases(retinaface, monkeypatch):
    """Scores 1e-3 either side of the release's 0.8 (facexlib's / the release's ``detect_faces`` default,
    which the release's helper uses): only those above it are kept."""
    from facexlib.detection.retinaface import RetinaFace
    assert inspect.signature(RetinaFace.detect_faces).parameters["conf_threshold"].default == RELEASE_CONFIDENCE
    height, width = 640, 704
    scores = [RELEASE_CONFIDENCE + 1e-3, RELEASE_CONFIDENCE - 1e-3, 0.95, 0.5]
    faces = {prior_index(height, width, 2, 3, 3 + 6 * k, 0): (s, (0.0,) * 4, FACE_LANDM) for k, s in enumerate(scores)}
    found, _ = detect_raw(retinaface, monkeypatch, np.zeros((height, width, 3), np.uint8), faces)
    kept = sorted(s for s in scores if s > RELEASE_CONFIDENCE)
    assert kept == [pytest.approx(RELEASE_CONFIDENCE + 1e-3), 0.95]
    assert sorted(d.score for d in found) == pytest.approx(kept, abs=1e-6)


@pytest.mark.parametrize("iou", [RELEASE_NMS - 0.02, RELEASE_NMS + 0.02])
def test_retinaface_nms_threshold_is_the_releases(retinaface, monkeypatch, iou):
    """Two 256 px boxes whose IoU is 0.02 either side of the release's 0.4 (facexlib's / the release's
    ``detect_faces`` default; NMS by ``torchvision.ops.nms``, which suppresses IoU > threshold)."""
    import torchvision
    from facexlib.detection.retinaface import RetinaFace
    from facexlib.detection.retinaface_utils import py_cpu_nms
    assert inspect.signature(RetinaFace.detect_faces).parameters["nms_threshold"].default == RELEASE_NMS
    height, width = 640, 704
    first, second = prior_index(height, width, 2, 10, 5, 0), prior_index(height, width, 2, 10, 6, 0)
    # equal heights, shifted by d in x: IoU = (256 - d) / (256 + d); the second prior is 32 px to the right
    shift = 256 * (1 - iou) / (1 + iou)
    dx = (shift - 32) / (RELEASE_VARIANCES[0] * 256)
    faces = {first: (0.95, (0.0,) * 4, FACE_LANDM), second: (0.9, (dx, 0.0, 0.0, 0.0), FACE_LANDM)}
    found, _ = detect_raw(retinaface, monkeypatch, np.zeros((height, width, 3), np.uint8), faces)

    cx, cy, w, h = (release_priors(height, width)[first] * [width, height, width, height]).tolist()
    boxes = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 0.95],
                      [cx + shift - w / 2, cy - h / 2, cx + shift + w / 2, cy + h / 2, 0.9]], np.float32)
    assert torchvision.ops.box_iou(torch.from_numpy(boxes[:1, :4]), torch.from_numpy(boxes[1:, :4])).item() \
        == pytest.approx(iou, abs=1e-4)
    kept = py_cpu_nms(boxes, RELEASE_NMS)          # the release's NMS with the release's threshold
    assert len(kept) == (1 if iou > RELEASE_NMS else 2)
    np.testing.assert_allclose(np.array([d.box for d in found]), boxes[kept, :4], atol=1e-3)
    assert [d.score for d in found] == pytest.approx(boxes[kept, 4].tolist(), abs=1e-6)


# ------------------------------------------------------------------------------------------
# ParseNet (the release's FaceRestoreHelper.paste_faces_to_input_image, use_parse=True)
# ------------------------------------------------------------------------------------------
class LabelNet(nn.Module):
    """Stands in for ParseNet: every pixel gets ``label``; records the input it was given."""

    def __init__(self, label: int):
        super().__init__()
        self.label, self.inputs = label, []

    def forward(self, x):
        self.inputs.append(x.clone())
        logits = torch.zeros(x.shape[0], 19, *x.shape[2:])
        logits[:, self.label] = 1.0
        return logits, None


def test_parsenet_input_is_rgb_normalised_by_half_as_facexlib():
    """img2tensor(BGR / 255, bgr2rgb=True) then normalize(mean 0.5, std 0.5) (facexlib's functions, which
    the release's helper calls): RGB in [-1, 1]."""
    from facexlib.utils.misc import img2tensor
    from torchvision.transforms.functional import normalize
    from keep.face.parsing import parsenet_input
    rng = np.random.default_rng(1)
    face = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    face[..., 2] //= 3
    bgr = np.ascontiguousarray(face[..., ::-1])              # the release holds frames as BGR
    ref = img2tensor(bgr.astype("float32") / 255.0, bgr2rgb=True, float32=True)
    normalize(ref, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inplace=True)
    np.testing.assert_allclose(parsenet_input(face).numpy(), ref[None].numpy(), atol=1e-6)


def _release_colormap():
    """MASK_COLORMAP of the release's facelib/utils/face_restoration_helper.py, as the spec records it."""
    text = require(SHARED / "spec" / "official-PIPELINE.md").read_text()
    return [int(v) for v in re.search(r"MASK_COLORMAP \[([0-9,\s]+)\]", text).group(1).split(",")]


def test_paste_mask_keeps_the_release_labels():
    """Each of ParseNet's 19 labels, alone over the whole face: the mask inside is 1 for the labels the
    release keeps (255 in its MASK_COLORMAP) and 0 for those it drops (0: background, 14, 16, 17, 18)."""
    from keep.face.parsing import ParseMasker
    colormap = _release_colormap()
    assert len(colormap) == 19 and set(colormap) == {0, 255}
    face = np.full((512, 512, 3), 128, np.uint8)
    inside = [float(ParseMasker(torch.device("cpu"), net=LabelNet(label))(face)[256, 256]) for label in range(19)]
    assert inside == pytest.approx([c / 255 for c in colormap], abs=1e-6)


def test_parse_mask_is_computed_at_512_as_the_release():
    """The release resizes the restored face to 512 (INTER_LINEAR) before ParseNet and computes the mask
    there; a face at another size (a 128 px network) gives the mask of its 512 resize, at 512."""
    from keep.face.parsing import ParseMasker, parsenet_input
    rng = np.random.default_rng(2)
    face = cv2.resize(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), (128, 128), interpolation=cv2.INTER_CUBIC)
    net = LabelNet(1)
    mask = ParseMasker(torch.device("cpu"), net=net)(face)
    assert mask.shape == (512, 512) and mask[256, 256] == pytest.approx(1.0, abs=1e-6)
    assert mask[:10].max() == 0 and mask[20:-20, 20:-20].min() > 0.5     # the 10 px frame of a 512 mask
    resized = cv2.resize(face, (512, 512), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(net.inputs[0].numpy(), parsenet_input(resized).numpy())


# ------------------------------------------------------------------------------------------
# ArcFace input: GFPGAN's gray_resize_for_identity (gfpgan/models/gfpgan_model.py, GFPGAN 1.3.8):
# out_gray = 0.2989 R + 0.5870 G + 0.1140 B of the RGB image in [-1, 1], then
# F.interpolate(out_gray, (128, 128), mode='bilinear', align_corners=False). Not importable (GFPGAN is
# not a requirement); the constants are written here from that file.
# ------------------------------------------------------------------------------------------
GFPGAN_GRAY = (0.2989, 0.5870, 0.1140)


def test_arcface_gray_weights_and_range_are_gfpgans():
    """Flat red, green, blue, white, black and mid-grey faces at 128 px (no resampling): each gray value is
    GFPGAN's weighted sum of the channels in [-1, 1] (0.299 instead of 0.2989 would be off by 1e-4)."""
    from keep.metrics.identity import arcface_input
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [128, 64, 200]])
    frames = np.broadcast_to(colours[:, None, None, :], (len(colours), 128, 128, 3)).astype(np.uint8)
    gray = arcface_input(frames)
    assert gray.shape == (len(colours), 1, 128, 128)
    expected = (colours / 255.0 * 2 - 1) @ np.array(GFPGAN_GRAY)
    np.testing.assert_allclose(gray[:, 0, 64, 64].numpy(), expected, atol=1e-6)
    assert expected[0] == pytest.approx(0.2989 - 0.5870 - 0.1140)


def test_arcface_resize_to_128_is_half_pixel_bilinear():
    """The resize to 128 x 128 is bilinear with half-pixel centres and no antialiasing (PyTorch's
    align_corners=False), checked against OpenCV's INTER_LINEAR, an independent implementation of the
    same sampling, downwards (512 frames) and upwards (96 px faces)."""
    from keep.metrics.identity import arcface_input
    rng = np.random.default_rng(3)
    for size in (512, 96):
        frames = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
        gray = (frames / 127.5 - 1.0) @ np.array(GFPGAN_GRAY, np.float32)
        expected = np.stack([cv2.resize(g.astype(np.float32), (128, 128), interpolation=cv2.INTER_LINEAR) for g in gray])
        np.testing.assert_allclose(arcface_input(frames)[:, 0].numpy(), expected, atol=1e-5)


# ------------------------------------------------------------------------------------------
# LPIPS: our metric and loss vs the lpips package (its own v0.1 linear layers, shipped with it), with
# identical random backbones instead of torchvision's ImageNet files
# ------------------------------------------------------------------------------------------
def _pair(size, seed):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    pred = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8)
    return pred, gt


def _unit(frames):
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in [0, 1], the range of the package's normalize=True."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def _random_backbone_file(tmp_path, monkeypatch, net: str):
    """A random ImageNet backbone in torchvision's file layout (raw ``features.*`` + ``classifier.*``
    state dict) where torchvision and our checks look for it (``backbone_file``, a torch hub cache in
    tmp_path). LPIPS never uses the classifier: it is stored as broadcast zeros (bytes, not 0.5 GB)."""
    import torchvision
    from keep.metrics.lpips_metric import backbone_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, path = backbone_file(net)
    assert path.parent.parent == tmp_path / "hub"
    with torch.device("meta"):
        skeleton = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16}[net](weights=None)
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, value in skeleton.state_dict().items():
        if key.startswith("classifier."):
            state[key] = torch.zeros(()).expand(value.shape)
        elif key.endswith("weight"):      # He-scaled, so activations neither vanish nor blow up
            state[key] = torch.randn(value.shape, generator=gen) * (2.0 / value[0].numel()) ** 0.5
        else:
            state[key] = torch.randn(value.shape, generator=gen) * 0.1
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def _loaded_from(lpips_model, state):
    """Every backbone tensor of an lpips.LPIPS equals the file's ``features.<index>`` tensor (the
    package's slices keep torchvision's layer indices as names)."""
    params = dict(lpips_model.net.named_parameters())
    assert params
    return all(torch.equal(v, state["features." + k.split(".", 1)[1]]) for k, v in params.items())


@pytest.mark.filterwarnings("ignore:.*(pretrained|weights).*:UserWarning")   # lpips: tv.alexnet(pretrained=)
def test_lpips_metric_takes_0_255_frames_as_the_package_takes_0_1_with_normalize(tmp_path, monkeypatch):
    """LPIPSMetric('alex'), built as users build it (torchvision's AlexNet file from the torch hub cache;
    here a random one), loads that file and equals lpips.LPIPS(net='alex') loading the same file, given
    the frames in [0, 1] with normalize=True; without normalize the same frames give another number."""
    import lpips
    from keep.metrics.lpips_metric import LPIPSMetric
    state = _random_backbone_file(tmp_path, monkeypatch, "alex")
    ours = LPIPSMetric("alex")
    assert _loaded_from(ours.model, state)
    ref = lpips.LPIPS(net="alex", verbose=False).eval()
    pred, gt = _pair(64, seed=4)
    with torch.no_grad():
        expected = ref(_unit(pred), _unit(gt), normalize=True).flatten().double().numpy()
        unnormalised = ref(_unit(pred), _unit(gt)).flatten().double().numpy()
    np.testing.assert_allclose(ours(pred, gt), expected, rtol=1e-5, atol=1e-7)
    assert np.all(np.abs(unnormalised - expected) > 0.1 * expected)


@pytest.mark.filterwarnings("ignore:.*(pretrained|weights).*:UserWarning")
def test_lpips_loss_takes_minus_one_one_as_the_package_takes_0_1_with_normalize(tmp_path, monkeypatch):
    """LPIPSLoss (pretrained: torchvision's VGG-16 file, here a random one, and the package's linear
    layers) on [-1, 1] tensors equals lpips.LPIPS(net='vgg') loading the same file on the [0, 1] tensors
    with normalize=True; without normalize the [0, 1] tensors give another number."""
    import lpips
    from keep.losses.lpips_loss import LPIPSLoss
    state = _random_backbone_file(tmp_path, monkeypatch, "vgg")
    loss = LPIPSLoss(pretrained=True)
    assert _loaded_from(loss.model, state)
    ref = lpips.LPIPS(net="vgg", verbose=False).eval()
    pred, gt = _pair(48, seed=5)
    a, b = _unit(pred), _unit(gt)
    with torch.no_grad():
        expected = ref(a, b, normalize=True).mean()
        assert float(loss(a * 2 - 1, b * 2 - 1)) == pytest.approx(float(expected), rel=1e-5)
        assert abs(float(ref(a, b).mean()) - float(expected)) > 0.1 * float(expected)


# ------------------------------------------------------------------------------------------
# Lone last frame (issue 9, item 5)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_lone_frame_window_equals_the_release_duplicated_pair(causal):
    """The release runs a lone last frame s as the 2-frame window [s, s] and keeps output 0; a fresh
    1-frame window gives the same frame (frame 0 of a window has no prediction, no CFA, and its
    sparse-causal keys are its own, duplicated or not)."""
    from test_streaming import make_net
    net = make_net()
    gen = torch.Generator().manual_seed(7)
    frame = torch.rand(1, 1, 3, 32, 32, generator=gen) * 2 - 1
    with torch.no_grad():
        alone, _ = net.restore_window(frame, None, causal=causal)
        pair, _ = net.restore_window(torch.cat([frame, frame], dim=1), None, causal=causal)
    assert alone.shape == (1, 1, 3, 32, 32)
    scale = pair.abs().max().item()
    assert (alone[:, 0] - pair[:, 0]).abs().max().item() <= 1e-5 * scale   # float rounding (2e-14 in fp64)
    assert (pair[:, 1] - pair[:, 0]).abs().max().item() > 0.1 * scale     # frame 1 of the pair is predicted


@needs_clips_and_fill
def test_restore_release_mode_ends_a_video_with_a_lone_frame_as_the_release(tmp_path, tiny_weights):
    """`keep restore --aligned --window 2 --reset-state-per-window` on 3 frames: 3 restored faces, the
    first two from the window [0, 1], the last equal to output 0 of the release's duplicated window [2, 2]."""
    from test_restore import _restore_aligned, decode, frames_of
    from keep.api import load_model
    from keep.io.samples import write_sample_clip
    from keep.restore.restorer import faces_to_tensor, tensor_to_faces
    clip = write_sample_clip(frames_of("synthetic_1.mp4", 3), tmp_path / "three.mp4", tone_hz=None)
    _, faces = _restore_aligned(tmp_path, tiny_weights, clip, "--reset-state-per-window")
    assert len(faces) == 3
    size = faces[0].shape[0]
    crops = [cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in decode(clip)[1]]
    net = load_model(tiny_weights)
    with torch.inference_mode():
        first, _ = net.restore_window(faces_to_tensor(crops[:2], torch.device("cpu")))
        pair, _ = net.restore_window(faces_to_tensor([crops[2], crops[2]], torch.device("cpu")))
    release = tensor_to_faces(first) + tensor_to_faces(pair)[:1]
    for ours, ref in zip(faces, release):
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1      # uint8 rounding of float noise
