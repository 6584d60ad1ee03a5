"""Face parsing mask for paste-back (facexlib's ParseNet with the release's label choice)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from keep.weights import get_weight

# The release's MASK_COLORMAP: ParseNet's 19 labels kept (255) or dropped (0). Dropped: 0 (background),
# 14, 16, 17, 18 (neck / cloth / hat region in facexlib's label order; the release's choice, copied).
MASK_COLORMAP = (0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0)
_KEEP_LABEL = np.array(MASK_COLORMAP, dtype=np.float32)
# The release parses every restored face at 512 (``cv2.resize(restored_face, (512, 512), INTER_LINEAR)``
# before ParseNet, whatever the face size); the 101x101 blurs and the 10 px frame are sized for it.
PARSE_SIZE = 512


def parsenet_input(face: np.ndarray) -> torch.Tensor:
    """(512, 512, 3) uint8 RGB -> (1, 3, 512, 512) float32 in [-1, 1]: the release's ``img2tensor`` of the
    BGR face with ``bgr2rgb=True`` then ``normalize(mean 0.5, std 0.5)`` of /255 values."""
    return torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1).float().div(255.0).sub(0.5).div(0.5)[None]


def load_parsenet(path, device: torch.device = torch.device("cpu")):
    """``parsing_parsenet.pth`` (a raw state dict) into facexlib's ParseNet(512, 512, 19), strict, eval."""
    from facexlib.parsing.parsenet import ParseNet
    from keep.checkpoint import load_checkpoint, load_state_dict_into
    state, _ = load_checkpoint(path)
    net = ParseNet(in_size=512, out_size=512, parsing_ch=19)
    load_state_dict_into(net, state, source=str(path))
    return net.eval().to(device)


class ParseMasker:
    """(n, n, 3) uint8 RGB restored face -> (512, 512) float32 mask in [0, 1]: a face of another size is
    resized to 512 first (INTER_LINEAR, as the release); callers resize the mask to their crop size."""

    def __init__(self, device: torch.device, download: bool = True, net=None):
        if net is None:
            net = load_parsenet(get_weight("parsenet", download=download), device)
        self._net = net.eval().to(device)
        self.device = device

    @torch.no_grad()
    def labels(self, face: np.ndarray) -> np.ndarray:
        """(512, 512) int64 ParseNet label per pixel (argmax of its segmentation output)."""
        if face.shape[:2] != (PARSE_SIZE, PARSE_SIZE):
            face = cv2.resize(face, (PARSE_SIZE, PARSE_SIZE), interpolation=cv2.INTER_LINEAR)
        return self._net(parsenet_input(face).to(self.device))[0].argmax(dim=1).squeeze(0).cpu().numpy()

    @torch.no_grad()
    def __call__(self, face: np.ndarray) -> np.ndarray:
        labels = self.labels(face)
        mask = _KEEP_LABEL[labels]
        # Two wide blurs and a zeroed 10 px frame, as the release, so the mask fades out inside the crop.
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        mask = cv2.GaussianBlur(mask, (101, 101), 11)
        mask[:10, :] = 0
        mask[-10:, :] = 0
        mask[:, :10] = 0
        mask[:, -10:] = 0
        return np.clip(mask / 255.0, 0.0, 1.0)  # the blurs can overshoot 255 by float rounding
