"""Strict YAML configuration loading.

* YAML 1.1 reads ``1e-4`` as a string; here any string that parses as a float literal is a float.
* Every config is validated against a dataclass schema: an unknown key is an error naming its
  dotted path, a wrong type is an error naming the path, the expected and the received type.
* ``--set a.b=1`` overrides are parsed with YAML and validated like the file.
* ``base: other.yaml`` (a path relative to the file, or a list of them) starts from another config:
  mappings merge key by key (recursively), anything else (lists, numbers) is replaced. One place
  holds what several configs share (``configs/paper/*``, ``configs/release/*``).
* A file that is not valid YAML is a :class:`ConfigError` naming the line, never a parser traceback.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Type, TypeVar

import yaml

C = TypeVar("C")

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


class ConfigError(ValueError):
    """A config file or override that does not fit its schema."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` (no dot) as a float, as people expect, and rejects duplicate keys."""


def _construct_mapping(loader, node, deep=False):
    # duplicates among the mapping's own keys are errors; keys brought in by a `<<: *anchor`
    # merge may be overridden, as YAML intends
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"duplicate key '{key}' at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def load_yaml(path_or_text: Any) -> Any:
    """Parse a YAML file (Path or path-like str ending in .yml/.yaml) or YAML text."""
    if isinstance(path_or_text, Path) or (isinstance(path_or_text, str) and path_or_text.endswith((".yml", ".yaml"))):
        path = Path(path_or_text)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from None
    else:
        text, path = path_or_text, None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path or 'config'} is not valid YAML{where}: {problem}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'train.lr=1e-4'`` -> (['train', 'lr'], 1e-4)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.load(value, Loader=_StrictLoader) if value.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{item}': the value is not valid YAML ({getattr(err, 'problem', err)})") from None
    return key.strip().split("."), parsed


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``--set`` overrides to a raw dict (in place) and return it. Missing parents are created;
    whether the key exists is checked later by :func:`from_dict`."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {} if node.get(part) is None else node[part]
                if not isinstance(node[part], dict):
                    raise ConfigError(f"override '{item}': '{part}' is not a mapping")
            node = node[part]
        node[path[-1]] = value
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, path)
    if origin in (list, List, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        out = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    return value


def from_dict(cls: Type[C], data: Mapping[str, Any], path: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`."""
    if data is None:
        data = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = ", ".join(f"{path + '.' if path else ''}{k}" for k in unknown)
        raise ConfigError(f"unknown config key(s): {where}; allowed here: {', '.join(fields)}")
    kwargs = {}
    for name, field in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], sub)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"missing required config key: {sub}")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (for saving the resolved config next to checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: Dict[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    """``over`` on top of ``base`` (a new dict): mappings merge recursively, other values replace."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_with_bases(path: Any, _chain: Sequence[Path] = ()) -> Dict[str, Any]:
    """Read a YAML config and resolve its ``base:`` key (files relative to it, merged in order,
    then this file on top). A missing base, a cycle or a non-mapping file is a :class:`ConfigError`."""
    path = Path(path)
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: base: expected a file name or a list of file names, got {bases!r}")
    merged: Dict[str, Any] = {}
    chain = list(_chain) + [path.resolve()]
    for name in bases:
        base_path = (path.parent / name)
        if not base_path.is_file():
            raise ConfigError(f"{path}: base file {base_path} does not exist")
        if base_path.resolve() in chain:
            raise ConfigError(f"{path}: base: {name} includes itself (cycle {' -> '.join(str(c) for c in chain)})")
        merged = deep_merge(merged, load_with_bases(base_path, chain))
    return deep_merge(merged, data)


def load_config(cls: Type[C], path: Any, overrides: Sequence[str] = ()) -> C:
    """Read YAML ``path`` (with its ``base:`` files), apply ``--set`` overrides, validate against ``cls``."""
    if isinstance(path, (str, Path)) and str(path).endswith((".yml", ".yaml")):
        data = load_with_bases(path)
    else:
        data = load_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    apply_overrides(data, overrides)
    return from_dict(cls, data)
