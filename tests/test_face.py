"""keep.face: landmark smoothing vs scipy, gap filling vs np.interp, dlib landmarks and alignment on
real frames, paste-back geometry, tracking; and the Real-ESRGAN upsampler's tiling."""
import itertools

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from keep.face import (FFHQ_TEMPLATE_512, Detection, FacePaster, FaceTracker, GapFiller, StreamingGaussian,
                       align_matrix, crop_matrix, make_detector, warp_face)
from keep.face.detect import landmarks5_from_68
from keep.face.paste import to_uint8
from keep.io import open_source
from keep.restore.upsampler import RealESRGANUpsampler, RRDBNet
from keep.weights import WeightsNotFoundError

from shared_material import SHARED
VIDEOS = SHARED / "videos"
needs_videos = pytest.mark.skipif(not (VIDEOS / "real_1.mp4").is_file(),
                                  reason=f"shared test videos not found under {VIDEOS}")


def frame(name, index):
    with open_source(VIDEOS / name) as source:
        return next(itertools.islice(source, index, None)).image


@pytest.fixture(scope="module")
def dlib_detector():
    return make_detector("dlib", torch.device("cpu"))


def stream(smoother, values):
    out = []
    for value in values:
        out += smoother.push(value)
    return np.array(out + smoother.finish())


@pytest.mark.parametrize("length", [1, 3, 20, 21, 40, 41, 42, 97])
def test_streaming_gaussian_equals_scipy_whole_clip(length):
    values = np.random.default_rng(length).normal(size=(length, 10)) * 30
    ours = stream(StreamingGaussian(sigma=5.0), values)
    np.testing.assert_allclose(ours, gaussian_filter1d(values, 5.0, axis=0), rtol=0, atol=1e-9)


def test_streaming_gaussian_holds_only_the_window():
    smoother = StreamingGaussian(sigma=5.0)
    emitted = [len(smoother.push(np.zeros(2))) for _ in range(100)]
    assert smoother.radius == 20 and emitted[:20] == [0] * 20 and emitted[20:] == [1] * 80
    assert len(smoother._values) <= 2 * smoother.radius + 1


def test_gap_filling_then_smoothing_equals_interp_and_scipy():
    rng = np.random.default_rng(3)
    length = 70
    values = np.cumsum(rng.normal(size=(length, 10)), axis=0)
    valid = np.ones(length, bool)
    valid[[4, 5, 6, 30]] = False
    valid[40:55] = False      # 15 frames, bridged (max_gap 20)
    valid[63:] = False        # held at the end of the clip
    filler, smoother, out = GapFiller(max_gap=20), StreamingGaussian(5.0), []
    for t in range(length):
        for index, value in filler.push(t, values[t] if valid[t] else None):
            out += smoother.push(value)
            assert index == len(out) + smoother.radius - 1 or index < smoother.radius
    for _, value in filler.finish():
        out += smoother.push(value)
    out = np.array(out + smoother.finish())
    frames = np.flatnonzero(valid)
    filled = np.stack([np.interp(np.arange(length), frames, values[frames, k]) for k in range(10)], axis=1)
    np.testing.assert_allclose(out, gaussian_filter1d(filled, 5.0, axis=0), rtol=0, atol=1e-9)


def test_gap_longer_than_max_gap_ends_the_track():
    filler = GapFiller(max_gap=3)
    assert [t for t, _ in filler.push(0, np.zeros(2))] == [0]
    for t in range(1, 4):
        assert filler.push(t, None) == [] and not filler.lost
    assert filler.push(4, None) == [] and filler.lost
    assert filler.finish() == []


def test_five_points_from_68_follow_retinaface_order():
    points = np.arange(68 * 2, dtype=float).reshape(68, 2)
    five = landmarks5_from_68(points)
    np.testing.assert_allclose(five[0], points[36:42].mean(0))
    np.testing.assert_allclose(five[1], points[42:48].mean(0))
    np.testing.assert_array_equal(five[2:], points[[30, 48, 54]])


@needs_videos
@pytest.mark.parametrize("name", ["real_1.mp4", "real_2.mp4"])
def test_dlib_alignment_puts_the_face_on_the_template(dlib_detector, name):
    image = frame(name, 40)
    faces = dlib_detector.detect(image)
    assert len(faces) == 1
    crop = warp_face(image, align_matrix(faces[0].landmarks))
    # Independent check: detect again in the aligned crop; its five points must sit on the template.
    # Eye and mouth midpoints are compared (single points move with head yaw, which a similarity
    # transform cannot undo).
    again = dlib_detector.detect(crop)
    assert len(again) == 1
    found, template = again[0].landmarks, FFHQ_TEMPLATE_512
    assert np.linalg.norm(found[:2].mean(0) - template[:2].mean(0)) < 16.0
    assert np.linalg.norm(found[3:].mean(0) - template[3:].mean(0)) < 16.0
    eyes_to_mouth = found[3:].mean(0)[1] - found[:2].mean(0)[1]
    assert abs(eyes_to_mouth / (template[3:].mean(0)[1] - template[:2].mean(0)[1]) - 1) < 0.1


