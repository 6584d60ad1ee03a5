"""``keep doctor``: a first-run check of the pretrained files, without downloading anything.

Lists every file of the weights registry: whether it is in the weights folder, its sha256 against the
registry, whether it loads strictly into the network that uses it (see :mod:`keep.doctor`), and what
needs it. ``--weights``, ``--detector`` and ``--mask`` describe the restore setup, as the options of
``keep restore`` do; the files that setup needs are :func:`keep.restore.needs.restore_needs`'s, the
list ``keep restore`` checks before it loads anything. Exit status 0 ("ready") when every one of them
is present and verified, 1 otherwise, with a line per problem saying what to do. A file the setup
reads only when present (ParseNet under ``--mask auto``) is marked optional with what happens without
it; present, it must be usable (the run would load it). Problems of files the setup does not read
(upsampler, other KEEP releases, eval metrics, training initialisations) are listed too but do not
change the exit status, unless named with ``--require``.

Loading is on by default: it is the only check a file without a published digest gets (RetinaFace,
ParseNet, Real-ESRGAN, ArcFace, I3D, CodeFormer's VQGAN), and it costs seconds (reading the files,
which the sha256 does anyway). ``--no-load`` keeps only presence and sha256.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from tqdm import tqdm

from keep.doctor import FileReport, check_path, check_registered
from keep.download_cli import format_table
from keep.weights import WEIGHTS, weights_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", "--weights-dir", dest="dir", default=None,
                        help="weights folder, as for keep download (default: $KEEP_WEIGHTS_DIR, ./weights or "
                             "~/.cache/keep/weights)")
    parser.add_argument("--weights", default="keep-v1",
                        help="the KEEP weights you restore with, as keep restore --weights: a registry name "
                             "(default keep-v1) or a checkpoint path (e.g. your KEEP_Asian-4765ebe0.pth)")
    parser.add_argument("--detector", choices=["retinaface", "dlib"], default="retinaface",
                        help="the face detector you restore with, as keep restore --detector (dlib: offline, its "
                             "models come from PyPI)")
    parser.add_argument("--mask", choices=["auto", "parse", "square"], default="auto",
                        help="the paste-back mask, as keep restore --mask (auto: ParseNet when present, else the "
                             "square mask; so ParseNet is optional)")
    parser.add_argument("--require", action="append", default=[], metavar="NAME",
                        help="also count registry file NAME as needed (e.g. realesrgan-x2 if you use "
                             "--bg-upsampler); repeatable")
    parser.add_argument("--no-load", dest="load", action="store_false",
                        help="skip the strict loading (presence and sha256 only; files without a published "
                             "digest stay unverified)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (machine-readable)")


def _needs(args: argparse.Namespace) -> Tuple[List[str], Dict[str, str]]:
    """(registry files the setup needs, {file the setup reads when present: what happens without it})."""
    from keep.api import RELEASE_CONFIGS
    from keep.restore.needs import restore_needs
    if args.weights in WEIGHTS and args.weights not in RELEASE_CONFIGS:
        raise ValueError(f"--weights {args.weights}: that is the {WEIGHTS[args.weights].description}, not "
                         f"a KEEP network; give one of {', '.join(RELEASE_CONFIGS)} or a checkpoint path")
    unknown = [n for n in args.require if n not in WEIGHTS]
    if unknown:
        raise ValueError(f"--require {unknown[0]}: not a registered file; known: {', '.join(WEIGHTS)}")
    needs = restore_needs(args.weights, args.detector, args.mask)
    required = [n.name for n in needs if n.required] + list(args.require)
    optional = {n.name: n.without for n in needs if not n.required and n.name not in required}
    return required, optional


def _dlib_report() -> FileReport:
    """``--detector dlib``: its models are a PyPI package, not a registry file; present or not."""
    from keep.restore.needs import dlib_models_path, dlib_models_problem
    problem = dlib_models_problem()
    folder = dlib_models_path()
    report = FileReport(name="dlib-models", needed_for="keep restore --detector dlib", required=True,
                        path=str(folder) if folder else "face-recognition-models (not installed)",
                        present=problem is None, digest_state="-", load_state="-")
    if problem:
        report.problem, report.fix = "missing", problem
    return report


def collect(args: argparse.Namespace) -> List[FileReport]:
    required, optional = _needs(args)
    root = Path(args.dir).expanduser() if args.dir else None
    by_path = None if args.weights in WEIGHTS else Path(args.weights).expanduser()
    # needed files first, then the registry's order
    names = ([n for n in WEIGHTS if n in required] + [n for n in WEIGHTS if n in optional] +
             [n for n in WEIGHTS if n not in required and n not in optional])
    reports = [_dlib_report()] if args.detector == "dlib" else []
    with tqdm(total=len(names) + (by_path is not None), desc="checking", unit="file", leave=False,
              disable=None) as bar:
        if by_path is not None:
            bar.set_postfix_str(by_path.name)
            reports.append(check_path(by_path, args.load))
            bar.update()
        for name in names:
            bar.set_postfix_str(name)
            report = check_registered(name, root, name in required, args.load)
            report.optional = optional.get(name, "")
            if name == "retinaface-resnet50" and report.required and not report.present:
                report.fix += "; or restore with --detector dlib (offline, nothing to download)"
            reports.append(report)
            bar.update()
    return reports


def blocks_restore(report: FileReport) -> bool:
    """A problem the checked setup runs into: a needed file, or an optional one that is there but unusable
    (keep restore loads it when present; an empty file or an HTML page there counts as there)."""
    there = report.present or bool(report.content)
    return bool(report.problem) and (report.required or (bool(report.optional) and there))


def _setup(args: argparse.Namespace) -> str:
    weights = "" if args.weights == "keep-v1" else f" --weights {args.weights}"
    return f"keep restore{weights} --detector {args.detector} --mask {args.mask}"


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


def print_report(reports: List[FileReport], root, load: bool, setup: str = "keep restore") -> None:
    folder = Path(root).expanduser() if root else weights_dir()
    print(f"weights folder: {folder}")
    print(f"checked for: {setup}")
    rows = [(r.name, "yes" if r.required else "optional" if r.optional else "-", r.needed_for,
             _file_cell(r), r.digest_state, _load_cell(r), _shown_path(r, folder))
            for r in reports]
    for line in format_table(("NAME", "NEEDED", "USED BY", "FILE", "SHA256", "STRICT LOAD", "PATH"), rows):
        print("  " + line)
    needed = [r for r in reports if blocks_restore(r)]
    optional = [r for r in reports if not blocks_restore(r) and r.problem and (r.present or r.content)]
    absent = [r for r in reports if r.optional and not r.present and not r.content]
    if needed:
        print(f"\n{len(needed)} problem(s) with files keep restore needs:")
        for r in needed:
            print(f"  - {r.name}: {r.problem}; {r.fix}")
    if absent:
        print("\noptional, absent (the run goes on without them):")
        for r in absent:
            print(f"  - {r.name}: {r.optional}")
    if optional:
        print("\nfiles this setup does not read, with problems (exit status unaffected; fix them before you use "
              "them):")
        for r in optional:
            print(f"  - {r.name}: {r.problem}; {r.fix}")
    unchecked = [r.name for r in reports if (r.required or r.optional) and r.present
                 and r.digest_state == "no digest recorded" and r.load_state != "ok"
                 and not r.problem]
    if unchecked:
        print(f"\nnot verified ({'--no-load' if not load else 'no loader'}; no published digest): "
              f"{', '.join(unchecked)}")
    if not needed:
        verified = "present (not every file verified: see above)" if unchecked else "present and verified"
        print(f"\nready: everything {setup} needs is {verified}")


def main(args: argparse.Namespace) -> int:
    try:
        reports = collect(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = 1 if any(blocks_restore(r) for r in reports) else 0
    if args.json:
        print(json.dumps({"weights_dir": str(Path(args.dir).expanduser() if args.dir else weights_dir()),
                          "load_checked": args.load, "setup": _setup(args), "exit_status": status,
                          "files": [r.as_dict() for r in reports]}, indent=2))
    else:
        print_report(reports, args.dir, args.load, _setup(args))
    return status
