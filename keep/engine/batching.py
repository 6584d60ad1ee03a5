"""How many clips each process trains on: the one rule for launches of another size than the config's.

``data.batch_size`` is per process. With ``data.gpus: N`` (the GPU count of the recipe, e.g. the
release's 2, 2 and 4 GPUs) the recipe's *global* batch ``batch_size x N`` is what is kept: a launch
of ``W`` processes trains each on ``batch_size x N / W`` clips (scale), and a ``W`` that does not
divide the global batch is refused (no silent change of the batch). With ``gpus: 0`` the global
batch is ``batch_size x W``, whatever ``W``. Either way the trainer states the global batch at start.
"""
from __future__ import annotations

from typing import Tuple

from keep.engine.errors import TrainSetupError


def per_process_batch(batch_size: int, gpus: int, world_size: int) -> Tuple[int, str]:
    """(clips per process, one line for the log) for ``world_size`` processes."""
    if batch_size < 1:
        raise TrainSetupError(f"data.batch_size must be >= 1, got {batch_size}")
    if gpus < 0:
        raise TrainSetupError(f"data.gpus must be >= 0, got {gpus}")
    if gpus == 0:
        return batch_size, (f"global batch {batch_size * world_size} = {world_size} process(es) x {batch_size} "
                            f"(data.batch_size per process; data.gpus: 0)")
    total = batch_size * gpus
    if total % world_size:
        raise TrainSetupError(
            f"data.gpus: {gpus} with data.batch_size: {batch_size} is a global batch of {total}, which "
            f"{world_size} processes cannot split evenly; launch a number of processes that divides {total}, "
            f"or set data.gpus: 0 to train with data.batch_size per process (global batch {batch_size * world_size})")
    per = total // world_size
    note = "as the recipe" if world_size == gpus else f"the recipe's {gpus} GPU(s) x {batch_size}, rescaled"
    return per, f"global batch {total} = {world_size} process(es) x {per} ({note}; data.gpus: {gpus})"
