"""``keep config show FILE [--set KEY=VALUE ...] [--json]``: the fully resolved config on stdout.

Resolved = the ``base:`` files merged, every default of the schema filled in, the ``--set``
overrides applied and validated, and what the schema derives at load time applied (``resolution``,
a degradation protocol's settings): what ``keep train`` trains with (a run's ``config.yaml``), so
two recipes can be compared with ``diff``. The ``net:`` and ``discriminator:`` specs are shown with
the network's own defaults for the arguments the file leaves out (display only: a run records the
spec as written).
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Dict, Sequence

import yaml

from keep.config import ConfigError, load_config, load_with_bases, to_dict


def resolve(path: Path, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """The resolved config of ``path`` as plain data (dicts, lists, numbers, strings)."""
    from keep.engine.config import SCHEMAS
    path = Path(path)
    kind = load_with_bases(path).get("kind") if str(path).endswith((".yml", ".yaml")) else None
    if kind not in SCHEMAS:
        raise ConfigError(f"{path}: top-level `kind:` must be one of {sorted(SCHEMAS)}, got {kind!r}")
    resolved = to_dict(load_config(SCHEMAS[kind], path, overrides))
    for key in ("net", "discriminator"):
        if isinstance(resolved.get(key), dict):
            resolved[key] = with_network_defaults(resolved[key])
    return resolved


def with_network_defaults(spec: Dict[str, Any]) -> Dict[str, Any]:
    """``spec`` plus the defaults of its registered class's constructor for the arguments it omits."""
    import keep.archs  # noqa: F401  (registers the networks)
    from keep.registry import ARCHS
    try:
        signature = inspect.signature(ARCHS.get(spec["type"]).__init__)
    except (KeyError, TypeError, ValueError):
        return spec
    full = dict(spec)
    for name, param in signature.parameters.items():
        if name != "self" and name not in full and param.default is not inspect.Parameter.empty \
                and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            full[name] = to_dict(param.default)
    return full


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the fully resolved config (bases merged, defaults filled, overrides applied)")
    show.add_argument("config", help="a config YAML (configs/release/stage1.yaml, ...)")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a value as `keep train --set` does (repeatable)")
    show.add_argument("--json", action="store_true", help="JSON instead of YAML")


def main(args: argparse.Namespace) -> int:
    try:
        resolved = resolve(Path(args.config), args.overrides)
    except ConfigError as err:
        print(f"keep config: {err}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(resolved, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(resolved, sort_keys=False, default_flow_style=None, width=120))
    return 0
