"""`keep restore` end to end on the shared clips, with the dlib detector and a tiny KEEP network whose
weights come from ../shared/conformance/fill.py (saved as a self-describing checkpoint)."""
import importlib.util
import itertools
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
import torch

from keep.api import CONFIGS, create_model, load_model
from keep.checkpoint import save_inference_checkpoint
from keep.cli import main
from keep.face import FacePaster, align_matrix, crop_matrix, make_detector, warp_face
from keep.io import open_source, write_image
from keep.io.samples import write_sample_clip
from keep.io.source import ACCURATE
from keep.restore.options import RestoreOptions
from keep.restore.pipeline import VideoRestorer

from shared_material import SHARED
VIDEOS = SHARED / "videos"
FILL = SHARED / "conformance" / "fill.py"
pytestmark = pytest.mark.skipif(not (VIDEOS / "real_1.mp4").is_file() or not FILL.is_file(),
                                reason=f"shared videos / conformance fill.py not found under {SHARED}")
TINY_SIZE = 128   # the tiny configuration at 128 px: the pipeline crops at the network's input size


def frames_of(name, count, start=0):
    with open_source(VIDEOS / name) as source:
        return [f.image for f in itertools.islice(source, start, start + count)]


def decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.reformat(format="rgb24", interpolation=ACCURATE).to_ndarray() for f in container.decode(stream)]
        return stream.average_rate, frames, [s.codec_context.name for s in container.streams.audio]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("keep_conformance_fill", FILL)
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    net = create_model("keep-tiny", img_size=TINY_SIZE)
    net.load_state_dict(fill.fill_state_dict(net.state_dict(), seed=0))
    path = tmp_path_factory.mktemp("weights") / "keep_tiny_filled.pth"
    return save_inference_checkpoint(net, path, {"type": "KEEP", **CONFIGS["keep-tiny"], "img_size": TINY_SIZE})


@pytest.fixture(scope="module")
def wild_clip(tmp_path_factory):
    """Frames 40-45 of real_1 (388x512, 20 fps) with a 440 Hz AAC sound track."""
    return write_sample_clip(frames_of("real_1.mp4", 6, start=40), tmp_path_factory.mktemp("clips") / "wild.mp4")


def test_in_the_wild_clip_keeps_length_rate_size_audio_and_background(tmp_path, tiny_weights, wild_clip):
    out = tmp_path / "out"
    assert main(["restore", str(wild_clip), "-o", str(out), "--weights", str(tiny_weights), "--detector", "dlib",
                 "--window", "3", "--no-progress", "--save-faces", "--compare"]) == 0
    rate, restored, audio = decode(out / "wild.mp4")
    _, original, _ = decode(wild_clip)
    assert rate == 20 and len(restored) == len(original) == 6
    assert restored[0].shape == original[0].shape == (512, 388, 3)
    assert audio == ["aac"]
    # The side-by-side comparison carries the sound track too, and shows input | output.
    rate, compared, audio = decode(out / "wild_compare.mp4")
    assert rate == 20 and len(compared) == 6 and compared[0].shape == (512, 776, 3) and audio == ["aac"]
    assert np.abs(compared[0][:, 388:].astype(int) - restored[0]).mean() < 4   # two encodes of one frame
    assert np.abs(compared[0][:, :388].astype(int) - original[0]).mean() < 4
    assert len(list((out / "wild" / "restored_faces").glob("*.png"))) == 6
    # Away from the face the output is the input up to the codec (no colour shift, no move).
    detector = make_detector("dlib", torch.device("cpu"))
    for before, after in zip(original, restored):
        matrix = align_matrix(detector.detect(before)[0].landmarks)
        square = cv2.warpAffine(np.ones((512, 512), np.float32), FacePaster(1).face_to_canvas(matrix, 512)[:2],
                                (388, 512))
        far = cv2.dilate(square, np.ones((31, 31), np.uint8)) == 0
        diff = after.astype(int)[far] - before.astype(int)[far]
        assert far.mean() > 0.15
        assert np.abs(diff).mean() < 1.5 and abs(diff.mean()) < 0.3
        # ... and the face region did change (the random network's output was pasted).
        assert np.abs(after.astype(int) - before.astype(int))[square > 0.9].mean() > 10


def _restore_aligned(tmp_path, weights, clip, *extra):
    out = tmp_path / ("out" + "".join(extra).replace("-", "_"))
    assert main(["restore", str(clip), "-o", str(out), "--weights", str(weights), "--aligned", "--window", "2",
                 "--no-progress", "--save-faces", *extra]) == 0
    faces = [cv2.imread(str(p))[..., ::-1] for p in sorted((out / clip.stem / "restored_faces").glob("*.png"))]
    return out / f"{clip.stem}.mp4", faces


