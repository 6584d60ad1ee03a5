"""Face parsing mask for paste-back (facexlib's ParseNet with the release's label choice)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from keep.weights import get_weight

# CelebAMask-HQ labels kept (255) or dropped (0): background 0, 14 (neck), 16 (cloth), 17 (hair?)
# and 18 (hat) are dropped as in the release's MASK_COLORMAP.
_KEEP_LABEL = np.array([0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0],
                       dtype=np.float32)


class ParseMasker:
    """(512, 512, 3) uint8 RGB restored face -> (512, 512) float32 mask in [0, 1]."""

    def __init__(self, device: torch.device, download: bool = True):
        path = get_weight("parsenet", download=download)  # before importing facexlib (slow: torchvision)
        from facexlib.parsing.parsenet import ParseNet
        self._net = ParseNet(in_size=512, out_size=512, parsing_ch=19)
        self._net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        self._net.eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, face: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(face).permute(2, 0, 1).float().div(127.5).sub(1.0)[None].to(self.device)
        labels = self._net(x)[0].argmax(dim=1).squeeze(0).cpu().numpy()
        mask = _KEEP_LABEL[labels]
        # Two wide blurs and a zeroed 10 px frame, as the release, so the mask fades out inside the crop.
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        mask[:10, :] = 0
        mask[-10:, :] = 0
        mask[:, :10] = 0
        mask[:, -10:] = 0
        return np.clip(mask / 255.0, 0.0, 1.0)  # the blurs can overshoot 255 by float rounding
