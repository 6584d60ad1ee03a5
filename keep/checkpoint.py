"""Reading and writing KEEP checkpoints.

Layouts read by :func:`load_checkpoint` (always loaded on the CPU with ``weights_only=True``, so a
file cannot run code, after :func:`keep.torch_file.inspect_torch_file` has checked that it cannot
inflate in memory either):

* a raw state dict (the v0.1.0 release ``KEEP-a1a14d46.pth``);
* ``{"params": sd}`` / ``{"params_ema": sd}`` (BasicSR training files; ``params_ema`` preferred);
* our self-describing files ``{"arch": {"type": "KEEP", **kwargs}, "params" or "params_ema": sd, ...}``
  (written by :func:`save_inference_checkpoint`), which rebuild their own arch (e.g. a tiny one).

Key names: the v1.0.0 release files (``KEEP-b76feb75.pth``, ``KEEP_Asian-4765ebe0.pth``) name the
CFT / CFA groups ``cft.*`` / ``cfa.*``; v0.1.0 (and our modules) name them ``fuse_convs_dict.*`` /
``cross_fuse.*``. :func:`load_state_dict_into` renames either way to what the model has. A leading
``module.`` (DistributedDataParallel) is stripped.

A self-describing file's arch spec is not trusted: :func:`build_from_spec` checks the type, the
argument names and the size of the network it describes on the ``meta`` device (no memory) before
anything is allocated, so a spec such as ``nf: 1000000`` (tens of TB) is refused with a message.
"""
from __future__ import annotations

import inspect
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

#: v1.0.0 prefix <-> v0.1.0 prefix.
V1_TO_V0_PREFIXES: Tuple[Tuple[str, str], ...] = (("cft.", "fuse_convs_dict."), ("cfa.", "cross_fuse."))

StateDict = Dict[str, torch.Tensor]

