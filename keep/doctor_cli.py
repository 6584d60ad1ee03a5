"""``keep doctor``: a first-run check of the pretrained files, without downloading anything.

Lists every file of the weights registry: whether it is in the weights folder, its sha256 against the
registry, whether it loads strictly into the network that uses it (see :mod:`keep.doctor`), and what
needs it. Exit status 0 when every file the default ``keep restore`` needs (the KEEP weights, the
RetinaFace detector, the ParseNet mask) is present and verified, 1 otherwise, with a line per problem
saying what to do. Problems of optional files (upsampler, other KEEP releases, eval metrics, training
initialisations) are listed too but do not change the exit status, unless named with ``--require``.

Loading is on by default: it is the only check a file without a published digest gets (RetinaFace,
ParseNet, Real-ESRGAN, ArcFace, I3D, CodeFormer's VQGAN), and it costs seconds (reading the files,
which the sha256 does anyway). ``--no-load`` keeps only presence and sha256.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List

from tqdm import tqdm

from keep.doctor import DEFAULT_RESTORE_FILES, FileReport, check_path, check_registered
from keep.download_cli import format_table
from keep.weights import WEIGHTS, weights_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", "--weights-dir", dest="dir", default=None,
                        help="weights folder, as for keep download (default: $KEEP_WEIGHTS_DIR, ./weights or "
                             "~/.cache/keep/weights)")
    parser.add_argument("--weights", default="keep-v1",
                        help="the KEEP weights you restore with, as keep restore --weights: a registry name "
                             "(default keep-v1) or a checkpoint path (e.g. your KEEP_Asian-4765ebe0.pth)")
    parser.add_argument("--require", action="append", default=[], metavar="NAME",
                        help="also count registry file NAME as needed (e.g. realesrgan-x2 if you use "
                             "--bg-upsampler); repeatable")
    parser.add_argument("--no-load", dest="load", action="store_false",
                        help="skip the strict loading (presence and sha256 only; files without a published "
                             "digest stay unverified)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (machine-readable)")


def _required_names(args: argparse.Namespace) -> List[str]:
    from keep.api import RELEASE_CONFIGS
    names = list(DEFAULT_RESTORE_FILES) + list(args.require)
    if args.weights in WEIGHTS:
        if args.weights not in RELEASE_CONFIGS:
            raise ValueError(f"--weights {args.weights}: that is the {WEIGHTS[args.weights].description}, not "
                             f"a KEEP network; give one of {', '.join(RELEASE_CONFIGS)} or a checkpoint path")
        names.append(args.weights)
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        raise ValueError(f"--require {unknown[0]}: not a registered file; known: {', '.join(WEIGHTS)}")
    return names


def collect(args: argparse.Namespace) -> List[FileReport]:
    required = _required_names(args)
    root = Path(args.dir).expanduser() if args.dir else None
    by_path = None if args.weights in WEIGHTS else Path(args.weights).expanduser()
    # needed files first, then the registry's order
    names = [n for n in WEIGHTS if n in required] + [n for n in WEIGHTS if n not in required]
    reports = []
    with tqdm(total=len(names) + (by_path is not None), desc="checking", unit="file", leave=False,
              disable=None) as bar:
        if by_path is not None:
            bar.set_postfix_str(by_path.name)
            reports.append(check_path(by_path, args.load))
            bar.update()
        for name in names:
            bar.set_postfix_str(name)
            reports.append(check_registered(name, root, name in required, args.load))
            bar.update()
    return reports


def _load_cell(report: FileReport) -> str:
    if report.load_state == "ok":
        return f"ok ({report.keys} keys)"
    if report.load_state == "fails":
        return report.load_detail
    return report.load_state


def _shown_path(report: FileReport, folder: Path) -> str:
    """Registry files relative to the weights folder (printed above the table), others as given."""
    path = Path(report.path)
    return str(path.relative_to(folder)) if report.name in WEIGHTS and path.is_relative_to(folder) else str(path)


def _file_cell(report: FileReport) -> str:
    if report.content:   # a file is there, but it is no checkpoint (keep.file_kind)
        return {"empty": "empty file", "html": "HTML page"}.get(report.content, f"{report.content} file")
    return "present" if report.present else "missing"


def print_report(reports: List[FileReport], root, load: bool) -> None:
    folder = Path(root).expanduser() if root else weights_dir()
    print(f"weights folder: {folder}")
    rows = [(r.name, "yes" if r.required else "-", r.needed_for, _file_cell(r),
             r.digest_state, _load_cell(r), _shown_path(r, folder)) for r in reports]
    for line in format_table(("NAME", "NEEDED", "USED BY", "FILE", "SHA256", "STRICT LOAD", "PATH"), rows):
        print("  " + line)
    needed = [r for r in reports if r.required and r.problem]
    optional = [r for r in reports if not r.required and r.problem and (r.present or r.content)]
    if needed:
        print(f"\n{len(needed)} problem(s) with files keep restore needs:")
        for r in needed:
            print(f"  - {r.name}: {r.problem}; {r.fix}")
    if optional:
        print("\noptional files with problems (exit status unaffected; fix them before you use them):")
        for r in optional:
            print(f"  - {r.name}: {r.problem}; {r.fix}")
    unchecked = [r.name for r in reports if r.required and r.present and r.digest_state == "no digest recorded"
                 and r.load_state != "ok" and not r.problem]
    if unchecked:
        print(f"\nnot verified ({'--no-load' if not load else 'no loader'}; no published digest): "
              f"{', '.join(unchecked)}")
    if not needed:
        print("\neverything the default keep restore needs is present and verified")


def main(args: argparse.Namespace) -> int:
    try:
        reports = collect(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = 1 if any(r.required and r.problem for r in reports) else 0
    if args.json:
        print(json.dumps({"weights_dir": str(Path(args.dir).expanduser() if args.dir else weights_dir()),
                          "load_checked": args.load, "exit_status": status,
                          "files": [r.as_dict() for r in reports]}, indent=2))
    else:
        print_report(reports, args.dir, args.load)
    return status
