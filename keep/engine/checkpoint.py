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

import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

from keep.engine.errors import TrainSetupError

FORMAT = "keep-train-v1"
_NAME = re.compile(r"^step_(\d{8,})\.pth$")
_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)$")  # what atomic_torch_save / atomic_write_text leave on a kill -9
log = logging.getLogger("keep.train")


class CheckpointUnreadable(TrainSetupError):
    """A file that torch cannot read: truncated (a crash or a full disk during a copy) or corrupt."""


class CheckpointRefused(TrainSetupError):
    """A file holding objects other than tensors and plain values: refused unread (it could run code)."""


def safe_torch_load(path: Path, what: str = "checkpoint") -> object:
    """:func:`keep.torch_file.load_torch_file` (structure checked, then ``torch.load(weights_only=True)``
    on the CPU) with the training run's error types: refused (:class:`CheckpointRefused`) or unreadable."""
    from keep.checkpoint import CheckpointError
    from keep.torch_file import UnsafeCheckpoint, load_torch_file

    try:
        return load_torch_file(Path(path), what)
    except UnsafeCheckpoint as err:
        raise CheckpointRefused(str(err)) from None
    except CheckpointError as err:
        raise CheckpointUnreadable(f"{err}; it is truncated or corrupt") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(*folders: Path) -> List[Path]:
    """Remove ``.NAME.tmpPID`` files whose writer process is gone (a ``kill -9`` during a save).
    A temporary of a live process (another run writing now) is left alone. Returns what was removed."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _TEMPORARY.match(p.name)
            if m and p.is_file() and (int(m.group(1)) == os.getpid() or not _pid_alive(int(m.group(1)))):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


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


def checkpoint_step(path: Path) -> int:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else -1


def prune_checkpoints(ckpt_dir: Path, keep: int, keep_every: int = 0) -> None:
    """Delete all but the newest ``keep`` checkpoints; milestones (step % keep_every == 0) stay."""
    for old in list_checkpoints(ckpt_dir)[:-keep] if keep > 0 else []:
        if keep_every and checkpoint_step(old) % keep_every == 0:
            continue
        old.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a training checkpoint (``weights_only=True``) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = safe_torch_load(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainSetupError(f"{path} is not a KEEP training checkpoint ({FORMAT}); to start from its weights "
                              f"use an `init:` entry instead of --resume")
    missing = [k for k in ("step", "nets", "optimizers", "schedulers", "scaler", "config") if k not in state]
    if missing:
        raise CheckpointUnreadable(f"checkpoint {path} lacks {missing}; it is damaged")
    return state


def load_newest_valid(paths: List[Path]) -> tuple:
    """(path, state) of the newest readable checkpoint among ``paths`` (sorted by step); an unreadable
    newer one is skipped with a warning naming it. A refused (unsafe) file stops everything."""
    errors = []
    for path in reversed(paths):
        try:
            return path, load_checkpoint(path)
        except CheckpointUnreadable as err:
            log.warning("--resume: %s; falling back to the previous checkpoint", err)
            errors.append(str(err))
    raise CheckpointUnreadable("--resume: no readable checkpoint: " + "; ".join(errors))


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
