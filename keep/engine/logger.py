"""Logging: stdlib ``logging`` to the console and ``<run>/train.log`` on rank 0, plus a rank-0
TensorBoard writer fed by the dict each training step returns."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch
from tqdm import tqdm


class TqdmConsole(logging.Handler):
    """Console lines written through ``tqdm.write``: it clears the progress bars, prints the line on its own
    and redraws them (a plain stream handler writes after the bar's carriage return, on the bar's line)."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream if self.stream is not None else sys.stderr)
        except Exception:   # as logging.StreamHandler: a failing console never stops the run
            self.handleError(record)


def setup_logging(run_dir: Path, is_main: bool) -> logging.Logger:
    log = logging.getLogger("keep.train")
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    for handler in list(log.handlers):  # a second run in the same process starts a fresh log
        log.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = TqdmConsole()
    console.setFormatter(fmt)
    log.addHandler(console)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(run_dir / "train.log")
        file_handler.setFormatter(fmt)
        log.addHandler(file_handler)
    log.propagate = False
    return log


class TensorBoard:
    """Rank-0 TensorBoard writer (a no-op elsewhere)."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: Optional[int] = None):
        """``purge_step``: on a resume, the step of the checkpoint; events a crashed run wrote at or
        after it are hidden, so no step appears twice."""
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def scalars(self, prefix: str, values: Dict[str, float], step: int) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def image_grid(self, tag: str, rows: List[torch.Tensor], step: int) -> None:
        """rows: tensors (T, 3, H, W) in [-1, 1] of equal size; one grid row per tensor."""
        if self.writer is None:
            return
        from torchvision.utils import make_grid
        frames = torch.cat([r.detach().float().cpu().clamp(-1, 1) for r in rows])
        grid = make_grid((frames + 1) / 2, nrow=rows[0].shape[0])
        self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
