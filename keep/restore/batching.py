"""Several tracks through the network in one call: their windows stacked on the batch axis.

``KEEP.restore_window`` treats batch items independently (tests/test_streaming.py checks it), so
the windows of several faces that are due at the same frame can share one call: one launch of
every kernel for B faces instead of B launches, which is what pays on a GPU (the per-frame loop
of the Kalman recurrence is launch-bound for one face). Their Kalman states are stacked on the
batch axis before the call and split after it.

Crops may be numpy arrays (the OpenCV geometry) or uint8 tensors already on the network's device
(keep.restore.device_geometry); restored faces come back in the same kind.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from keep.archs.keep_net import KalmanState
from keep.archs.kalman import GainContext
from keep.restore.restorer import FaceRestorer, faces_to_tensor, tensor_to_faces

Crop = Union[np.ndarray, torch.Tensor]


def stack_states(states: Sequence[KalmanState]) -> KalmanState:
    """B states of batch 1 -> one state of batch B (``frames_seen`` is bookkeeping only: set to 0)."""
    cat = lambda tensors: torch.cat(list(tensors), dim=0)  # noqa: E731
    first = states[0]
    return KalmanState(cat(s.prev_input for s in states), cat(s.prev_output for s in states),
                       {k: cat(s.prev_feats[k] for s in states) for k in first.prev_feats},
                       GainContext([cat(s.gain_context.anchor[i] for s in states)
                                    for i in range(len(first.gain_context.anchor))],
                                   [cat(s.gain_context.prev[i] for s in states)
                                    for i in range(len(first.gain_context.prev))]),
                       0)


def split_state(state: KalmanState, item: int, frames_seen: int) -> KalmanState:
    """Batch item ``item`` of a stacked state, as a state of batch 1."""
    take = lambda t: t[item:item + 1]  # noqa: E731
    return KalmanState(take(state.prev_input), take(state.prev_output),
                       {k: take(v) for k, v in state.prev_feats.items()},
                       GainContext([take(a) for a in state.gain_context.anchor],
                                   [take(p) for p in state.gain_context.prev]),
                       frames_seen)


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


class BatchRestorer(FaceRestorer):
    """:class:`FaceRestorer` that also restores the windows of several tracks in one network call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
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
            x = torch.cat([crops_to_tensor(crops, self.device) for _, crops in windows], dim=0)
            state: Optional[KalmanState] = None if states[0] is None else (
                states[0] if len(states) == 1 else stack_states(states))
            with self._autocast():
                frames, state = self.net.restore_window(x, state=state, propagate=self.propagate)
            out = []
            for item, (track, _) in enumerate(windows):
                seen = self._seen.get(track, 0) + length
                self._states[track] = None if state is None else split_state(state, item, seen)
                out.append(tensor_to_crops(frames[item:item + 1], on_device))
        for track, _ in windows:
            self._seen[track] = self._seen.get(track, 0) + length
        return out

    def end_track(self, track: int) -> None:
        super().end_track(track)
        self._seen.pop(track, None)
