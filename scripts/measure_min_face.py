"""How small a face can be restored: dlib's five points on frames of the shared clips scaled down,
against the points found at full size (error in eye distances), per crop side (the side, in source
pixels, of the square the aligned 512 crop covers). Chooses the default of --min-face.

    PYTHONPATH=$PWD python scripts/measure_min_face.py
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import shot_clips as sc  # noqa: E402

from keep.face.align import align_matrix  # noqa: E402
from keep.face.detect import make_detector  # noqa: E402
from keep.face.tracks import crop_side  # noqa: E402

det = make_detector("dlib", torch.device("cpu"))
frames = [f for name in ('real_1', 'real_2') for f in sc.source(name)[0:200:10]]
refs = []
for f in frames:
    d = det.detect(f)
    refs.append(d[0].landmarks.reshape(5, 2) if d else None)
for scale in (1/3, 1/4, 1/5, 1/6, 1/7, 1/8, 1/10):
    errs, sides, found, n = [], [], 0, 0
    for f, ref in zip(frames, refs):
        if ref is None: continue
        n += 1
        small = cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        d = det.detect(small)
        side = crop_side(align_matrix(ref * scale))
        sides.append(side)
        if not d: continue
        found += 1
        lm = d[0].landmarks.reshape(5, 2) / scale
        eye = np.linalg.norm(ref[0] - ref[1])
        errs.append(np.abs(lm - ref).max() / eye)
    print(f"scale 1/{1/scale:.0f}: crop side {np.median(sides):.0f} px, detected {found}/{n}, "
          f"max landmark error / eye distance: median {np.median(errs) if errs else float('nan'):.3f} "
          f"p90 {np.percentile(errs, 90) if errs else float('nan'):.3f}")
