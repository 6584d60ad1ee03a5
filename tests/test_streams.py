"""Which video stream `keep restore` reads (keep/io/source.py: choose_video_stream).

A file whose first video stream is a one-frame cover picture (an mkv with an mjpeg thumbnail) must be
restored from its real video stream, the one with the most frames, and the summary must say which;
``--stream N`` picks another by its container index, and a wrong N is a one-line error.
"""
import av
import numpy as np
import pytest

from keep.cli import main
from keep.io.source import open_source

from tiny_models import random_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
FRAMES = 6


def _covered_mkv(path):
    """Stream 0: an mjpeg picture (1 frame, 64x48); stream 1: H.264 video, FRAMES frames of 96x96."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 48, "yuvj420p"
        video = container.add_stream("libx264", rate=20)
        video.width, video.height, video.pix_fmt = 96, 96, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24")
        picture = picture.reformat(format="yuvj420p")
        picture.pts = 0
        for packet in list(cover.encode(picture)) + list(cover.encode(None)):
            container.mux(packet)
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    return path


def _frames(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def covered(tmp_path_factory):
    return _covered_mkv(tmp_path_factory.mktemp("streams") / "covered.mkv")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pth", 64)


def test_the_video_stream_with_most_frames_is_read(covered):
    with open_source(covered) as source:
        assert source.info.stream == 1 and (source.info.width, source.info.height) == (96, 96)
        assert source.info.frame_count == FRAMES
        assert len(list(source)) == FRAMES
        assert any("video stream 1 restored" in note and "0 (mjpeg)" in note for note in source.info.notes)
    with open_source(covered, stream=0) as source:
        assert (source.info.width, source.info.height) == (64, 48) and len(list(source)) == 1


def test_restore_states_the_stream_and_stream_option_chooses(tmp_path, covered, weights, capsys):
    args = [str(covered), "--weights", str(weights), "--aligned", "--no-progress", "--device", "cpu"]
    assert main(["restore", *args, "-o", str(tmp_path / "default")]) == 0
    assert "video stream 1 restored, the one with the most frames" in capsys.readouterr().out
    assert len(_frames(tmp_path / "default" / "covered.mp4")) == FRAMES
    assert main(["restore", *args, "-o", str(tmp_path / "cover"), "--stream", "0"]) == 0
    assert "video stream 0 restored (--stream)" in capsys.readouterr().out
    assert len(_frames(tmp_path / "cover" / "covered.mp4")) == 1
    assert main(["restore", *args, "-o", str(tmp_path / "bad"), "--stream", "4"]) == 1
    err = capsys.readouterr().err
    assert "--stream 4 is not a video stream" in err and "1 (h264)" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "covered.mp4").exists()
