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

from torch import nn

from keep.archs.keep_net import KEEP
from keep.checkpoint import (CheckpointError, StateDict, build_from_spec, build_on_meta, check_fits,
                             load_checkpoint, load_state_dict_into, to_v0_names)

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


#: v1.0.0 constructor argument names (``basicsr/archs/keep_arch.py`` of the 2025 release) -> ours.
V1_ARGUMENT_NAMES = {"cft_list": "connect_list", "cfa_list": "cross_fuse_list", "cfa_nhead": "cross_fuse_nhead",
                     "cfa_dim": "cross_fuse_dim", "cond": "cft_weight"}


def official_v1_kwargs(config: Dict[str, Any]) -> Dict[str, Any]:
    """Constructor arguments of the v1.0.0 ``KEEP`` class (its key manifests' ``config``) -> ours.
    ``cond`` is the CFT weight w of ``dec + w * (dec * scale + shift)`` (our ``cft_weight``)."""
    kwargs = official_kwargs({V1_ARGUMENT_NAMES.get(k, k): v for k, v in config.items()})
    if "cft_weight" in kwargs:
        kwargs["cft_weight"] = float(kwargs["cft_weight"])
    return kwargs


#: KEEP v1.0.0 Asian (``KEEP_Asian-4765ebe0.pth``): the general network with CFT at the decoder
#: scales 32..256 instead of 16..64 (914 keys, 143.6 M values; v1.0.0 key manifest).
ASIAN_CFT_SCALES = ["32", "64", "128", "256"]

#: Named configurations: keyword arguments of :class:`keep.archs.keep_net.KEEP`.
CONFIGS: Dict[str, Dict[str, Any]] = {
    "keep-v1": official_kwargs(RELEASED_CONFIG),
    "keep-v1-asian": {**official_kwargs(RELEASED_CONFIG), "connect_list": ASIAN_CFT_SCALES},
    "keep-v0.1": official_kwargs(RELEASED_CONFIG),  # same network as v1.0.0 general, v0.1.0 key names
    # Same structure (6 levels, 512x512 input, 16x16 latent, CFT 16/32/64, CFA 16/32, 3 uncertainty
    # blocks, GMFlow), tiny widths: fast enough on CPU for pipeline and training tests.
    "keep-tiny": {
        "nf": 4, "emb_dim": 16, "codebook_size": 32, "dim_embd": 32, "n_head": 2, "n_layers": 1,
        "cross_fuse_nhead": 2, "cross_fuse_dim": 8, "kalman_attn_heads": 2, "kalman_attn_head_dim": 8,
        "flow_kwargs": {"feature_channels": 16, "num_transformer_layers": 1, "ffn_dim_expansion": 1,
                        "backbone_channels": [8, 12, 16], "upsampler_channels": 16},
    },
}


#: Registered KEEP files (keep.weights names) -> the configuration each was trained with.
RELEASE_CONFIGS: Dict[str, str] = {"keep-v1": "keep-v1", "keep-v1-asian": "keep-v1-asian", "keep-v0.1": "keep-v0.1"}


def create_model(name: str = "keep-v1", **overrides: Any) -> KEEP:
    """Build the named configuration (``"keep-v1"``, ``"keep-v1-asian"``, ``"keep-v0.1"``, ``"keep-tiny"``)
    with optional keyword overrides, in eval mode, weights freshly initialised."""
    return KEEP(**config_kwargs(name, **overrides)).eval()


def config_kwargs(name: str, **overrides: Any) -> Dict[str, Any]:
    if name not in CONFIGS:
        raise KeyError(f"unknown model configuration '{name}'; known: {', '.join(sorted(CONFIGS))}")
    kwargs = copy.deepcopy(CONFIGS[name])
    kwargs.update(overrides)
    return kwargs


def _scales(state_dict: StateDict, prefix: str):
    return sorted({k[len(prefix):].split(".", 1)[0] for k in state_dict if k.startswith(prefix)}, key=int)


