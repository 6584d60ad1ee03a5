"""Training checkpoints: one file per save, written atomically, readable with ``weights_only=True``.

A checkpoint holds only tensors and plain values::

    {"format": "keep-train-v1", "step": int, "config": dict, "world_size": int,
     "nets": {name: state_dict}, "ema": state_dict | None,
     "optimizers": {name: state_dict}, "schedulers": {name: {"step": int}},
     "scaler": state_dict, "rng": {"scheme": str, "seed": int}}

Random state needs no saving: the data order and every sample are functions of (seed, step)
(:mod:`keep.data.sampler`), and the trainer reseeds torch from (seed, rank, step) every step.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

FORMAT = "keep-train-v1"
_NAME = re.compile(r"^step_(\d{8,})\.pth$")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name in the same folder, then ``os.replace``: a reader (or a
    crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(text: str, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_resolved_config(config: Dict[str, Any], run_dir: Path) -> Path:
    path = Path(run_dir) / "config.yaml"
    atomic_write_text(yaml.safe_dump(config, sort_keys=False), path)
    return path


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{step:08d}.pth"


def list_checkpoints(ckpt_dir: Path) -> List[Path]:
    """Checkpoints in ``ckpt_dir`` sorted by step (temporary files are ignored)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def find_latest(ckpt_dir: Path) -> Optional[Path]:
    items = list_checkpoints(ckpt_dir)
    return items[-1] if items else None


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    for old in list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a KEEP training checkpoint ({FORMAT}); to start from its weights "
                         f"use an `init:` entry instead of --resume")
    return state


def extract_state_dict(obj: Any, key: str = "auto") -> Dict[str, torch.Tensor]:
    """The network weights inside any supported file (see :class:`keep.engine.config.InitConfig`)."""
    if not isinstance(obj, dict):
        raise ValueError("checkpoint does not hold a dict")
    if obj.get("format") == FORMAT:  # a training checkpoint of this project: prefer its EMA
        candidates = {"ema": obj.get("ema"), "net": obj.get("nets", {}).get("net")}
        order = ["ema", "net"]
    else:
        order = ["params_ema", "params", "state_dict", "model"]  # BasicSR / export / Lightning / GMFlow
        candidates = {k: obj.get(k) for k in order}
    if key != "auto":
        if candidates.get(key) is None:
            raise KeyError(f"checkpoint has no '{key}' weights; it has: "
                           f"{[k for k, v in candidates.items() if v is not None] or list(obj)[:10]}")
        return candidates[key]
    for name in order:
        if isinstance(candidates.get(name), dict):
            return candidates[name]
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj  # a raw state dict
    raise ValueError(f"cannot find network weights in a checkpoint with keys {list(obj)[:10]}")
