"""``keep config show FILE [--set KEY=VALUE ...] [--json]``: the fully resolved config on stdout.

Resolved = the ``base:`` files merged, every default of the schema filled in, the ``--set``
overrides applied and validated, and what the schema derives at load time applied (``resolution``,
a degradation protocol's settings). It is exactly what ``keep train`` would train with (and what a
run writes to its ``config.yaml``), so two recipes can be compared with ``diff``.
"""
from __future__ import annotations

import argparse
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
    return to_dict(load_config(SCHEMAS[kind], path, overrides))


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
