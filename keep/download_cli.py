"""``keep download NAME``: fetch a registered pretrained file (``keep download --list`` shows them).

A file already on disk is checked before it is reported: its sha256 against the registry (or, for a
file without a published digest, whether it is complete); a wrong one makes the command fail with
what to do (``--force`` downloads it again, replacing it only once the new copy is verified).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Sequence

from keep.weights import (WEIGHTS, WeightsNotFoundError, check_file, corrupt_hint, download_weight, get_weight,
                          weights_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="registered file names (see --list)")
    parser.add_argument("--list", action="store_true",
                        help="list the registered files: state on disk, sha256 in the registry, file, URL")
    parser.add_argument("--force", action="store_true",
                        help="download again even if the file is there (replaced only by a verified copy)")
    parser.add_argument("--dir", default=None, help="weights folder (default: $KEEP_WEIGHTS_DIR, ./weights or ~/.cache/keep/weights)")


def format_table(header: Sequence[str], rows: List[Sequence[str]]) -> List[str]:
    """Left-aligned columns as wide as their widest cell (2 spaces apart), so they never drift."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def list_files(root) -> int:
    print(f"weights folder: {root or weights_dir()}")
    rows = []
    for name, item in WEIGHTS.items():
        status = check_file(name, root)
        rows.append((name, status.state, item.sha256 or "-",
                     str(item.path(root)) if item.torch_hub else f"{item.subdir}/{item.filename}",
                     item.url if item.published else "(not published: give its path)"))
    for line in format_table(("NAME", "STATE", "SHA256", "FILE", "URL"), rows):
        print("  " + line)
    print("STATE: ok = sha256 matches; unverified = present, no published digest (`keep doctor` loads it); "
          "not a checkpoint (empty, an HTML error page) / sha256 mismatch / incomplete = `keep download NAME --force`")
    return 0


def main(args: argparse.Namespace) -> int:
    root = args.dir
    if args.list or not args.names:
        return list_files(root)
    status = 0
    for name in args.names:
        try:
            if name not in WEIGHTS:
                get_weight(name)  # raises the KeyError that lists the known names
            found = check_file(name, root)
            if found.state != "missing" and not args.force:
                if not found.usable:
                    print(f"error: {name}: {WEIGHTS[name].path(root)} is there but {found.state}: {found.detail}; "
                          f"{corrupt_hint(name, root)}", file=sys.stderr)
                    status = 1
                    continue
                print(WEIGHTS[name].path(root))
            else:
                print(download_weight(name, root=root) if args.force else get_weight(name, root=root))
        except (KeyError, WeightsNotFoundError) as err:
            print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
            status = 1
    return status
