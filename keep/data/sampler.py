"""A resumable, distributed sample order for step-based training.

The whole run reads one global stream of dataset positions: epoch ``e`` is a permutation of the
dataset drawn from ``(seed, e)``, and step ``s`` consumes positions ``[s·W·b, (s+1)·W·b)`` (``W``
ranks, ``b`` clips per rank), rank ``r`` taking its own slice. The order is therefore a pure function
of (seed, step, rank, world size): resuming at step ``s`` re-creates the sampler at ``s`` and reads
exactly the clips the interrupted run would have read, with no sampler state to save.

The sampler yields ``(epoch, index)`` keys; the dataset seeds each sample's random draws (window,
flip, degradation) from ``(seed, epoch, index)``, so the data itself is reproduced too.
"""
from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np
from torch.utils.data import Sampler


class StepSampler(Sampler):
    """Infinite sampler of ``(epoch, index)`` keys for one rank, starting at ``start_step``."""

    def __init__(self, dataset_len: int, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if dataset_len < 1:
            raise ValueError("the training dataset is empty; check data.train.root")
        self.n, self.batch_size, self.seed = dataset_len, batch_size, seed
        self.start_step, self.rank, self.world_size, self.shuffle = start_step, rank, world_size, shuffle
        self._perm_epoch, self._perm = -1, np.arange(dataset_len)

    def _index(self, position: int) -> Tuple[int, int]:
        epoch, offset = divmod(position, self.n)
        if self.shuffle and epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return epoch, int(self._perm[offset])

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        step = self.start_step
        global_batch = self.world_size * self.batch_size
        while True:
            first = step * global_batch + self.rank * self.batch_size
            for j in range(self.batch_size):
                yield self._index(first + j)
            step += 1
