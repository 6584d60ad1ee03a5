"""LPIPS (Zhang et al. 2018) through the ``lpips`` package.

Convention: backbone **AlexNet** (``net='alex'``, the package's default and the variant most face
restoration papers report; ``vgg`` is available), named in the column (``lpips_alex``, ``lpips_vgg``:
the two backbones give scores on different scales), linear layers v0.1 shipped with the package, frames
RGB mapped from 0–255 to [-1, 1], full 512×512 frames, no crop, spatial average. Lower is better.

The linear layers come with the package, but the ImageNet backbone is fetched by torchvision into the
torch hub cache on first use. Offline and absent, the metric raises :class:`MetricUnavailable`
naming the file and the folder instead of trying a download.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from keep.metrics.errors import MetricUnavailable
from keep.registry import METRICS

# backbone -> torchvision weights enum name holding the URL and file name that lpips will load
_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}
REGISTRY_NAMES = {"alex": "lpips-alexnet", "vgg": "lpips-vgg16"}   # their entries in keep.weights


def backbone_file(net: str) -> tuple[str, Path]:
    """(download URL, local path in the torch hub cache) of the ImageNet backbone that ``net`` needs."""
    import torchvision
    if net not in _BACKBONES:
        raise ValueError(f"unknown LPIPS backbone '{net}'; use one of {sorted(_BACKBONES)}")
    url = getattr(torchvision.models, _BACKBONES[net]).IMAGENET1K_V1.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def to_lpips_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB on 0–255 -> (T, 3, H, W) float32 in [-1, 1], as ``lpips.im2tensor``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


@METRICS.register("lpips")
class LPIPSMetric:
    """Per-frame LPIPS of a clip: (T, H, W, 3) uint8 x2 -> (T,) float64."""

    name = "lpips"
    higher_is_better = False

    def __init__(self, net: str = "alex", device: str = "cpu", batch_size: int = 4):
        import lpips
        url, path = backbone_file(net)
        if not path.is_file():
            raise MetricUnavailable(
                f"LPIPS ({net}) needs torchvision's ImageNet backbone {path.name}, absent offline: run `keep "
                f"download {REGISTRY_NAMES[net]}`, or download {url} and put it at {path} (the torch hub cache, "
                f"torch.hub.get_dir())")
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a banner
            self.model = lpips.LPIPS(net=net, verbose=False).eval().to(device)
        self.device, self.batch_size = device, batch_size
        self.label = f"lpips_{net}"     # the backbone in the column: Alex and VGG scores differ in scale
        self.backbone = {"alex": "AlexNet", "vgg": "VGG-16"}[net]
        self.convention = f"{net} backbone, v0.1 linear layers, RGB in [-1, 1], full frame"

    @torch.no_grad()
    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(pred), self.batch_size):
            p = to_lpips_tensor(pred[i:i + self.batch_size]).to(self.device)
            g = to_lpips_tensor(gt[i:i + self.batch_size]).to(self.device)
            out.append(self.model(p, g).flatten().double().cpu().numpy())
        return np.concatenate(out)
