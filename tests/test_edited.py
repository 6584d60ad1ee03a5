"""Edited footage through the one face pipeline (keep/face/tracks.py): each shot of a two-shot clip comes
out of `keep restore`, `keep live` (--shots auto or a cut list) and the demo's job exactly as that shot
restored alone; a face that pans out is not pasted over its gap; single-face mode stays with its person
when someone passes in front; faces under --min-face are left alone and counted. Clips from
../shared/videos, dlib, a tiny random network."""
import zipfile

import numpy as np
import pytest
import torch

from keep.evaluation.clips import write_frames
from keep.face.align import FFHQ_TEMPLATE_512
from keep.face.detect import Detection
from keep.face.paste import FacePaster
from keep.face.tracks import FaceReady, FaceTracks, TrackEnded
from keep.io import read_frames
from keep.restore.options import RestoreOptions
from keep.restore.pipeline import VideoRestorer

from shared_material import VIDEOS, require
from tiny_models import random_tiny_checkpoint

SIZE = 128
SHOT = 8   # frames per shot


@pytest.fixture(scope="module")
def dlib_detector():
    pytest.importorskip("dlib")
    from keep.face.detect import DlibDetector
    return DlibDetector()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "keep_tiny.pth", SIZE)


@pytest.fixture(scope="module")
def two_shots():
    """real_1 (cropped to 362 px wide) then real_2, 8 frames each: the faces sit at about the same place."""
    a = read_frames(require(VIDEOS / "real_1.mp4"), max_frames=40 + SHOT)[40:, :, 13:375]
    b = read_frames(require(VIDEOS / "real_2.mp4"), max_frames=40 + SHOT)[40:]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def _restore(tmp_path, weights, frames, name, **kw):
    folder = tmp_path / "in" / name
    write_frames(frames, folder)
    out = tmp_path / "out"
    options = RestoreOptions(output_dir=out, weights=str(weights), detector="dlib", window=3, progress=False,
                             mask="square", save_faces=True, save_cropped=True, save_frames=True, **kw)
    summary = VideoRestorer(options).run(folder, name=name)
    return summary, _saved(out / name)


def _saved(extras):
    """The crops, restored faces and final frames a run saved under ``extras``, by frame: PNG bytes."""
    found = {}
    for kind in ("cropped_faces", "restored_faces"):
        for path in (extras / kind).glob("*.png"):
            found.setdefault(kind, {}).setdefault(int(path.name[:8]), []).append(path.read_bytes())
    found["final_frames"] = {int(p.stem): [p.read_bytes()] for p in (extras / "final_frames").glob("*.png")}
    return found


@pytest.mark.timeout(300)
def test_restore_gives_each_shot_as_if_cut_out_and_restored_alone(tmp_path, tiny_weights, two_shots):
    a, b = two_shots
    summary, whole = _restore(tmp_path, tiny_weights, np.concatenate([a, b]), "whole")
    assert summary.cuts == [SHOT] and summary.tracks == 2
    assert "2 shot(s); cuts before frames 8" in summary.describe(aligned=False)
    for offset, frames, name in ((0, a, "first"), (SHOT, b, "second")):
        _, alone = _restore(tmp_path, tiny_weights, frames, name)
        for kind in ("cropped_faces", "restored_faces", "final_frames"):
            assert len(alone[kind]) == SHOT
            for t in range(SHOT):
                assert whole[kind][offset + t] == alone[kind][t], (kind, offset + t)
    # without shot boundaries the second shot is not what it gives alone (state, smoothing, tracking cross)
    _, crossed = _restore(tmp_path, tiny_weights, np.concatenate([a, b]), "crossed", shots="off")
    assert any(crossed["final_frames"][SHOT + t] != alone["final_frames"][t] for t in range(SHOT))


def _demo(tmp_path, weights, frames, name):
    """The demo's job (keep/demo/job.py) on ``frames`` uploaded as a zip of PNGs, as the page runs it."""
    import cv2
    from keep.demo.job import DemoSettings, ModelCache, RestoreJob
    from keep.demo.workspace import Limits
    archive = tmp_path / "uploads" / f"{name}.zip"
    archive.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for t, image in enumerate(frames):
            zf.writestr(f"{name}/{t:08d}.png", cv2.imencode(".png", image[..., ::-1])[1].tobytes())
    folder = tmp_path / "runs" / name
    folder.mkdir(parents=True)
    job = RestoreJob(str(archive), DemoSettings(weights=str(weights), detector="dlib", window=3), folder, Limits(),
                     ModelCache(download=False), device="cpu", threads=1).run()
    assert job.state == "done", job.error
    return job.result, _saved(job.result.faces.parent)


