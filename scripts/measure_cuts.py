"""A cut inside a video vs the same shots restored alone: how far the crops and restored faces differ.

``two``: 60 frames of real_1 then 60 of real_2 (faces at about the same place); ``every30``: four
shots of 30 frames, real_1 and real_2 in turn, the second person 143 px to the right (a 505 px wide
frame, edges stretched). A frame folder (lossless), dlib, a tiny random network at 128 px (what is
measured is alignment and state, not the look).
Each shot is also restored alone; per frame, the mean absolute difference (0-255) of the aligned
crop and of the restored face against the shot alone. Run it on any checkout (the figures of
docs/restore.md, "Edited footage", come from the commit before shot boundaries and from this one):

    PYTHONPATH=$PWD python scripts/measure_cuts.py [two|every30]
"""
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from shared_material import VIDEOS  # noqa: E402
from tiny_models import random_tiny_checkpoint  # noqa: E402

from keep.evaluation.clips import write_frames  # noqa: E402
from keep.io import read_frames  # noqa: E402
from keep.restore.options import RestoreOptions  # noqa: E402
from keep.restore.pipeline import VideoRestorer  # noqa: E402

SHOT = 60


def restore(work: Path, weights: Path, frames: np.ndarray, name: str):
    folder = work / "in" / name
    write_frames(frames, folder)
    out = work / "out"
    options = RestoreOptions(output_dir=out, weights=str(weights), detector="dlib", window=20, progress=False,
                             mask="square", save_faces=True, save_cropped=True)
    summary = VideoRestorer(options).run(folder, name=name)
    faces = {}
    for kind in ("cropped_faces", "restored_faces"):
        for path in sorted((out / name / kind).glob("*.png")):
            faces.setdefault(kind, {})[int(path.name[:8])] = cv2.imread(str(path)).astype(np.int32)
    return summary, faces


def shots(pattern: str):
    """[(first frame, frames)] of the clip."""
    a = read_frames(VIDEOS / "real_1.mp4", max_frames=2 * SHOT)[:, :, 13:375]
    b = read_frames(VIDEOS / "real_2.mp4", max_frames=2 * SHOT)
    if pattern == "two":
        return [(0, a[:SHOT]), (SHOT, b[:SHOT])]
    pad = 143
    left = np.pad(a, ((0, 0), (0, 0), (0, pad), (0, 0)), mode="edge")
    right = np.pad(b, ((0, 0), (0, 0), (pad, 0), (0, 0)), mode="edge")
    return [(k * 30, (left if k % 2 == 0 else right)[k * 30:(k + 1) * 30]) for k in range(4)]


def main() -> None:
    torch.set_num_threads(1)
    parts = shots(sys.argv[1] if len(sys.argv) > 1 else "two")
    total = sum(len(frames) for _, frames in parts)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = random_tiny_checkpoint(work / "tiny.pth", 128)
        summary, whole = restore(work, weights, np.concatenate([frames for _, frames in parts]), "whole")
        alone = {}
        for k, (offset, frames) in enumerate(parts):
            _, faces = restore(work, weights, frames, f"shot{k}")
            for kind, found in faces.items():
                for t, face in found.items():
                    alone.setdefault(kind, {})[offset + t] = face
    print(summary.describe(aligned=False))
    for kind in ("cropped_faces", "restored_faces"):
        diffs = []
        for t in range(total):
            if t in whole.get(kind, {}) and t in alone.get(kind, {}):
                diffs.append(float(np.abs(whole[kind][t] - alone[kind][t]).mean()))
            elif (t in whole.get(kind, {})) != (t in alone.get(kind, {})):
                diffs.append(float("inf"))   # a face in one and not the other
            else:
                diffs.append(0.0)
        diffs = np.array(diffs)
        finite = diffs[np.isfinite(diffs)]
        print(f"{kind}: frames differing {int((diffs > 0).sum())} / {total} "
              f"(face missing in one: {int(np.isinf(diffs).sum())}), "
              f"max mean abs difference {finite.max() if finite.size else 0:.1f}, "
              f"frames {[t for t in range(total) if diffs[t] > 0][:3]}...")


if __name__ == "__main__":
    main()