#: Largest network a self-describing checkpoint may ask for: 2e9 values (8 GB in fp32), 12x the
#: released KEEP (158.5 M). Beyond it a spec is taken as corrupt or hostile, not built.
MAX_ARCH_VALUES = 2_000_000_000


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def _rename_prefixes(state_dict: Mapping[str, torch.Tensor], pairs) -> StateDict:
    out = {}
    for key, value in state_dict.items():
        for old, new in pairs:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def to_v0_names(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """``cft.*`` -> ``fuse_convs_dict.*``, ``cfa.*`` -> ``cross_fuse.*`` (other keys unchanged)."""
    return _rename_prefixes(state_dict, V1_TO_V0_PREFIXES)


def to_v1_names(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """``fuse_convs_dict.*`` -> ``cft.*``, ``cross_fuse.*`` -> ``cfa.*`` (other keys unchanged)."""
    return _rename_prefixes(state_dict, tuple((b, a) for a, b in V1_TO_V0_PREFIXES))


def unwrap_checkpoint(obj: Any, source: str = "checkpoint") -> Tuple[StateDict, Optional[Dict[str, Any]]]:
    """Return (state dict, arch spec or None) from any supported layout."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict or a dict holding one, got {type(obj).__name__}")
    arch = obj.get("arch")
    if arch is not None and not (isinstance(arch, Mapping) and "type" in arch):
        raise CheckpointError(f"{source}: 'arch' must be a mapping with a 'type' key, got {arch!r}")
    for field in ("params_ema", "params", "state_dict"):
        if isinstance(obj.get(field), Mapping):
            state_dict = dict(obj[field])
            break
    else:
        if arch is not None or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(
                f"{source}: no state dict found; expected a raw state dict or one under 'params_ema' / "
                f"'params', top-level keys are: {', '.join(map(str, list(obj)[:10]))}")
        state_dict = dict(obj)
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: state dict entries that are not tensors: {bad[:5]}")
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict, (dict(arch) if arch is not None else None)


def load_checkpoint(path: Union[str, Path]) -> Tuple[StateDict, Optional[Dict[str, Any]]]:
    """Read a checkpoint file safely; returns (state dict, arch spec or None)."""
    from keep.torch_file import load_torch_file   # (it imports CheckpointError from here)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return unwrap_checkpoint(load_torch_file(path), str(path))


def _summary(kind: str, keys: List[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{len(keys)} {kind} ({shown})"


def _renamed_for(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    renamed = to_v0_names(state_dict)
    if not any(k.startswith(("fuse_convs_dict.", "cross_fuse.")) for k in expected):
        renamed = to_v1_names(renamed)
    return renamed


def check_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
               hint: str = "Is it a checkpoint of this configuration (see keep.api.CONFIGS)?") -> StateDict:
    """Compare keys and shapes only (works on a ``meta``-device skeleton, so nothing is allocated);
    return the state dict renamed to the model's names. Raises :class:`CheckpointError` listing
    missing, unexpected and wrongly shaped keys."""
    expected = model.state_dict()
    renamed = _renamed_for(expected, state_dict)
    missing = [k for k in expected if k not in renamed]
    unexpected = [k for k in renamed if k not in expected]
    wrong = [f"{k} {tuple(renamed[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in renamed and renamed[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [_summary(kind, keys) for kind, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("wrongly shaped keys", wrong)) if keys]
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts) + ". " + hint)
    return renamed


def load_state_dict_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Strictly load ``state_dict`` into ``model`` after renaming v0.1.0/v1.0.0 group names to the
    model's. Raises :class:`CheckpointError` listing missing, unexpected and wrongly shaped keys."""
    model.load_state_dict(check_fits(model, state_dict, source), strict=True)


def build_on_meta(build, source: str = "checkpoint") -> nn.Module:
    """Run ``build()`` with every tensor created on the ``meta`` device: shapes without memory.
    Constructor errors (bad argument values) become :class:`CheckpointError`."""
    try:
        with torch.device("meta"):
            return build()
    except CheckpointError:
        raise
    except Exception as err:  # ValueError, TypeError, RuntimeError from a constructor given bad values
        raise CheckpointError(f"{source}: the network it describes cannot be built ({type(err).__name__}: {err})") from err


def build_from_spec(spec: Mapping[str, Any], state_dict: Optional[Mapping[str, torch.Tensor]] = None,
                    source: str = "checkpoint") -> nn.Module:
    """Build the arch a self-describing checkpoint names, after checking it: a registered ``type``,
    argument names the constructor takes, values it accepts, at most :data:`MAX_ARCH_VALUES` values,
    and (given ``state_dict``) keys and shapes equal to the file's. All checks run on a meta-device
    skeleton, so a hostile or corrupt spec allocates nothing. Returns the real network, eval mode."""
    from keep.registry import ARCHS
    import keep.archs  # noqa: F401  (registers the networks)

    kwargs = dict(spec)
    kind = kwargs.pop("type", None)
    if not isinstance(kind, str) or kind not in ARCHS:
        raise CheckpointError(f"{source}: its arch type {kind!r} is not a known network (known: "
                              f"{', '.join(ARCHS)}); the file is corrupt or from another project")
    cls = ARCHS.get(kind)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise CheckpointError(f"{source}: its arch spec does not fit {kind} ({err}); the file is corrupt or was "
                              f"written by another version") from None
    skeleton = build_on_meta(lambda: cls(**kwargs), source)
    values = sum(t.numel() for t in skeleton.state_dict().values())
    if values > MAX_ARCH_VALUES:
        raise CheckpointError(f"{source}: its arch spec asks for a {kind} of {values:,} values "
                              f"(limit {MAX_ARCH_VALUES:,}); refusing to build it (corrupt or hostile file)")
    if state_dict is not None:
        check_fits(skeleton, state_dict, source, hint="The file's weights do not match the arch it describes.")
    return ARCHS.build(spec).eval()


def save_inference_checkpoint(model: nn.Module, path: Union[str, Path], arch_spec: Mapping[str, Any],
                              **extra: Any) -> Path:
    """Write ``{"arch": arch_spec, "params": state dict, **extra}`` atomically (temp file + os.replace).

    ``arch_spec`` is ``{"type": <registered arch>, **kwargs}``; it must hold only plain values so the
    file stays readable with ``weights_only=True``.
    """
    from keep.registry import ARCHS

    if "type" not in arch_spec or arch_spec["type"] not in ARCHS:
        raise ValueError(f"arch_spec needs a registered 'type'; got {dict(arch_spec)!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"arch": dict(arch_spec), "params": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               **extra}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