def _reference(net, crops, window, carry):
    """Independent reference: windows through net.restore_window, state carried or not."""
    state, faces = None, []
    for start in range(0, len(crops), window):
        x = torch.from_numpy(np.stack(crops[start:start + window])).permute(0, 3, 1, 2).float()
        x = (x / 255.0 - 0.5) / 0.5
        with torch.inference_mode():
            y, new_state = net.restore_window(x[None], state=state if carry else None)
        state = new_state
        y = ((y[0].clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        faces += list(y)
    return faces


def test_aligned_mode_carried_state_vs_reset_per_window(tmp_path, tiny_weights):
    clip = write_sample_clip(frames_of("synthetic_1.mp4", 4), tmp_path / "aligned.mp4", tone_hz=None)
    video, carried = _restore_aligned(tmp_path, tiny_weights, clip)
    _, reset = _restore_aligned(tmp_path, tiny_weights, clip, "--reset-state-per-window")
    rate, frames, _ = decode(video)
    assert rate == 20 and len(frames) == 4 and frames[0].shape == (TINY_SIZE, TINY_SIZE, 3)
    _, inputs, _ = decode(clip)
    crops = [cv2.resize(f, (TINY_SIZE, TINY_SIZE), interpolation=cv2.INTER_LINEAR) for f in inputs]
    net = load_model(tiny_weights)
    references = (_reference(net, crops, 2, carry=True), _reference(net, crops, 2, carry=False))
    for ours, ref in zip((carried, reset), references):
        assert len(ours) == 4
        assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(ours, ref)) <= 1
    # The first window is the same either way; after it, the carried state changes the result.
    assert all(np.array_equal(a, b) for a, b in zip(carried[:2], reset[:2]))
    assert any(np.abs(a.astype(int) - b.astype(int)).mean() > 0.5 for a, b in zip(carried[2:], reset[2:]))


def test_two_faces_side_by_side_give_two_tracks(tmp_path, tiny_weights):
    pairs = zip(frames_of("real_1.mp4", 2, start=40), frames_of("real_2.mp4", 2, start=40))
    clip = write_sample_clip([np.concatenate(p, axis=1) for p in pairs], tmp_path / "pair.mp4", tone_hz=None)
    options = RestoreOptions(output_dir=tmp_path / "out", weights=str(tiny_weights), detector="dlib",
                             all_faces=True, window=3, save_faces=True, progress=False)
    summary = VideoRestorer(options).run(clip)
    assert summary.tracks == 2 and summary.frames == 2 and summary.detections == 4
    names = sorted(p.name for p in (tmp_path / "out" / "pair" / "restored_faces").glob("*.png"))
    assert names == [f"{i:08d}_{t:02d}.png" for i in range(2) for t in range(2)]
    single = VideoRestorer(RestoreOptions(output_dir=tmp_path / "one", weights=str(tiny_weights), detector="dlib",
                                          window=3, progress=False)).run(clip)
    assert single.tracks == 1 and single.frames == 2


def test_cli_default_restores_only_the_centre_face(tmp_path, tiny_weights, capsys):
    """The documented default (--only-center-face): a plain run on two faces side by side makes one track."""
    pairs = zip(frames_of("real_1.mp4", 2, start=40), frames_of("real_2.mp4", 2, start=40))
    clip = write_sample_clip([np.concatenate(p, axis=1) for p in pairs], tmp_path / "pair.mp4", tone_hz=None)
    common = [str(clip), "--weights", str(tiny_weights), "--detector", "dlib", "--window", "3", "--no-progress",
              "--save-faces"]
    assert main(["restore", "-o", str(tmp_path / "plain"), *common]) == 0
    assert "4 faces detected, 1 track(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "plain" / "pair" / "restored_faces").glob("*.png")) == \
        ["00000000_00.png", "00000001_00.png"]
    assert main(["restore", "-o", str(tmp_path / "all"), "--all-faces", *common]) == 0
    assert "4 faces detected, 2 track(s)" in capsys.readouterr().out


def test_gray_frame_folder_with_fps_override(tmp_path, tiny_weights):
    folder = tmp_path / "gray_frames"
    for k, image in enumerate(frames_of("real_1.mp4", 3, start=40)):
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{k:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    out = tmp_path / "out"
    assert main(["restore", str(folder), "-o", str(out), "--weights", str(tiny_weights), "--detector", "dlib",
                 "--fps", "25", "--no-progress"]) == 0
    rate, frames, audio = decode(out / "gray_frames.mp4")
    assert rate == Fraction(25) and len(frames) == 3 and audio == []
    spread = np.ptp(np.stack(frames).astype(int), axis=-1)
    assert spread.mean() < 1.0   # the pasted face stays gray


def test_bad_inputs_fail_clearly_without_output(tmp_path, tiny_weights, capsys):
    args = ["--weights", str(tiny_weights), "--detector", "dlib", "--no-progress"]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    assert main(["restore", str(broken), "-o", str(tmp_path / "o1"), *args]) == 1
    assert "broken.mp4" in capsys.readouterr().err
    assert not (tmp_path / "o1" / "broken.mp4").exists()

    blank = tmp_path / "blank"
    blank.mkdir()
    for k in range(3):
        write_image(blank / f"{k}.png", np.full((64, 80, 3), 120, np.uint8))
    assert main(["restore", str(blank), "-o", str(tmp_path / "o2"), *args]) == 1
    assert "no face found" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())

    assert main(["restore", str(blank), "-o", str(tmp_path / "o3"), "--weights", str(tmp_path / "none.pth")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err

    (tmp_path / "o4").mkdir()
    (tmp_path / "o4" / "blank.mp4").write_bytes(b"old")
    assert main(["restore", str(blank), "-o", str(tmp_path / "o4"), *args, "--aligned"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "o4" / "blank.mp4").read_bytes() == b"old"
    assert main(["restore", str(blank), "-o", str(tmp_path / "o4"), *args, "--aligned", "--overwrite"]) == 0
    assert len(decode(tmp_path / "o4" / "blank.mp4")[1]) == 3


def test_folder_of_videos_is_a_batch(tmp_path, tiny_weights):
    batch = tmp_path / "batch"
    batch.mkdir()
    for name, start in (("first", 0), ("second", 10)):
        write_sample_clip(frames_of("synthetic_2.mp4", 2, start=start), batch / f"{name}.mkv", tone_hz=None)
    out = tmp_path / "out"
    assert main(["restore", str(batch), "-o", str(out), "--weights", str(tiny_weights), "--aligned",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == ["first.mp4", "second.mp4"]
    assert [len(decode(out / n)[1]) for n in ("first.mp4", "second.mp4")] == [2, 2]


def test_rotated_phone_video_is_restored_upright(tmp_path, tiny_weights, capsys):
    """Portrait phone clip: the pixels are stored sideways with a display matrix (-90: turn 90 degrees
    clockwise to show). The face is found, the output is upright and carries no rotation, the summary
    says so."""
    upright = frames_of("real_1.mp4", 3, start=40)
    stored = [np.ascontiguousarray(np.rot90(f, 1)) for f in upright]          # 388x512 -> 512x388 sideways
    clip = write_sample_clip(stored, tmp_path / "phone.mp4", tone_hz=None, display_rotation=-90)
    out = tmp_path / "out"
    assert main(["restore", str(clip), "-o", str(out), "--weights", str(tiny_weights), "--detector", "dlib",
                 "--window", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "1 track(s)" in printed and "rotated video" in printed and "upright" in printed
    with av.open(str(out / "phone.mp4")) as container:
        frames = list(container.decode(video=0))
        assert all(f.rotation == 0 for f in frames)
        images = [f.reformat(format="rgb24", interpolation=ACCURATE).to_ndarray() for f in frames]
    assert len(images) == 3 and images[0].shape == (512, 388, 3)
    # Upright: below the (close-up) face, the output is the upright input up to the codec.
    below = slice(-40, None)
    assert np.abs(images[0][below].astype(int) - upright[0][below]).mean() < 3


def test_smooth_sigma_zero_aligns_on_the_raw_landmarks(tmp_path, tiny_weights):
    """--smooth-sigma 0 turns the temporal smoothing off: each crop is the alignment of that frame's own
    detection (recomputed here independently of the pipeline); the default sigma 5 gives other crops."""
    clip = write_sample_clip(frames_of("real_1.mp4", 5, start=60), tmp_path / "turn.mp4", tone_hz=None)
    crops = {}
    for sigma in ("0", "5"):
        out = tmp_path / f"out{sigma}"
        assert main(["restore", str(clip), "-o", str(out), "--weights", str(tiny_weights), "--detector", "dlib",
                     "--window", "5", "--no-progress", "--save-cropped", "--smooth-sigma", sigma]) == 0
        crops[sigma] = [cv2.imread(str(p))[..., ::-1] for p in sorted((out / "turn" / "cropped_faces").glob("*.png"))]
    detector = make_detector("dlib", torch.device("cpu"))
    with open_source(clip) as source:
        frames = [f.image for f in source]
    raw = [warp_face(f, crop_matrix(align_matrix(detector.detect(f)[0].landmarks), TINY_SIZE), TINY_SIZE)
           for f in frames]
    assert len(crops["0"]) == len(raw) == 5
    assert all(np.array_equal(a, b) for a, b in zip(crops["0"], raw))
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(crops["5"], raw)) > 0.5


def test_batch_with_clashing_names_writes_distinct_outputs(tmp_path, tiny_weights, capsys):
    """x.mp4 and x.mkv in one folder: both restored, to x_mp4.mp4 and x_mkv.mp4, and the run says so."""
    batch = tmp_path / "batch"
    batch.mkdir()
    write_sample_clip(frames_of("synthetic_2.mp4", 2), batch / "x.mp4", tone_hz=None)
    write_sample_clip(frames_of("synthetic_2.mp4", 3, start=10), batch / "x.mkv", tone_hz=None)
    out = tmp_path / "out"
    assert main(["restore", str(batch), "-o", str(out), "--weights", str(tiny_weights), "--aligned",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["x_mkv.mp4", "x_mp4.mp4"]
    assert [len(decode(out / n)[1]) for n in ("x_mp4.mp4", "x_mkv.mp4")] == [2, 3]
    assert "2 of 2 inputs restored" in captured.out
    assert captured.out.count("share the name 'x'") == 2    # in each summary

