"""Identity similarity (IDS, σ_IDS) between restored and ground-truth frames.

IDS of a frame = cosine similarity of the identity embeddings of the restored and the GT frame; the
clip's IDS is the mean over frames and σ_IDS the standard deviation over frames (population, ddof 0);
tables average both over clips (the paper prints σ_IDS ×10⁻²).

Backends:
* ``arcface`` (the paper's): ArcFace ResNet-18 of GFPGAN (``arcface-resnet18`` in the weights
  registry): grayscale (0.2989 R + 0.5870 G + 0.1140 B) in [-1, 1], the whole aligned frame resized
  bilinearly to 128×128, 512-d embedding.
* ``dlib`` (offline substitute, labelled ``ids_dlib``): dlib's 128-d face recognition ResNet
  (``dlib_face_recognition_resnet_model_v1.dat``) on the 5-point-aligned 150×150 chip that dlib cuts
  inside the GT frame's face box. Its similarities are not comparable with ArcFace numbers.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from keep.metrics.dlib_face import FrameCache, face_box, model_file, shape_predictor
from keep.metrics.errors import MetricUnavailable
from keep.registry import METRICS
from keep.weights import WeightsNotFoundError, get_weight


class IRBlock(nn.Module):
    """ArcFace "improved residual" block: BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN, + shortcut,
    then the same PReLU. (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + shortcut)


class ArcFaceResNet18(nn.Module):
    """ArcFace ResNet-18 (IR blocks, no SE) with GFPGAN's state-dict key names.

    Input (B, 1, 128, 128) grayscale in [-1, 1]; output (B, 512) embedding (not normalised).
    """

    def __init__(self, layers=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        widths, in_ch = (64, 128, 256, 512), 64
        for i, (width, n) in enumerate(zip(widths, layers)):
            blocks = [IRBlock(in_ch, width, 1 if i == 0 else 2)] + [IRBlock(width, width) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = width
        self.bn4 = nn.BatchNorm2d(512)
        self.fc5 = nn.Linear(512 * 8 * 8, 512)   # 128 / 2 (pool) / 8 (three stride-2 stages) = 8
        self.bn5 = nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.bn5(self.fc5(self.bn4(x).flatten(1)))   # dropout of the original is off in eval


def load_arcface(path) -> ArcFaceResNet18:
    """Build the network and load GFPGAN's ``arcface_resnet18.pth`` (a raw state dict, possibly saved
    from a DataParallel wrapper or under ``params``), strictly, in eval mode."""
    from keep.torch_file import load_torch_file
    state = load_torch_file(path)
    if isinstance(state, dict) and "params" in state:
        state = state["params"]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    net = ArcFaceResNet18()
    net.load_state_dict(state, strict=True)
    return net.eval()


def arcface_input(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 1, 128, 128) float32 gray in [-1, 1] (GFPGAN's identity input)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    gray = 0.2989 * x[:, 0:1] + 0.5870 * x[:, 1:2] + 0.1140 * x[:, 2:3]
    return F.interpolate(gray, size=(128, 128), mode="bilinear", align_corners=False)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (T, D) arrays -> (T,)."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


@lru_cache(maxsize=None)
def _dlib_recognizer():
    import dlib
    return dlib.face_recognition_model_v1(str(model_file("dlib_face_recognition_resnet_model_v1.dat")))


def dlib_embeddings(frames: np.ndarray, boxes) -> np.ndarray:
    """128-d dlib descriptors of (T, H, W, 3) uint8 RGB frames, one face box per frame -> (T, 128)."""
    sp5 = shape_predictor("shape_predictor_5_face_landmarks.dat")
    rec = _dlib_recognizer()
    out = []
    for frame, box in zip(frames, boxes):
        frame = np.ascontiguousarray(frame)
        out.append(np.array(rec.compute_face_descriptor(frame, sp5(frame, box))))
    return np.stack(out)


@METRICS.register("ids")
class IdentitySimilarity:
    """Per-frame IDS of a clip: (T, H, W, 3) uint8 x2 -> (T,) cosine similarities in [-1, 1].

    backend: ``arcface`` (paper; MetricUnavailable when its weights are absent), ``dlib`` (offline
    substitute) or ``auto`` (ArcFace if its weights are on disk, else dlib, labelled ``ids_dlib``).
    """

    name = "ids"
    higher_is_better = True

    def __init__(self, backend: str = "auto", device: str = "cpu", batch_size: int = 16):
        if backend not in ("auto", "arcface", "dlib"):
            raise ValueError(f"unknown IDS backend '{backend}'; use auto, arcface or dlib")
        self.net = None
        if backend in ("auto", "arcface"):
            try:
                self.net = load_arcface(get_weight("arcface-resnet18", download=False)).to(device)
            except WeightsNotFoundError as err:
                if backend == "arcface":
                    raise MetricUnavailable(f"IDS (ArcFace): {err}") from err
        if self.net is None:
            model_file("dlib_face_recognition_resnet_model_v1.dat")   # fail early if dlib's file is absent
        self.backend = "arcface" if self.net is not None else "dlib"
        self.device, self.batch_size = device, batch_size
        self._gt_cache = FrameCache()
        # the network in the column name: ArcFace and dlib similarities are on different scales
        self.label = "ids_arcface_r18" if self.backend == "arcface" else "ids_dlib"
        self.backbone = ("ArcFace ResNet-18 (GFPGAN arcface_resnet18.pth)" if self.backend == "arcface"
                         else "dlib ResNet-29 face descriptor")
        self.convention = ("ArcFace ResNet-18, gray 128x128, cosine" if self.backend == "arcface" else
                           "dlib 128-d face descriptor (OFFLINE SUBSTITUTE for ArcFace), cosine")

    @torch.no_grad()
    def embed(self, frames: np.ndarray, boxes=None) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB -> (T, D) embeddings (boxes used by the dlib backend only)."""
        if self.backend == "dlib":
            return dlib_embeddings(frames, boxes)
        chunks = [self.net(arcface_input(frames[i:i + self.batch_size]).to(self.device)).double().cpu().numpy()
                  for i in range(0, len(frames), self.batch_size)]
        return np.concatenate(chunks)

    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        boxes = [face_box(g) for g in gt] if self.backend == "dlib" else None
        # GT embeddings are the same for every method compared: computed once per GT frame
        gt_embeddings = [self._gt_cache.lookup(g) for g in gt]
        missing = [i for i, e in enumerate(gt_embeddings) if e is None]
        if missing:
            fresh = self.embed(gt[missing], None if boxes is None else [boxes[i] for i in missing])
            for i, e in zip(missing, fresh):
                self._gt_cache.put(gt[i], e)
                gt_embeddings[i] = e
        return cosine(self.embed(pred, boxes), np.stack(gt_embeddings))