@pytest.mark.timeout(300)
def test_demo_gives_each_shot_as_if_cut_out_and_restored_alone(tmp_path, tiny_weights, two_shots):
    a, b = two_shots
    result, whole = _demo(tmp_path, tiny_weights, np.concatenate([a, b]), "whole")
    assert "cuts before frames 8" in result.summary
    for offset, frames, name in ((0, a, "first"), (SHOT, b, "second")):
        _, alone = _demo(tmp_path, tiny_weights, frames, name)
        for kind in ("cropped_faces", "restored_faces", "final_frames"):
            assert len(alone[kind]) == SHOT
            for t in range(SHOT):
                assert whole[kind].get(offset + t) == alone[kind][t], (kind, offset + t)


@pytest.mark.timeout(300)
def test_aligned_crops_with_a_cut_list_file_restart_the_state_at_the_cut(tmp_path, tiny_weights, two_shots):
    import cv2
    a, b = two_shots
    crops = np.stack([cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in np.concatenate([a[:4], b[:4]])])
    cuts = tmp_path / "cuts.txt"
    cuts.write_text("# first frame of each new shot\n4\n")
    summary, whole = _restore(tmp_path, tiny_weights, crops, "aligned", aligned=True, shots=str(cuts))
    assert summary.cuts == [4]
    _, alone = _restore(tmp_path, tiny_weights, crops[4:], "aligned_second", aligned=True, shots="off")
    for t in range(4):
        assert whole["restored_faces"][4 + t] == alone["restored_faces"][t], t


@pytest.fixture(scope="module")
def tiny_net(tiny_weights):
    from keep.api import load_model
    torch.set_num_threads(1)
    return load_model(str(tiny_weights))


def _live(net, detector, frames, reads=None, shots="auto"):
    """`keep live`'s per-frame restorer on ``frames``; ``reads``: their numbers among the frames read
    (the ones missing were dropped), by default 0, 1, 2 ... Frame t of the stream is due at t / 20 s."""
    from keep.live.faces import CausalNetwork, LiveFaceRestorer
    restorer = LiveFaceRestorer(CausalNetwork(net, torch.device("cpu")), detector=detector, paster=FacePaster(1),
                                shots=shots)
    reads = range(len(frames)) if reads is None else reads
    return [restorer.process(f, t / 20, t) for t, f in zip(reads, frames)], restorer


@pytest.mark.timeout(300)
def test_live_gives_each_shot_as_if_it_started_there(tiny_net, two_shots, dlib_detector):
    a, b = two_shots
    whole, restorer = _live(tiny_net, dlib_detector, np.concatenate([a, b]))
    assert restorer.cuts == [SHOT] and restorer.tracks_started == 2
    alone, _ = _live(tiny_net, dlib_detector, b)
    for t in range(SHOT):
        assert np.array_equal(whole[SHOT + t], alone[t]), t
    assert not np.array_equal(whole[SHOT], b[0])   # the new person is restored at once


@pytest.mark.timeout(300)
def test_live_cut_list_counts_frames_read_so_dropped_frames_do_not_shift_it(tmp_path, tiny_net, two_shots,
                                                                            dlib_detector):
    """--shots FILE in live: the listed cut (frame 8 of the stream) falls on a dropped frame (7 and 8
    dropped): the new shot starts at the next frame restored, read frame 9, and from there the output
    is that of a stream starting at frame 9. Auto detection is off (a file), so the file alone says where."""
    a, b = two_shots
    stream = np.concatenate([a, b])
    cuts = tmp_path / "cuts.txt"
    cuts.write_text(f"{SHOT}\n")
    reads = [t for t in range(2 * SHOT) if t not in (SHOT - 1, SHOT)]
    whole, restorer = _live(tiny_net, dlib_detector, stream[reads], reads, shots=str(cuts))
    assert restorer.cuts == [SHOT + 1] and restorer.tracks_started == 2
    alone, _ = _live(tiny_net, dlib_detector, b[1:], range(SHOT + 1, 2 * SHOT), shots="off")
    for t in range(SHOT - 1):
        assert np.array_equal(whole[SHOT - 1 + t], alone[t]), t
    # the same frames with the cut on a frame restored (nothing dropped there): the shot starts on it
    kept = [t for t in range(2 * SHOT) if t not in (2, 3)]
    _, restorer = _live(tiny_net, dlib_detector, stream[kept], kept, shots=str(cuts))
    assert restorer.cuts == [SHOT]


