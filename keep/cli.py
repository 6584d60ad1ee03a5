"""The ``keep`` command line: a thin front end over the library.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and ``main(args) -> int``;
modules are imported only when their command runs, so ``keep download`` does not import torch-heavy code.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# command -> (module, one-line help)
COMMANDS = {
    "restore": ("keep.restore.cli", "restore face videos (file, frame folder or folder of videos)"),
    "live": ("keep.live.cli", "restore a camera, stream, pipe or replayed file frame by frame with bounded latency"),
    "degrade": ("keep.evaluation.degrade_cli", "synthesise VFHQ-mild/medium/heavy test clips from GT clips"),
    "prepare-vfhq": ("keep.evaluation.prepare_vfhq_cli", "VFHQ frames + landmark files (or DicFace's VFHQ-Test-50) -> aligned GT 512 / LQ 128"),
    "prepare": ("keep.data.prepare_cli", "videos (or VFHQ clips) -> aligned training clips, one folder per face track and shot"),
    "eval": ("keep.evaluation.eval_cli", "compute the paper's metrics and tables for restored clips"),
    "train": ("keep.engine.cli", "train stage I, II or III from a YAML config"),
    "config": ("keep.engine.config_cli", "show a training config fully resolved (bases, defaults, --set overrides)"),
    "export": ("keep.deploy.export_cli", "the network as ONNX graphs with its recurrent state as named inputs/outputs"),
    "download": ("keep.download_cli", "fetch a pretrained file from the weights registry"),
    "doctor": ("keep.doctor_cli", "first-run check: every pretrained file present, its sha256, loads strictly (never downloads)"),
    "demo": ("keep.demo.cli", "local web page: restore a video, compare before and after frame by frame"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keep", description="KEEP: Kalman-inspired video face super-resolution")
    from keep import __version__
    parser.add_argument("--version", action="version", version=f"keep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"keep {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
