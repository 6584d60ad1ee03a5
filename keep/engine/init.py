"""Stage settings applied to a freshly built network: ``init:`` (weights from earlier stages or
pretrained files) and ``frozen:`` (parameters kept fixed). Also the pre-flight check that every
file a run needs is on disk before the first step."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

import torch
from torch import nn

from keep.engine.checkpoint import extract_state_dict, safe_torch_load
from keep.engine.config import InitConfig, TrainConfig
from keep.engine.errors import TrainSetupError
from keep.weights import WeightsNotFoundError, get_weight

log = logging.getLogger("keep.train")


class MissingFilesError(FileNotFoundError):
    """Files a run needs are absent; the message lists each with where to put it."""


def _init_source(item: InitConfig, download: bool) -> Path:
    if item.weight:
        return get_weight(item.weight, download=download)
    return Path(item.path)


def preflight(cfg: TrainConfig, with_init: bool = True) -> List[InitConfig]:
    """Check every needed file before anything is built; return the ``init`` entries to apply
    (none when ``with_init`` is False: a resumed run).

    Raises :class:`MissingFilesError` naming every missing required file at once. An optional init
    (``required: false``) whose file is absent is logged and skipped (the network keeps its random init).
    """
    problems, usable = [], []
    for i, item in enumerate(cfg.init if with_init else []):
        try:
            path = _init_source(item, cfg.download_weights)
        except (WeightsNotFoundError, KeyError) as err:
            path, reason = None, str(err)
        else:
            reason = f"init[{i}] file {path} does not exist (train the previous stage first, or fix init[{i}].path)"
        if path is not None and path.is_file():
            usable.append(item)
        elif item.required:
            problems.append(reason)
        else:
            log.warning("init[%d]: %s is missing; starting those weights from random (init[%d].required: false)",
                        i, item.weight or item.path, i)
    if cfg.losses.perceptual > 0 and cfg.losses.perceptual_pretrained and cfg.losses.perceptual_type == "vgg":
        try:
            get_weight("vgg19", download=cfg.download_weights)
        except WeightsNotFoundError as err:
            problems.append(f"perceptual loss: {err}")
    if cfg.losses.perceptual > 0 and cfg.losses.perceptual_pretrained and cfg.losses.perceptual_type.startswith("lpips"):
        from keep.metrics.lpips_metric import backbone_file
        url, backbone = backbone_file("vgg")
        if not backbone.is_file():
            problems.append(f"perceptual loss (LPIPS-VGG): torchvision's VGG-16 {backbone.name} is missing: "
                            f"download {url} and put it at {backbone} (the torch hub cache)")
    if problems:
        raise MissingFilesError("this run needs files that are not here:\n  - " + "\n  - ".join(problems)
                                + "\n(`keep download NAME` fetches registry files when online; "
                                  "set download_weights: true to fetch them at start)")
    return usable


def _rename(state: Dict[str, torch.Tensor], prefix_map: Dict[str, List[str]]) -> Dict[str, torch.Tensor]:
    if not prefix_map:
        return dict(state)
    out = {}
    for key, value in state.items():
        for src, targets in prefix_map.items():
            if key.startswith(src):
                for dst in targets:
                    out[dst + key[len(src):]] = value
    return out


def apply_init(net: nn.Module, items: List[InitConfig], download: bool = False) -> set:
    """Copy weights into ``net`` per ``init`` entry. Shapes must match; source keys that the net
    does not have are an error (a wrong file or prefix map); net keys not covered keep their init.
    Every problem is a :class:`TrainSetupError` naming the file. Returns the names loaded."""
    own = net.state_dict()
    loaded: set = set()
    for i, item in enumerate(items):
        source = _init_source(item, download)
        obj = safe_torch_load(source, f"init[{i}] file")
        try:
            state = extract_state_dict(obj, item.key)
        except (KeyError, ValueError) as err:
            raise TrainSetupError(f"init[{i}] file {source}: {str(err).strip(chr(34) + chr(39))}") from None
        if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
            raise TrainSetupError(f"init[{i}] file {source}: its weights are not a mapping of names to tensors")
        state = _rename(state, item.prefix_map)
        state = {k: v for k, v in state.items() if not any(k.startswith(e) for e in item.exclude)}
        unexpected = sorted(k for k in state if k not in own)
        if unexpected:
            raise TrainSetupError(f"init[{i}] file {source}: {len(unexpected)} key(s) are not in the network, e.g. "
                                  f"{unexpected[:5]}; it was made for another network, or fix "
                                  f"init[{i}].prefix_map / init[{i}].key")
        bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if v.shape != own[k].shape]
        if bad:
            raise TrainSetupError(f"init[{i}] file {source}: shape mismatch (key, file, network): {bad[:3]}; "
                                  f"the file was trained with another net config")
        net.load_state_dict(state, strict=False)
        loaded |= set(state)
        kept = sorted({k.split(".")[0] for k in own if k not in state})
        log.info("init from %s: %d tensors loaded; modules keeping their own init: %s",
                 source, len(state), ", ".join(kept) or "none")
    return loaded


def apply_frozen(net: nn.Module, prefixes: List[str]) -> int:
    """Set ``requires_grad=False`` on parameters whose names start with any prefix; return the
    number of trainable parameters left. A prefix matching nothing is an error (a typo would
    otherwise silently train a module meant to be fixed)."""
    names = [n for n, _ in net.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise TrainSetupError(f"frozen: '{prefix}' matches no parameter; top-level modules: {tops}")
    for name, param in net.named_parameters():
        if any(name.startswith(p) for p in prefixes):
            param.requires_grad_(False)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if trainable == 0:
        raise TrainSetupError("frozen: every parameter of the network is frozen; nothing to train")
    return trainable


