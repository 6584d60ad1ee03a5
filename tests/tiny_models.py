"""Tiny KEEP checkpoints for behaviour tests (no shared material needed)."""
import torch

from keep.api import CONFIGS, create_model
from keep.checkpoint import save_inference_checkpoint


def random_tiny_checkpoint(path, size: int):
    """keep-tiny at ``size`` px with seeded random weights, saved as a self-describing checkpoint."""
    torch.manual_seed(0)
    net = create_model("keep-tiny", img_size=size)
    return save_inference_checkpoint(net, path, {"type": "KEEP", **CONFIGS["keep-tiny"], "img_size": size})
