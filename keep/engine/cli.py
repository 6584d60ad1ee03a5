"""``keep train -c CONFIG [--set key=value ...] [--resume [PATH]]``: train stage I, II or III.

Single process: ``keep train -c configs/stage1.yaml``. Several GPUs or nodes: launch the same
command under torchrun (``torchrun --nproc_per_node 4 -m keep.cli train -c ...``); the process group
is read from torchrun's environment variables.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from keep.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="stage config YAML (configs/stage1.yaml, ...)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-4 (repeatable)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                        help="continue a run: without PATH the newest checkpoint of this run's folder; "
                             "PATH may be a checkpoint file or a run folder")


def main(args: argparse.Namespace) -> int:
    from keep.engine.config import TrainConfig
    from keep.engine.init import MissingFilesError
    from keep.engine.trainer import train

    try:
        cfg = load_config(TrainConfig, Path(args.config), args.overrides)
    except ConfigError as err:
        print(f"keep train: bad config {args.config}: {err}", file=sys.stderr)
        return 2
    try:   # before train() sets up this run's log: reported on stderr
        lock = _claim_run_folder(cfg)
    except (ValueError, OSError) as err:
        print(f"keep train: {err}", file=sys.stderr)
        return 1
    try:
        trainer = train(cfg, resume=args.resume)
    except (MissingFilesError, FileNotFoundError, ValueError) as err:
        # every user-fixable problem (TrainSetupError, ConfigError, a missing file) is a ValueError
        # or FileNotFoundError with a message that says what to do: one line, no traceback
        _report(err)
        return 1
    except PermissionError as err:
        _report(f"cannot write the run folder: {err}; pick another output_dir")
        return 1
    except OSError as err:   # disk full while saving: the checkpoint's temporary is already removed
        from keep.io.outputs import is_disk_full
        what = "the disk is full" if is_disk_full(err) else "cannot read or write"
        _report(f"{what}: {err.filename or ''} ({err.strerror or err}); the last complete checkpoint is kept: "
                f"free some space and continue with --resume")
        return 1
    except KeyboardInterrupt:
        print("keep train: interrupted; continue from the last checkpoint with --resume")
        return 130
    finally:
        if lock is not None:
            lock.release()
    if trainer.stop_requested:
        if trainer.dist.is_main:
            print(f"keep train: stopped at step {trainer.step} (checkpoint saved); continue with --resume")
        return 143
    if trainer.dist.is_main:
        print(f"keep train: done at step {trainer.step}; run folder {trainer.run_dir}")
    return 0


def _claim_run_folder(cfg):
    """keep/io/outputs.py for a run folder: never one of the data folders nor inside one, and one
    training per run folder at a time (the lock is the first process's: torchrun's other ranks share it)."""
    import os

    from keep.io.outputs import MadeFolders, OutputLock, refuse_overlap
    run_dir = Path(cfg.output_dir) / cfg.name
    data = [Path(d.root) for d in (cfg.data.train, cfg.data.val) if d is not None and d.root]
    refuse_overlap(data, [run_dir], fix="set output_dir (or name) outside the data folders")
    if os.environ.get("RANK", "0") != "0":
        return None
    MadeFolders(run_dir).make()
    lock = OutputLock.inside(run_dir, "keep train").acquire()
    if lock.note:
        print(f"note: {lock.note}", file=sys.stderr)
    return lock


def _report(err) -> None:
    log = logging.getLogger("keep.train")
    if log.handlers:
        log.error("%s", err)
    else:
        print(f"keep train: {err}", file=sys.stderr)