@pytest.mark.timeout(300)
def test_live_command_takes_a_cut_list(tmp_path, tiny_weights, two_shots, capsys):
    import cv2
    from keep.cli import main
    from keep.io.samples import write_sample_clip
    a, b = two_shots
    crops = [cv2.resize(f, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for f in np.concatenate([a[:4], b[:4]])]
    clip = write_sample_clip(crops, tmp_path / "crops.mp4", tone_hz=None)
    cuts = tmp_path / "cuts.txt"
    cuts.write_text("# first frame of each new shot\n4\n")
    tiny = ["--aligned", "--weights", str(tiny_weights), "--device", "cpu", "--threads", "1", "--no-progress"]
    assert main(["live", str(clip), "-o", str(tmp_path / "live.mp4"), "--shots", str(cuts), "--when-behind", "wait",
                 *tiny]) == 0
    out = capsys.readouterr().out
    assert "8 frames read, 0 dropped" in out and "2 shot(s); cuts before frames 4" in out, out
    # the cut list is an input: never the output, not even with --overwrite
    listed = tmp_path / "listed.mp4"
    listed.write_text("4\n")
    assert main(["live", str(clip), "-o", str(listed), "--shots", str(listed), "--overwrite", *tiny]) == 1
    assert "would replace the input" in capsys.readouterr().err and listed.read_text() == "4\n"


def _faces(tracks, frames, detector, cuts=()):
    events = []
    for t, image in enumerate(frames):
        events += tracks.push(t, image, detector.detect(image), cut=t in cuts)
    return events + tracks.finish()


@pytest.mark.timeout(120)
def test_no_face_is_pasted_over_a_pan_out_gap(dlib_detector):
    """The camera pans right until the face has left the frame, holds, pans back: the detector misses
    it for a dozen frames (within --max-gap 20); nothing may be pasted there."""
    frames = read_frames(require(VIDEOS / "real_1.mp4"), max_frames=24)
    edge = np.repeat(frames[:, :, :1], 388, axis=2)             # the frame's left border, stretched: no face
    wide = np.concatenate([frames, edge], axis=2)
    offsets = [0, 0, 0, 100, 200, 300, 388, 388, 388, 388, 388, 388, 388, 388, 300, 200, 100, 0, 0, 0]
    clip = [np.ascontiguousarray(wide[t, :, x:x + 388]) for t, x in enumerate(offsets)]
    detected = [bool(dlib_detector.detect(f)) for f in clip]
    assert not any(detected[6:14]) and all(detected[:3]) and all(detected[-3:])
    events = _faces(FaceTracks(), clip, dlib_detector)
    ready = sorted(e.frame for e in events if isinstance(e, FaceReady))
    assert not set(ready) & set(range(6, 14))                   # frames where the face is out of the picture
    assert set(range(3)) <= set(ready) and set(range(17, 20)) <= set(ready)
    assert [e.why for e in events if isinstance(e, TrackEnded)][0] == "gone"


@pytest.mark.timeout(120)
def test_single_face_mode_stays_with_its_person_when_another_passes_in_front(dlib_detector):
    """Person A (real_1) on a wide frame; B's face (real_2) slides over A and back. Every face followed
    is A's: none on B while B covers A, and A again once uncovered, though B is still in the picture."""
    a = read_frames(require(VIDEOS / "real_1.mp4"), max_frames=30)
    b = read_frames(require(VIDEOS / "real_2.mp4"), max_frames=1)[0][130:360, 110:340]   # B's face, 230 px
    canvas = np.pad(a, ((0, 0), (0, 0), (0, 312), (0, 0)), mode="edge")                    # 700 px wide
    xs = [470 - 27 * min(t, 30 - t) for t in range(30)]                                    # 470 -> 65 -> 443
    clip = []
    for t, x in enumerate(xs):
        frame = canvas[t].copy()
        frame[140:370, x:x + 230] = b
        clip.append(frame)
    a_box = dlib_detector.detect(a[0])[0].box
    events = _faces(FaceTracks(all_faces=False), clip, dlib_detector)
    centres = {}
    for e in events:
        if isinstance(e, FaceReady):
            centre = e.landmarks.mean(axis=0)
            centres[e.frame] = centre
            assert a_box[0] <= centre[0] <= a_box[2], (e.frame, centre)   # on A, never on B
    assert {0, 1, 2, 27, 28, 29} <= set(centres)                          # A before and after the crossing


def test_faces_under_min_face_are_left_alone_and_counted():
    def det(scale, x):
        landmarks = FFHQ_TEMPLATE_512 * scale + [x, 10]
        return Detection(np.array([*landmarks.min(0) - 5, *landmarks.max(0) + 5]), landmarks, 1.0)
    image = np.zeros((200, 400, 3), np.uint8)
    tracks = FaceTracks(all_faces=True, min_face=48)
    events = []
    for t in range(3):
        # crop side = 512 * scale: 40 px (left alone) and 64 px (restored)
        events += tracks.push(t, image, [det(40 / 512, 10), det(64 / 512, 200)])
    events += tracks.finish()
    assert tracks.small_faces == 3 and tracks.tracks_started == 1
    assert {e.track for e in events if isinstance(e, FaceReady)} == {0}


def test_restore_says_when_every_face_is_under_min_face(tmp_path, tiny_weights, two_shots):
    from keep.io.errors import InputError
    with pytest.raises(InputError, match="every face found is smaller than --min-face 10000 px"):
        _restore(tmp_path, tiny_weights, two_shots[0][:2], "tiny_faces", min_face=10000.0)
    assert not (tmp_path / "out" / "tiny_faces.mp4").exists()


def test_a_bad_cut_list_is_a_one_line_error(tmp_path, capsys):
    from keep.cli import main
    bad = tmp_path / "cuts.txt"
    bad.write_text("12\n1:30\n")
    for value, message in ((str(tmp_path / "missing.txt"), "is neither auto, off nor a cut-list file"),
                           (str(bad), "cuts.txt:2: '1:30' is not a frame number")):
        for command in (["restore", str(tmp_path), "-o", str(tmp_path / "out")],
                        ["live", str(bad), "-o", str(tmp_path / "out.mp4")]):
            with pytest.raises(SystemExit) as exit_:
                main(command + ["--shots", value])
            assert exit_.value.code == 2
            err = capsys.readouterr().err
            assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.mp4").exists()


def test_face_tracks_equal_interp_and_scipy_per_shot():
    """keep/face/tracks.py against an independent reference, shot by shot: np.interp over the detected
    frames (gaps, and the shot's start and end held) then scipy's gaussian_filter1d; nothing crosses
    the cut at frame 20 (shot 2's face is first seen at 22 and held back to 20)."""
    from scipy.ndimage import gaussian_filter1d
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)   # the same picture: the face never leaves
    base = FFHQ_TEMPLATE_512 * 0.25 + [100, 50]
    walk = np.cumsum(rng.normal(0, 1.5, (40, 5, 2)), axis=0) + base
    walk[20:] += 15                                                # the next shot's face, a little apart
    detected = [t for t in range(40) if t not in (5, 6, 7, 20, 21, 28, 29, 39)]
    tracks = FaceTracks(sigma=2.0, max_gap=5, min_face=0)
    events = []
    for t in range(40):
        dets = []
        if t in detected:
            box = np.array([*walk[t].min(0) - 20, *walk[t].max(0) + 20])
            dets = [Detection(box, walk[t].copy(), 1.0)]
        events += tracks.push(t, image, dets, cut=t == 20)
    events += tracks.finish()
    got = {e.frame: (e.track, e.landmarks) for e in events if isinstance(e, FaceReady)}
    assert sorted(got) == list(range(40))
    assert {got[t][0] for t in range(20)} != {got[t][0] for t in range(20, 40)}   # two tracks
    for first, last in ((0, 20), (20, 40)):
        frames = [t for t in detected if first <= t < last]
        points = np.stack([walk[t] for t in frames]).reshape(len(frames), -1)
        filled = np.stack([np.interp(np.arange(first, last), frames, points[:, k]) for k in range(10)], axis=1)
        smooth = gaussian_filter1d(filled, sigma=2.0, axis=0, mode="reflect", truncate=4.0)
        for t in range(first, last):
            np.testing.assert_allclose(got[t][1].reshape(-1), smooth[t - first], atol=1e-9)
