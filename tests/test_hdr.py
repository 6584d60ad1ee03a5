"""High bit depth and HDR through `keep restore` (keep/io/source.py, keep/io/writer.py, keep/io/hdr.py).

A 10-bit PQ clip (BT.2020, SMPTE ST 2084 tags) with a smooth ramp of about 54 luma levels above a real
face: the output must be 10-bit with the same tags, and the ramp (far from the face, untouched by the
paste-back) must keep its levels. The earlier writer made it 8-bit under the same tags: 14 levels.
Without a 10-bit encoder the output is SDR BT.709, 8 bits, and the summary says so.
"""
import av
import numpy as np
import pytest

from keep.cli import main
from keep.io import writer as writer_module
from keep.io.hdr import hdr_to_sdr, pq_to_nits
from keep.io.hdr10 import Hdr10, read_hdr10
from keep.io.source import open_source

from shared_material import VIDEOS
from test_restore import frames_of
from tiny_models import random_tiny_checkpoint

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (VIDEOS / "real_1.mp4").is_file(), reason=f"shared videos absent: {VIDEOS}")]
BAND = 64          # rows of ramp above the face
PQ_TAGS = {"colorspace": 9, "color_primaries": 9, "color_trc": 16}
# A P3-D65 mastering display of 1000 / 0.005 cd/m2, MaxCLL 1000, MaxFALL 400 (x264's own syntax,
# written by the encoder into the clip's SEI: an independent route to the values read back)
MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
HDR10 = Hdr10(red=(34000, 16000), green=(13250, 34500), blue=(7500, 3000), white=(15635, 16450),
              max_luminance=10000000, min_luminance=50, max_cll=1000, max_fall=400)


def _y_plane(frame):
    """Luma of a yuv420p10le (uint16) or yuv420p (uint8) frame as integers."""
    plane = frame.planes[0]
    dtype = np.uint16 if frame.format.name.endswith("10le") else np.uint8
    width = plane.line_size // np.dtype(dtype).itemsize
    return np.frombuffer(plane, dtype).reshape(-1, width)[:frame.height, :frame.width].astype(int)


def _decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        tags = {k: int(getattr(context, k)) for k in PQ_TAGS}
        return context.pix_fmt, tags, [_y_plane(f) for f in container.decode(stream)]


def _encode_tagged(path, images, tags, options=None):
    """RGB frames (uint8: 8-bit yuv420p, uint16: 10-bit) as a near-lossless H.264 clip with colour
    ``tags``, converted with their matrix."""
    deep = images[0].dtype == np.uint16
    pix_fmt = "yuv420p10le" if deep else "yuv420p"
    h, w = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = {"crf": "4", **(options or {})}
        for key, value in tags.items():
            setattr(stream.codec_context, key, value)
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb48le" if deep else "rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace=tags["colorspace"])
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _hdr10_of(path):
    with av.open(str(path)) as container:
        return read_hdr10(next(container.decode(video=0)))


@pytest.fixture(scope="module")
def pq_clip(tmp_path_factory):
    faces = frames_of("real_1.mp4", 3, start=40)
    h, w = faces[0].shape[:2]
    ramp = np.linspace(24000, 27500, w)               # about 54 ten-bit levels across the width
    path = tmp_path_factory.mktemp("hdr") / "pq.mp4"
    images = []
    for face in faces:
        image = np.empty((h + BAND, w, 3), np.uint16)
        image[:BAND] = np.round(ramp)[None, :, None].astype(np.uint16)
        image[BAND:] = face.astype(np.uint16) * 257
        images.append(image)
    _encode_tagged(path, images, PQ_TAGS, {"x264-params": f"mastering-display={MASTERING}:cll=1000,400"})
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("weights") / "tiny.pth", 128)


def _restore(clip, out, weights, capsys):
    code = main(["restore", str(clip), "-o", str(out), "--weights", str(weights), "--detector", "dlib",
                 "--no-progress", "--device", "cpu", "--mask", "square", "--window", "3"])
    return code, capsys.readouterr().out


