"""Several tracks through the network in one call: their windows stacked on the batch axis.

``KEEP.restore_window`` treats batch items independently (tests/test_streaming.py checks it), so
the windows of several faces that are due at the same frame can share one call: one launch of
every kernel for B faces instead of B launches, which is what pays on a GPU (the per-frame loop
of the Kalman recurrence is launch-bound for one face). Their Kalman states are stacked on the
batch axis before the call and split after it, every field carried (``KalmanState.stack`` /
``split``: a causal model's key/value cache too). States whose causal caches differ in length (a
track younger than the attention span) cannot share a call: they go in separate calls.

Crops may be numpy arrays (the OpenCV geometry) or uint8 tensors already on the network's device
(keep.restore.device_geometry); restored faces come back in the same kind.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from keep.archs.keep_net import KalmanState
from keep.restore.restorer import FaceRestorer, faces_to_tensor, tensor_to_faces

Crop = Union[np.ndarray, torch.Tensor]


def crops_to_tensor(crops: List[Crop], device: torch.device) -> torch.Tensor:
    """T crops -> (1, T, 3, n, n) network input; numpy crops go through :func:`faces_to_tensor`."""
    if not torch.is_tensor(crops[0]):
        return faces_to_tensor(crops, device)
    # the same (x/255 - 0.5)/0.5 mapping as faces_to_tensor, on crops already on the device
    return torch.stack(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).unsqueeze(0)


def tensor_to_crops(frames: torch.Tensor, on_device: bool) -> List[Crop]:
    """(1, T, 3, n, n) -> T restored faces: numpy (:func:`tensor_to_faces`) or uint8 tensors on the device."""
    if not on_device:
        return tensor_to_faces(frames)
    images = frames[0].float().clamp(-1, 1).add(1).mul(127.5).round().byte()  # as tensor_to_faces
    return list(images.permute(0, 2, 3, 1))


# Network memory per face in a call, measured at 512 px with a 20-frame window (issue 21: 2.1 / 3.2 /
# 5.0 GiB for 1 / 2 / 4 faces, i.e. about 0.95 GiB per face); it scales with pixels and frames.
BYTES_PER_FACE_512 = int(0.95 * 2 ** 30)
MAX_BATCH_LIMIT = 16    # beyond this one launch per kernel is already amortised


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes free for the network on ``device``: CUDA's free memory, the host's MemAvailable for the
    CPU; None where unknown (MPS)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as info:
                for line in info:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def default_max_batch(device: torch.device, size: int, window: int) -> int:
    """Faces per network call so that the call uses at most half of the free memory (at least 1)."""
    free = available_memory(device)
    if free is None:
        return 4
    per_face = BYTES_PER_FACE_512 * (size / 512) ** 2 * max(window, 1) / 20
    return int(max(1, min(MAX_BATCH_LIMIT, free // 2 // max(per_face, 1))))


class BatchRestorer(FaceRestorer):
    """:class:`FaceRestorer` that also restores the windows of several tracks in one network call.

    ``max_batch`` caps the faces of one call (the network's memory grows with them); more due windows
    go in several calls, which gives the same numbers (batch items are independent)."""

    def __init__(self, *args, max_batch: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, got {max_batch}")
        self.max_batch = max_batch
        self._seen = {}   # track -> frames restored (the stacked state's frames_seen is not per item)

    @torch.inference_mode()
    def restore_many(self, windows: Sequence[Tuple[int, List[Crop]]]) -> List[List[Crop]]:
        """[(track, T crops)] with one T and all states fresh or all carried -> restored crops per track.

        One track is exactly :meth:`FaceRestorer.restore` (same call, same numbers)."""
        on_device = torch.is_tensor(windows[0][1][0])
        lengths = {len(crops) for _, crops in windows}
        if len(lengths) != 1:
            raise ValueError(f"windows batched together must have one length, got {sorted(lengths)}")
        states = [None if self.reset_state else self._states.get(track) for track, _ in windows]
        if len({s is None for s in states}) != 1:
            raise ValueError("windows batched together must all start fresh or all carry a state")
        length = lengths.pop()
        if len(windows) == 1 and not on_device:
            track, crops = windows[0]
            out = [self.restore(track, crops)]
        else:
            out = [None] * len(windows)
            # one call per causal-cache length (one call in every other case)
            groups = {}
            for item, state in enumerate(states):
                groups.setdefault(None if state is None else state.batch_signature(), []).append(item)
            cap = self.max_batch or len(windows)
            chunks = [items[i:i + cap] for items in groups.values() for i in range(0, len(items), cap)]
            for items in chunks:
                for item, crops in zip(items, self._restore_stacked([windows[i] for i in items],
                                                                    [states[i] for i in items], length, on_device)):
                    out[item] = crops
        for track, _ in windows:
            self._seen[track] = self._seen.get(track, 0) + length
        return out

    def _restore_stacked(self, windows, states, length: int, on_device: bool) -> List[List[Crop]]:
        x = torch.cat([crops_to_tensor(crops, self.device) for _, crops in windows], dim=0)
        state: Optional[KalmanState] = None if states[0] is None else KalmanState.stack(states)
        with self._autocast():
            frames, state = self.net.restore_window(x, state=state, propagate=self.propagate)
        seen = [self._seen.get(track, 0) + length for track, _ in windows]
        items = [None] * len(windows) if state is None else state.split(seen)
        out = []
        for item, (track, _) in enumerate(windows):
            self._states[track] = items[item]
            out.append(tensor_to_crops(frames[item:item + 1], on_device))
        return out

    def end_track(self, track: int) -> None:
        super().end_track(track)
        self._seen.pop(track, None)
