"""Library entry points: named network configurations, ``create_model`` and ``load_model``.

>>> import torch, keep
>>> net = keep.load_model()                      # KEEP v1.0.0 general (downloads on first use)
>>> clip = torch.rand(1, 5, 3, 512, 512) * 2 - 1  # (B, T, 3, 512, 512) aligned faces in [-1, 1]
>>> with torch.inference_mode():
...     restored = net(clip).clamp(-1, 1)         # (1, 5, 3, 512, 512)
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from keep.archs.keep_net import KEEP
from keep.checkpoint import load_checkpoint, load_state_dict_into
from keep.registry import ARCHS

#: The released configuration as the official ``inference_keep.py`` builds it (the key manifest's
#: ``config``). ``flownet_path`` is accepted and must be None: the flow weights live in the checkpoint.
RELEASED_CONFIG: Dict[str, Any] = {
    "img_size": 512, "emb_dim": 256, "dim_embd": 512, "n_head": 8, "n_layers": 9, "codebook_size": 1024,
    "connect_list": ["16", "32", "64"], "flow_type": "gmflow", "flownet_path": None,
    "kalman_attn_head_dim": 48, "num_uncertainty_layers": 3, "cross_fuse_list": ["16", "32"],
    "cross_fuse_nhead": 4, "cross_fuse_dim": 256,
}


def official_kwargs(config: Dict[str, Any]) -> Dict[str, Any]:
    """Constructor arguments of the official ``KEEP`` class -> ours (drops ``flownet_path``, which
    must be None: our network never reads files)."""
    kwargs = dict(config)
    if kwargs.pop("flownet_path", None) is not None:
        raise ValueError("flownet_path is not supported: the flow weights are part of the KEEP checkpoint")
    return kwargs


#: Named configurations: keyword arguments of :class:`keep.archs.keep_net.KEEP`.
CONFIGS: Dict[str, Dict[str, Any]] = {
    "keep-v1": official_kwargs(RELEASED_CONFIG),
    # Same structure (6 levels, 512x512 input, 16x16 latent, CFT 16/32/64, CFA 16/32, 3 uncertainty
    # blocks, GMFlow), tiny widths: fast enough on CPU for pipeline and training tests.
    "keep-tiny": {
        "nf": 4, "emb_dim": 16, "codebook_size": 32, "dim_embd": 32, "n_head": 2, "n_layers": 1,
        "cross_fuse_nhead": 2, "cross_fuse_dim": 8, "kalman_attn_heads": 2, "kalman_attn_head_dim": 8,
        "flow_kwargs": {"feature_channels": 16, "num_transformer_layers": 1, "ffn_dim_expansion": 1,
                        "backbone_channels": [8, 12, 16], "upsampler_channels": 16},
    },
}


def create_model(name: str = "keep-v1", **overrides: Any) -> KEEP:
    """Build the named configuration (``"keep-v1"``, ``"keep-tiny"``) with optional keyword overrides,
    in eval mode, weights freshly initialised."""
    if name not in CONFIGS:
        raise KeyError(f"unknown model configuration '{name}'; known: {', '.join(sorted(CONFIGS))}")
    kwargs = copy.deepcopy(CONFIGS[name])
    kwargs.update(overrides)
    return KEEP(**kwargs).eval()


def load_model(weights: Union[str, Path, None] = None, device: Union[str, torch.device] = "cpu",
               name: Optional[str] = None, download: bool = True,
               channels_last: Optional[bool] = None) -> KEEP:
    """Build a network and load a checkpoint into it (strictly), in eval mode on ``device``.

    weights: a file path, or a name in :data:`keep.weights.WEIGHTS` (``"keep-v1"`` general v1.0.0,
    ``"keep-v1-asian"``, ``"keep-v0.1"``); None = ``"keep-v1"``. Any layout that
    :func:`keep.checkpoint.load_checkpoint` reads works. A file that describes its own arch builds that
    arch; otherwise ``name`` (default ``"keep-v1"``) picks the configuration. ``channels_last``
    (default: on CPU only, where it is faster) calls :meth:`KEEP.channels_last_`.
    """
    from keep.weights import WEIGHTS, get_weight

    if weights is None:
        weights = "keep-v1"
    if isinstance(weights, str) and weights in WEIGHTS and not Path(weights).is_file():
        path = get_weight(weights, download=download)
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} (give a file path or one of "
                                    f"{', '.join(sorted(WEIGHTS))})")
    state_dict, arch = load_checkpoint(path)
    if arch is not None:
        model = ARCHS.build(arch)
    else:
        model = create_model(name or "keep-v1")
    load_state_dict_into(model, state_dict, source=str(path))
    model = model.to(device).eval()
    supported = hasattr(model, "channels_last_")
    if channels_last and not supported:
        raise ValueError(f"channels_last is not supported by {type(model).__name__}")
    if channels_last or (channels_last is None and supported and torch.device(device).type == "cpu"):
        model.channels_last_()
    return model