def _levels(plane):
    """Distinct luma levels along the ramp (the band's middle row, away from the chroma edge below it)."""
    return len(np.unique(plane[BAND // 2]))


@pytest.mark.parametrize("path", ["opencv", "device"])
def test_ten_bit_pq_round_trip_keeps_depth_tags_and_levels(tmp_path, pq_clip, weights, capsys, monkeypatch, path):
    if path == "device":   # the GPU compose path, on CPU tensors (tests/test_device_path.py)
        monkeypatch.setenv("KEEP_DEVICE_PATH", "force")
    with open_source(pq_clip) as source:
        assert source.info.bit_depth == 10 and source.info.hdr10 == HDR10
        frame = next(iter(source))
        assert frame.deep.dtype == np.uint16 and frame.image.dtype == np.uint8
    _, _, before = _decode(pq_clip)
    assert _levels(before[0]) >= 45
    code, summary = _restore(pq_clip, tmp_path / "out", weights, capsys)
    assert code == 0
    assert "output: 10-bit H.264 High 10 (yuv420p10le), HDR tags of the input kept (PQ" in summary
    assert "and its HDR10 metadata (mastering display 1000/0.005 cd/m2, MaxCLL 1000, MaxFALL 400)" in summary
    assert "1 track" in summary
    pix_fmt, tags, after = _decode(tmp_path / "out" / "pq.mp4")
    assert pix_fmt == "yuv420p10le" and tags == PQ_TAGS and len(after) == 3
    assert _hdr10_of(tmp_path / "out" / "pq.mp4") == HDR10       # players tone-map it as the input
    for a, b in zip(before, after):
        assert _levels(b) >= _levels(a) - 2                       # 8 bits would leave about a quarter
        # the untouched band, up to the codec (its 16-row blocks next to the face row excluded)
        assert np.abs(a[:BAND - 16] - b[:BAND - 16]).max() <= 2
        assert np.abs(a - b).mean() > 0.5                         # and a face was pasted below it


def test_without_a_ten_bit_encoder_hdr_becomes_sdr_and_says_so(tmp_path, pq_clip, weights, capsys, monkeypatch):
    monkeypatch.setattr(writer_module, "deep_encoder", lambda: None)
    code, summary = _restore(pq_clip, tmp_path / "out", weights, capsys)
    assert code == 0 and "converted to SDR BT.709" in summary and "output: 8-bit H.264" in summary
    pix_fmt, tags, after = _decode(tmp_path / "out" / "pq.mp4")
    assert pix_fmt == "yuv420p" and tags == {"colorspace": 1, "color_primaries": 1, "color_trc": 1}
    assert _hdr10_of(tmp_path / "out" / "pq.mp4") is None            # SDR now: no HDR10 metadata


def test_hdr10_parameters_use_the_sei_units_and_skip_absent_parts():
    assert HDR10.x264_params() == f"mastering-display={MASTERING}:cll=1000,400"
    assert HDR10.x265_params() == f"master-display={MASTERING}:max-cll=1000,400"
    assert Hdr10(max_cll=500, max_fall=100).x264_params() == "cll=500,100"


def test_pq_to_sdr_reference_points():
    # ST 2084: signal 0.5081 is 100 cd/m2, 1.0 is 10000 cd/m2
    assert abs(pq_to_nits(np.array(0.50807842)) - 100) < 0.1 and abs(pq_to_nits(np.array(1.0)) - 10000) < 1e-3
    gray = np.array([[[0.0, 0.0, 0.0], [0.58, 0.58, 0.58], [1.0, 1.0, 1.0]]]) * 65535
    sdr = hdr_to_sdr(gray.astype(np.uint16), 16)
    assert sdr[0, 0].tolist() == [0, 0, 0] and sdr[0, 2].tolist() == [255, 255, 255]
    assert (np.diff(sdr[0, :, 0].astype(int)) > 0).all() and sdr[0, 1, 0] == sdr[0, 1, 1] == sdr[0, 1, 2]


def test_live_tone_maps_hdr_to_the_sdr_it_writes(tmp_path, pq_clip, weights, capsys):
    """keep live writes 8-bit SDR: a PQ input is converted (keep/io/hdr.py) and the summary says so;
    the ramp far from the face comes out as the SDR of the input's ramp, not as its raw PQ levels."""
    out = tmp_path / "live.mp4"
    assert main(["live", str(pq_clip), "-o", str(out), "--weights", str(weights), "--detector", "dlib",
                 "--mask", "square", "--device", "cpu", "--no-progress", "--when-behind", "wait", "--crf", "4"]) == 0
    assert "PQ (SMPTE ST 2084) HDR input converted to SDR BT.709" in capsys.readouterr().out
    with av.open(str(pq_clip)) as container:
        deep = next(container.decode(video=0)).reformat(format="rgb48le").to_ndarray()
    with av.open(str(out)) as container:
        context = container.streams.video[0].codec_context
        assert {k: int(getattr(context, k)) for k in PQ_TAGS} == {"colorspace": 1, "color_primaries": 1, "color_trc": 1}
        written = next(container.decode(video=0)).to_ndarray(format="rgb24")
    band = slice(8, BAND - 16)
    expected = hdr_to_sdr(deep, 16)[band].astype(int)
    raw = (deep[band] / 257).astype(int)
    assert np.abs(written[band].astype(int) - expected).mean() < 3
    assert np.abs(written[band].astype(int) - raw).mean() > 6      # the untouched PQ levels: 3-14 off


def test_live_keeps_the_inputs_colour_tags_and_matrix(tmp_path, weights, capsys):
    """A BT.709-tagged clip through keep live: the output carries the same tags and is converted with
    the same matrix (keep restore's rule), so the untouched band decodes to the input's colours. The
    earlier sink wrote untagged BT.601, which an HD player reads as BT.709: a colour shift."""
    faces = frames_of("real_1.mp4", 3, start=40)
    h, w = faces[0].shape[:2]
    band = np.zeros((BAND, w, 3), np.uint8)
    band[..., 0], band[..., 1], band[..., 2] = 200, 60, np.linspace(20, 230, w)[None, :]   # saturated colours
    clip = tmp_path / "bt709.mp4"
    tags = {"colorspace": 1, "color_primaries": 1, "color_trc": 1}
    _encode_tagged(clip, [np.concatenate([band, face]) for face in faces], tags)
    out = tmp_path / "live.mp4"
    assert main(["live", str(clip), "-o", str(out), "--weights", str(weights), "--detector", "dlib",
                 "--mask", "square", "--device", "cpu", "--no-progress", "--when-behind", "wait", "--crf", "4"]) == 0
    with av.open(str(out)) as container:
        context = container.streams.video[0].codec_context
        assert {k: int(getattr(context, k)) for k in tags} == tags
        written = next(container.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(clip)) as container:
        original = next(container.decode(video=0)).to_ndarray(format="rgb24")
    rows = slice(8, BAND - 16)
    assert np.abs(written[rows].astype(int) - original[rows]).mean() < 2