def infer_config(state_dict: StateDict, source: str = "checkpoint") -> Dict[str, Any]:
    """The KEEP keyword arguments a released-layout state dict needs: the release's sizes with the CFT
    and CFA scales read from its keys (``cft.<s>.*`` / ``fuse_convs_dict.<s>.*``, ``cfa.<s>.*`` /
    ``cross_fuse.<s>.*``). Checked against the file's keys and shapes on a meta-device skeleton;
    :class:`CheckpointError` when no configuration of that family fits."""
    names = to_v0_names(state_dict)
    if not any(k.startswith(("generator.", "encoder.", "fuse_convs_dict.")) for k in names):
        raise CheckpointError(f"{source} is not a KEEP checkpoint (no generator / encoder / CFT keys; first keys: "
                              f"{', '.join(list(state_dict)[:3])}); give a KEEP file (keep download --list)")
    try:
        cft, cfa = _scales(names, "fuse_convs_dict."), _scales(names, "cross_fuse.")
    except ValueError:
        raise CheckpointError(f"{source}: CFT / CFA keys with a scale that is not a number") from None
    kwargs = config_kwargs("keep-v1", connect_list=cft, cross_fuse_list=cfa)
    skeleton = build_on_meta(lambda: KEEP(**kwargs), source)
    check_fits(skeleton, state_dict, source, hint=(
        f"Inferred from its keys: CFT at {cft}, CFA at {cfa}, every other size the release's; the file differs "
        f"elsewhere, so it is not a KEEP release layout. A network of your own: load its export from "
        f"keep train (it describes its own arch) or name its configuration (load_model(path, name=...))."))
    return kwargs


def model_for_checkpoint(state_dict: StateDict, arch: Optional[Dict[str, Any]] = None, name: Optional[str] = None,
                         source: str = "checkpoint") -> nn.Module:
    """The network a checkpoint needs, checked against the file before any memory is allocated:
    the arch a self-describing file names (validated), else configuration ``name``, else the
    configuration inferred from the keys and shapes (:func:`infer_config`). Weights not loaded yet."""
    if arch is not None:
        return build_from_spec(arch, state_dict, source)
    if name is not None:
        kwargs = config_kwargs(name)
        check_fits(build_on_meta(lambda: KEEP(**kwargs), source), state_dict, source,
                   hint=f"It is not a checkpoint of the '{name}' configuration; leave the configuration out to "
                        f"infer it from the file.")
        return KEEP(**kwargs).eval()
    return KEEP(**infer_config(state_dict, source)).eval()


def load_model(weights: Union[str, Path, None] = None, device: Union[str, torch.device] = "cpu",
               name: Optional[str] = None, download: bool = True,
               channels_last: Optional[bool] = None) -> KEEP:
    """Build a network and load a checkpoint into it (strictly), in eval mode on ``device``.

    weights: a file path, or a name in :data:`keep.weights.WEIGHTS` (``"keep-v1"`` general v1.0.0,
    ``"keep-v0.1"``; ``"keep-v1-asian"`` only when the file is already in the weights folder: it is not
    published); None = ``"keep-v1"``. Any layout that :func:`keep.checkpoint.load_checkpoint` reads works.
    The network: a file that describes its own arch builds that arch (validated first); else ``name``;
    else a registry name's own configuration; else (a path) the configuration inferred from the file's
    keys (e.g. the Asian file given by path builds the Asian configuration). ``channels_last``
    (default: on CPU only, where it is faster) calls :meth:`KEEP.channels_last_`.
    """
    from keep.weights import WEIGHTS, get_weight

    if weights is None:
        weights = "keep-v1"
    if isinstance(weights, str) and weights in WEIGHTS and not Path(weights).is_file():
        if weights not in RELEASE_CONFIGS:
            raise ValueError(f"'{weights}' is the {WEIGHTS[weights].description}, not a KEEP network; give one of "
                             f"{', '.join(RELEASE_CONFIGS)} or a checkpoint path")
        path = get_weight(weights, download=download)
        name = name or RELEASE_CONFIGS[weights]
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path} (give a file path or one of "
                                    f"{', '.join(RELEASE_CONFIGS)})")
    state_dict, arch = load_checkpoint(path)
    model = model_for_checkpoint(state_dict, arch, name, source=str(path))
    load_state_dict_into(model, state_dict, source=str(path))
    model = model.to(device).eval()
    supported = hasattr(model, "channels_last_")
    if channels_last and not supported:
        raise ValueError(f"channels_last is not supported by {type(model).__name__}")
    if channels_last or (channels_last is None and supported and torch.device(device).type == "cpu"):
        model.channels_last_()
    return model
