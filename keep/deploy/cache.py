"""Graph sets exported on first use, cached next to the checkpoint, keyed by its sha256 and the settings.

``<checkpoint>.onnx/<sha256[:16]>-<format>-<causal|window>-<precision>/`` beside the checkpoint file
(or under ``~/.cache/keep/onnx`` when that folder is not writable). A set appears by an atomic
rename of a complete folder (keep/deploy/export.py); a lock file makes concurrent first uses export
it once, the others wait and reuse it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

from keep.deploy.export import FORMAT, MANIFEST, export_graphs


def checkpoint_path(weights: Union[str, Path]) -> Path:
    """The file ``--weights`` names: a path, or a registry name (downloaded on first use, as load_model)."""
    from keep.weights import WEIGHTS, get_weight
    if isinstance(weights, str) and weights in WEIGHTS and not Path(weights).is_file():
        return get_weight(weights)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _writable_root(checkpoint: Path) -> Path:
    beside = checkpoint.parent / f"{checkpoint.name}.onnx"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keep" / "onnx" / checkpoint.name
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:   # Windows: no lock; the atomic rename still keeps the set whole
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_graphs(weights: Union[str, Path], causal: Optional[bool], precision: str = "fp32",
                  causal_window: Optional[int] = None) -> Tuple[Path, bool]:
    """The graph set of ``weights`` for these settings: (folder, exported now). Exports it on first use.

    causal: None = the checkpoint's own mode (what ``keep restore`` runs); causal_window: None = the
    checkpoint's (the causal attention span is a constant of the graphs)."""
    from keep.weights import sha256_of
    checkpoint = checkpoint_path(weights)
    sha = sha256_of(checkpoint)
    mode = {None: "default", True: "causal", False: "window"}[causal]
    key = f"{sha[:16]}-{FORMAT}-{mode}{'' if causal_window is None else f'{causal_window}'}-{precision}"
    root = _writable_root(checkpoint)
    folder = root / key
    if (folder / MANIFEST).is_file():
        return folder, False
    with _locked(root / f".{key}.lock"):
        if (folder / MANIFEST).is_file():   # another process exported it while we waited
            return folder, False
        net = load_for_export(weights)
        if causal_window is not None:
            net.kalman_filter.window = int(causal_window)
        export_graphs(net, folder, net.kalman_filter.causal if causal is None else causal, precision,
                      extra=checkpoint_fields(checkpoint, sha))
    return folder, True


def load_for_export(weights: Union[str, Path]):
    from keep.api import load_model
    return load_model(str(weights), device="cpu", channels_last=False)


def checkpoint_fields(checkpoint: Path, sha: str) -> dict:
    return {"checkpoint": checkpoint.name, "checkpoint_sha256": sha}
