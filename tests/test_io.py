"""keep.io: sources (video, frame folder), the atomic MP4 writer with audio copy, image reading."""
import itertools
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from keep.io import InputError, VideoWriter, find_inputs, open_source, read_image, write_image
from keep.io.samples import write_sample_clip

from shared_material import SHARED
VIDEOS = SHARED / "videos"
needs_videos = pytest.mark.skipif(not (VIDEOS / "real_1.mp4").is_file(),
                                  reason=f"shared test videos not found under {VIDEOS}")


def first_frames(path, count):
    with open_source(path) as source:
        return [f.image for f in itertools.islice(source, count)]


def decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        return stream, frames, [s.codec_context.name for s in container.streams.audio]


@needs_videos
def test_video_source_reports_exact_rate_and_frames():
    with open_source(VIDEOS / "real_1.mp4") as source:
        info = source.info
        frames = list(itertools.islice(source, 3))
    assert (info.width, info.height, info.fps, info.kind) == (388, 512, Fraction(20), "video")
    assert isinstance(info.time_base, Fraction) and not info.has_audio
    assert [f.image.shape for f in frames] == [(512, 388, 3)] * 3
    # pts advance by one frame duration in time-base units (1/20 s).
    assert frames[1].pts - frames[0].pts == 1 / (info.fps * info.time_base)


@needs_videos
@pytest.mark.parametrize("suffix,codec,copied", [(".mp4", "aac", True), (".mov", "pcm_s16le", False)])
def test_writer_keeps_rate_timestamps_and_audio(tmp_path, suffix, codec, copied):
    clip = write_sample_clip(first_frames(VIDEOS / "real_1.mp4", 5), tmp_path / f"in{suffix}", audio_codec=codec)
    with open_source(clip) as source:
        assert source.info.has_audio
        writer = VideoWriter(tmp_path / "out.mp4", source.info.width, source.info.height, source.info.fps,
                             source.info.time_base, audio_from=clip)
        pts_in = []
        for frame in source:
            writer.write(frame.image, frame.pts)
            pts_in.append(frame.pts * frame.time_base)
        assert not (tmp_path / "out.mp4").exists()  # only the temporary file until close()
        writer.close()
    assert writer.audio.remux is copied
    stream, frames, audio = decode(tmp_path / "out.mp4")
    assert len(frames) == 5 and stream.average_rate == 20
    assert [p * stream.time_base for p, _ in frames] == pts_in
    assert audio == ["aac"]
    assert not list(tmp_path.glob(".*partial*"))