@needs_videos
@pytest.mark.parametrize("upscale", [1, 2])
def test_paste_back_inverts_the_alignment_and_keeps_the_rest(dlib_detector, upscale):
    image = frame("real_1.mp4", 10)
    matrix = align_matrix(dlib_detector.detect(image)[0].landmarks)
    crop = warp_face(image, matrix)
    height, width = image.shape[0] * upscale, image.shape[1] * upscale
    background = image if upscale == 1 else cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    canvas = background.astype(np.float32)
    FacePaster(upscale).paste(canvas, crop, matrix)
    out = to_uint8(canvas)
    # Where the pasted square cannot reach, the background is untouched, bit for bit.
    square = cv2.warpAffine(np.ones((512, 512), np.float32), FacePaster(upscale).face_to_canvas(matrix, 512)[:2],
                            (width, height))
    outside = cv2.dilate(square, np.ones((5, 5), np.uint8)) == 0
    assert outside.mean() > 0.2
    assert np.array_equal(out[outside], background[outside])
    # Inside, pasting the unrestored crop back gives the frame again up to two bilinear resamplings.
    inside = cv2.erode(square, np.ones((41, 41), np.uint8)) > 0.5
    diff = np.abs(out.astype(int) - background.astype(int))[inside]
    assert diff.mean() < 4.0 and abs((out.astype(int) - background.astype(int))[inside].mean()) < 0.5


def test_paste_with_an_empty_parsing_mask_changes_nothing():
    image = np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8)
    matrix = np.array([[2.0, 0.0, -100.0], [0.0, 2.0, -120.0]])
    canvas = image.astype(np.float32)
    face = np.full((512, 512, 3), 255, np.uint8)
    FacePaster(1, parse=lambda restored: np.zeros(restored.shape[:2], np.float32)).paste(canvas, face, matrix)
    assert np.array_equal(to_uint8(canvas), image)


def _det(x, y, size=100.0):
    box = np.array([x, y, x + size, y + size])
    return Detection(box, np.zeros((5, 2)), 1.0)


def test_tracker_keeps_identities_by_overlap():
    tracker = FaceTracker(all_faces=True)
    first = tracker.update([_det(10, 10), _det(300, 10)], 640, 480)
    second = tracker.update([_det(305, 12), _det(14, 10)], 640, 480)   # listed in the other order
    assert {k: v.box[0] for k, v in first.items()} == {0: 10, 1: 300}
    assert {k: v.box[0] for k, v in second.items()} == {0: 14, 1: 305}
    assert list(tracker.update([_det(500, 300)], 640, 480)) == [2]    # no overlap: a new person


def test_single_face_mode_starts_at_the_centre_and_stays_with_that_person():
    tracker = FaceTracker(all_faces=False)
    assert [d.box[0] for d in tracker.update([_det(0, 0), _det(270, 190)], 640, 480).values()] == [270]
    # The other face moves to the centre, ours drifts away: identity is kept.
    assert [d.box[0] for d in tracker.update([_det(265, 190), _det(330, 190)], 640, 480).values()] == [265]
    tracker.drop(0)
    assert list(tracker.update([_det(0, 0)], 640, 480)) == [1]


def test_realesrgan_tiling_matches_whole_image():
    torch.manual_seed(0)
    net = RRDBNet(channels=8, blocks=1, growth=4)
    image = np.random.default_rng(2).integers(0, 255, (71, 93, 3), dtype=np.uint8)
    whole = RealESRGANUpsampler(torch.device("cpu"), tile=0, net=net).enhance(image)
    tiled = RealESRGANUpsampler(torch.device("cpu"), tile=32, tile_pad=40, net=net).enhance(image)
    assert whole.shape == (142, 186, 3)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_realesrgan_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="RealESRGAN_x2plus.pth"):
        RealESRGANUpsampler(torch.device("cpu"), download=False)


def test_crop_at_network_size_is_the_512_crop_resampled():
    image = np.random.default_rng(4).integers(0, 255, (200, 240, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 6)   # smooth content: resampling orders then agree
    matrix = align_matrix(FFHQ_TEMPLATE_512 * 0.3 + [40, 30])
    small = warp_face(image, crop_matrix(matrix, 128), 128).astype(float)
    large = cv2.resize(warp_face(image, matrix), (128, 128), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(small - large)[8:-8, 8:-8].mean() < 1.0
    # The paste-back maps a 128 face onto the same place as a 512 one.
    paster = FacePaster(1)
    np.testing.assert_allclose(paster.face_to_canvas(matrix, 128) @ [63.5, 63.5, 1],
                               paster.face_to_canvas(matrix, 512) @ [255.5, 255.5, 1], atol=1e-9)


def test_parsing_mask_loads_registry_weights_and_fades_to_zero_at_the_border(tmp_path, monkeypatch):
    from facexlib.parsing.parsenet import ParseNet

    from keep.face.parsing import ParseMasker
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    torch.manual_seed(0)
    (tmp_path / "facelib").mkdir()
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(),
               tmp_path / "facelib" / "parsing_parsenet.pth")
    mask = ParseMasker(torch.device("cpu"), download=False)(np.full((512, 512, 3), 128, np.uint8))
    assert mask.shape == (512, 512) and mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask[:10].max() == 0 and mask[:, -10:].max() == 0


def test_retinaface_input_is_enlarged_to_the_release_size_truncated_not_rounded():
    """The release's get_face_landmarks_5(resize=640) enlarges with (int(w * s), int(h * s)); a
    388x512 frame (real_1's size) must reach the detector as 844x640, not cv2 fx='s rounded 845x640."""
    from keep.face.detect import RetinaFaceDetector

    class Recorder(torch.nn.Module):
        shapes = []

        def detect_faces(self, bgr, **kwargs):
            self.shapes.append(bgr.shape)
            return np.zeros((0, 15), np.float32)

    detector = RetinaFaceDetector(torch.device("cpu"), net=Recorder())
    for h, w in [(512, 388), (388, 512), (640, 480), (700, 900)]:
        detector.detect(np.zeros((h, w, 3), np.uint8))
    scale = [640 / 388, 640 / 388, 640 / 480, 1.0]
    expected = [(int(h * s), int(w * s), 3) for (h, w), s in zip([(512, 388), (388, 512), (640, 480), (700, 900)], scale)]
    assert Recorder.shapes == expected
    assert Recorder.shapes[0] == (844, 640, 3)
