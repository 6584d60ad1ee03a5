"""Memory flat in the number of faces and the frame size (issue 21 item 4).

* a batch cap: at most ``max_batch`` faces per network call (default from the device's free memory),
  the same numbers as one call for all;
* device crops read only the region around each face (keep/restore/device_geometry.py: crop_region),
  with the same pixels as sampling the whole frame.

Peak-memory figures are measured by scripts/benchmark_memory.py (a benchmark, not a timed test).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import keep
from keep.cli import main
from keep.face.align import BORDER_RGB, warp_face
from keep.restore import batching, device_geometry
from keep.restore.batching import BatchRestorer, default_max_batch

pytestmark = pytest.mark.usefixtures("one_thread")


class Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.img_size, self.batches = net, net.img_size, []

    def restore_window(self, x, state=None, **kwargs):
        self.batches.append(x.shape[0])
        return self.net.restore_window(x, state=state, **kwargs)


def test_batch_cap_splits_calls_and_keeps_the_numbers():
    torch.manual_seed(0)
    net = keep.create_model("keep-tiny", img_size=64).eval()
    rng = np.random.default_rng(0)
    clips = {t: [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)] for t in range(5)}
    results = {}
    for cap in (None, 2):
        counting = Counting(net)
        restorer = BatchRestorer(counting, torch.device("cpu"), max_batch=cap)
        out = [restorer.restore_many([(t, c[lo:lo + 2]) for t, c in clips.items()]) for lo in (0, 2)]
        results[cap] = out, counting.batches
    (uncapped, calls_all), (capped, calls_capped) = results[None], results[2]
    assert calls_all == [5, 5] and calls_capped == [2, 2, 1, 2, 2, 1]
    for a, b in zip(uncapped, capped):
        diff = np.abs(np.stack([np.stack(f) for f in a]).astype(int) - np.stack([np.stack(f) for f in b]).astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.05     # batch items are independent up to summation order
    with pytest.raises(ValueError, match="at least 1"):
        BatchRestorer(net, torch.device("cpu"), max_batch=0)


def test_default_batch_cap_follows_free_memory(monkeypatch):
    gib = 2 ** 30
    for free, expected in ((8 * gib, 4), (64 * gib, 16), (1 * gib, 1), (None, 4)):
        monkeypatch.setattr(batching, "available_memory", lambda device, free=free: free)
        assert default_max_batch(torch.device("cpu"), 512, 20) == expected, free
    monkeypatch.setattr(batching, "available_memory", lambda device: 8 * gib)
    assert default_max_batch(torch.device("cpu"), 256, 20) == 16    # a quarter of the pixels per face


def test_max_batch_option_is_checked(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["restore", "x.mp4", "-o", "out", "--max-batch", "0"])
    assert exit_.value.code == 2 and "--max-batch" in capsys.readouterr().err


def _whole_frame_crops(frames, matrices, size):
    """The former device crop: every frame stacked whole as float32, then one grid_sample."""
    x = torch.stack(list(frames)).permute(0, 3, 1, 2).float()
    warped = device_geometry.warp_affine(torch.cat([x, torch.ones_like(x[:, :1])], 1), matrices, (size, size))
    border = torch.tensor(BORDER_RGB, dtype=torch.float32).view(1, 3, 1, 1)
    crops = warped[:, :3] + (1 - warped[:, 3:]) * border
    return crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def test_device_crops_read_only_the_region_around_each_face():
    rng = np.random.default_rng(1)
    frame = F.interpolate(torch.from_numpy(rng.integers(0, 256, (1, 3, 90, 160)).astype(np.float32)),
                          size=(360, 640), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    frame = frame.round().clamp(0, 255).to(torch.uint8)
    size = 128

    def matrix(scale, angle, cx, cy):
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        return np.array([[c, -s, size / 2 - (c * cx - s * cy)], [s, c, size / 2 - (s * cx + c * cy)]])
    matrices = [matrix(0.8, 0.2, 300, 180),    # inside
                matrix(1.1, -0.4, 20, 350),    # cut by two frame edges
                matrix(0.5, 0.0, 630, 10),     # mostly outside
                matrix(1.0, 0.0, -500, -500)]  # entirely outside: all border
    frames = [frame] * len(matrices)
    ours = device_geometry.crop_faces(frames, matrices, size).numpy()
    whole = _whole_frame_crops(frames, matrices, size).numpy()
    diff = np.abs(ours.astype(int) - whole.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    assert (ours[3] == np.array(BORDER_RGB, np.uint8)).all()
    for crop, m in zip(ours, matrices):   # and the OpenCV crop, as tests/test_pipeline.py
        assert np.abs(crop.astype(int) - warp_face(frame.numpy(), m, size).astype(int)).max() <= 2
    x0, y0, x1, y1 = device_geometry.crop_region(matrices[0], size, (360, 640))
    assert (x1 - x0) * (y1 - y0) < 0.2 * 360 * 640   # the inside face reads a small part of the frame


def test_stage_queues_are_bounded_in_bytes(tmp_path, monkeypatch):
    """Frames queued for paste-back and decoded ahead: at most HOST_QUEUE_BYTES, same output."""
    from keep.io.samples import write_sample_clip
    from keep.restore import pipeline
    from keep.restore.options import RestoreOptions
    from tiny_models import random_tiny_checkpoint

    rng = np.random.default_rng(2)
    clip = write_sample_clip([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(6)],
                             tmp_path / "clip.mp4", tone_hz=None)
    weights = random_tiny_checkpoint(tmp_path / "tiny.pth", 64)
    sizes = {}
    stage = pipeline.Stage

    def recording(name, handle, maxsize, **kwargs):
        sizes[name] = maxsize
        return stage(name, handle, maxsize, **kwargs)
    monkeypatch.setattr(pipeline, "Stage", recording)
    outputs = {}
    for budget in (2 ** 30, 3 * 64 * 64 * 3):      # roomy, then room for three 64x64 frames
        monkeypatch.setattr(pipeline, "HOST_QUEUE_BYTES", budget)
        out = tmp_path / str(budget)
        pipeline.VideoRestorer(RestoreOptions(output_dir=out, weights=str(weights), aligned=True, window=4,
                                              progress=False, device="cpu", overlap=True,
                                              save_faces=True)).run(clip)
        outputs[budget] = sizes["paste-back and encoding"], [p.read_bytes() for p in
                                                              sorted((out / "clip" / "restored_faces").glob("*.png"))]
    (roomy, faces_roomy), (tight, faces_tight) = outputs[2 ** 30], outputs[3 * 64 * 64 * 3]
    assert roomy == 8 and tight == 3           # 2 * window, then the byte budget
    assert len(faces_roomy) == 6 and faces_roomy == faces_tight