def test_writer_pads_odd_sizes_and_abort_leaves_nothing(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (31, 45, 3), dtype=np.uint8)
    writer = VideoWriter(tmp_path / "odd.mp4", 45, 31, Fraction(25), Fraction(1, 25))
    assert writer.padded
    for k in range(3):
        writer.write(image, k)
    writer.close()
    stream, frames, _ = decode(tmp_path / "odd.mp4")
    assert (stream.width, stream.height, len(frames)) == (46, 32, 3)
    aborted = VideoWriter(tmp_path / "gone.mp4", 46, 32, Fraction(25), Fraction(1, 25))
    aborted.write(np.zeros((32, 46, 3), np.uint8), 0)
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def test_corrupt_and_missing_inputs_raise_clear_errors(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(InputError, match="cannot open video|corrupt"):
        list(open_source(bad))
    with pytest.raises(InputError, match="does not exist"):
        open_source(tmp_path / "nothing.mp4")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported file type"):
        find_inputs(tmp_path / "notes.txt")


def test_find_inputs_tells_batch_from_frame_folder(tmp_path):
    videos, frames, mixed = (tmp_path / n for n in ("videos", "frames", "mixed"))
    for folder in (videos, frames, mixed):
        folder.mkdir()
    for name in ("b.mp4", "a.MOV"):
        (videos / name).write_bytes(b"")
        (mixed / name).write_bytes(b"")
    image = np.zeros((8, 8, 3), np.uint8)
    write_image(frames / "0001.png", image)
    write_image(mixed / "0001.png", image)
    assert [p.name for p in find_inputs(videos)] == ["a.MOV", "b.mp4"]
    assert find_inputs(frames) == [frames]
    with pytest.raises(InputError, match="mixes videos and images"):
        find_inputs(mixed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no videos"):
        find_inputs(tmp_path / "empty")
    clips = tmp_path / "clips"   # a folder of frame folders, as `keep degrade` writes
    for name in ("clip_b", "clip_a", ".clip_c.tmp"):
        write_image(clips / name / "00000000.png", image)
    (clips / "notes").mkdir()
    assert find_inputs(clips) == [clips / "clip_a", clips / "clip_b"]


def test_read_image_converts_gray_alpha_and_16bit(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 255, (6, 7), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    image, note = read_image(tmp_path / "g.png")
    assert image.shape == (6, 7, 3) and (image == gray[..., None]).all() and "grayscale" in note
    bgra = rng.integers(0, 255, (6, 7, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    image, note = read_image(tmp_path / "a.png")
    assert (image == bgra[..., 2::-1]).all() and "alpha" in note
    deep = rng.integers(0, 65535, (6, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    image, note = read_image(tmp_path / "d.png")
    assert image.dtype == np.uint8 and np.abs(image.astype(int) - deep[..., ::-1] / 257).max() <= 0.5
    with pytest.raises(InputError, match="cannot read image"):
        read_image(tmp_path / "missing.png")


def test_frame_folder_source_uses_given_fps_and_checks_sizes(tmp_path):
    for k in range(3):
        write_image(tmp_path / f"{k:03d}.png", np.full((10, 12, 3), k, np.uint8))
    with open_source(tmp_path, fps=Fraction(30000, 1001)) as source:
        frames = list(source)
        assert source.info.fps == Fraction(30000, 1001) and source.info.time_base == Fraction(1001, 30000)
    assert [f.pts for f in frames] == [0, 1, 2] and [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2]
    write_image(tmp_path / "999.png", np.zeros((11, 12, 3), np.uint8))
    with pytest.raises(InputError, match="all frames must have one size"):
        list(open_source(tmp_path))


def test_variable_frame_rate_timestamps_are_kept(tmp_path):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(5)]
    pts = [0, 1, 3, 4, 8]   # in 1/30 s: irregular
    writer = VideoWriter(tmp_path / "vfr.mp4", 16, 16, Fraction(30), Fraction(1, 30))
    for image, p in zip(images, pts):
        writer.write(image, p)
    writer.close()
    with open_source(tmp_path / "vfr.mp4") as source:
        frames = list(source)
        assert any("variable frame rate" in n for n in source.info.notes)
    assert [f.pts * f.time_base for f in frames] == [Fraction(p, 30) for p in pts]


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_display_matrix_rotation_is_applied_on_decode(tmp_path, rotation):
    """A phone stores the sensor's pixels and a display matrix; decoding must give the upright frames."""
    yy, xx = np.mgrid[0:48, 0:64]
    upright = np.stack([xx * 4, yy * 5, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    upright[4:16, 6:20] = 255                       # an asymmetric mark: any wrong turn moves it
    turns = rotation // 90                          # display = stored turned by `rotation` counter-clockwise
    stored = np.ascontiguousarray(np.rot90(upright, -turns))
    clip = write_sample_clip([stored] * 3, tmp_path / "phone.mp4", tone_hz=None, display_rotation=rotation)
    with open_source(clip) as source:
        info = source.info
        frames = [f.image for f in source]
    assert (info.width, info.height) == (64, 48)
    assert any("rotated video" in n and "upright" in n for n in info.notes)
    assert [f.shape for f in frames] == [(48, 64, 3)] * 3
    for image in frames:
        assert np.abs(image.astype(int) - upright).mean() < 2.0
    # The plain clip (no display matrix) decodes as stored, with no note.
    plain = write_sample_clip([stored] * 2, tmp_path / "plain.mp4", tone_hz=None)
    with open_source(plain) as source:
        assert source.info.notes == [] and next(iter(source)).image.shape == stored.shape


def test_fps_override_does_not_claim_the_input_timestamps_are_kept(tmp_path):
    """A regular 20 fps clip opened with --fps 50 is re-timed: no 'timestamps are kept' note."""
    image = np.zeros((16, 16, 3), np.uint8)
    clip = write_sample_clip([image] * 4, tmp_path / "clip.mp4", tone_hz=None)
    for fps in (Fraction(50), Fraction(8)):
        with open_source(clip, fps=fps) as source:
            list(source)
            notes = source.info.notes
        assert not any("timestamps are kept" in n for n in notes)
        assert any(f"re-timed at {fps} fps" in n for n in notes)
    with open_source(clip) as source:
        list(source)
        assert source.info.notes == []


def test_undecodable_video_is_reported_on_open(tmp_path):
    """A file whose container opens but whose frames cannot be decoded (media data zeroed, header
    intact) fails at open_source, i.e. before any model is loaded, not in the middle of a run."""
    rng = np.random.default_rng(0)
    clip = write_sample_clip([rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)] * 10, tmp_path / "full.mp4",
                             tone_hz=None)
    data = bytearray(clip.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    assert 0 < start < end
    data[start:end] = bytes(end - start)
    broken = tmp_path / "zeroed.mp4"
    broken.write_bytes(bytes(data))
    with av.open(str(broken)) as container:    # the container itself opens fine
        assert container.streams.video
    with pytest.raises(InputError, match="decoding failed at frame 0"):
        open_source(broken)
