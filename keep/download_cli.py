"""``keep download NAME``: fetch a registered pretrained file (``keep download --list`` shows them)."""
from __future__ import annotations

import argparse
import sys

from keep.weights import WEIGHTS, WeightsNotFoundError, get_weight, weights_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="registered file names (see --list)")
    parser.add_argument("--list", action="store_true", help="list the registered files and where they go")
    parser.add_argument("--dir", default=None, help="weights folder (default: $KEEP_WEIGHTS_DIR, ./weights or ~/.cache/keep/weights)")


def main(args: argparse.Namespace) -> int:
    root = args.dir
    if args.list or not args.names:
        print(f"weights folder: {root or weights_dir()}")
        for name, item in WEIGHTS.items():
            present = "present" if item.path(root).is_file() else "missing"
            print(f"  {name:22s} {item.subdir}/{item.filename:32s} {present:8s} {item.description}")
        return 0
    status = 0
    for name in args.names:
        try:
            print(get_weight(name, root=root))
        except (KeyError, WeightsNotFoundError) as err:
            print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
            status = 1
    return status
