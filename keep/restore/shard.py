"""``keep restore`` over many processes: ``torchrun --nproc_per_node N -m keep.cli restore FOLDER -o OUT``.

torchrun (PyTorch's own launcher, also across nodes) starts one process per GPU and sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``. Rank 0 checks the inputs and plans the outputs once (so a clip
finishing on one rank while another is still scanning cannot make two ranks disagree on the work),
splits the inputs over the ranks and broadcasts the split; every rank restores its share on its own
GPU (``cuda:LOCAL_RANK``) or on the CPU; rank 0 gathers the results and prints one summary.

The split is static and deterministic: inputs sorted by file size, largest first, each given to the
rank with the least work so far (longest-processing-time scheduling). File size stands for duration
(an assumption: clips of one collection share a codec and a bitrate); no input is given to two ranks.
Resuming: outputs are written atomically, so an existing output is a finished one; ``--skip-existing``
leaves those out of the split, so a re-run restores only what is missing.

The plan and the results travel through torchrun's rendezvous store (the TCP key-value store every
rank already reaches, on one node or many), never on the frame path. No process group is made: a
gloo group's worker threads free the last collective's tensors after the collective returns, and
when that lands in interpreter shutdown the process aborts ("terminate called without an active
exception", 5 runs in 115 here); a store has no worker threads.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional, Sequence

import torch

# A rank with a short share waits at the final gather for the one with the longest: days, not the
# default 30 minutes, or the gather would time out on any real collection.
GATHER_TIMEOUT = timedelta(days=30)


@dataclass(frozen=True)
class Shard:
    """This process's place in a torchrun job."""
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def tag(self) -> str:
        return f"[rank {self.rank}/{self.world_size}]"


def shard_from_environment(environ=os.environ) -> Optional[Shard]:
    """The torchrun variables, or None for a plain (single-process) run."""
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank = int(environ["RANK"])
    return Shard(rank=rank, world_size=world_size, local_rank=int(environ.get("LOCAL_RANK", rank)))


def split_by_size(sizes: Sequence[int], world_size: int) -> List[List[int]]:
    """Indices of ``sizes`` for each rank: largest first to the least-loaded rank (ties: lowest rank).
    Every index appears exactly once; each rank's list keeps the input order."""
    loads = [0] * world_size
    shares: List[List[int]] = [[] for _ in range(world_size)]
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        shares[rank].append(index)
        loads[rank] += max(int(sizes[index]), 1)
    return [sorted(share) for share in shares]


def input_size(path) -> int:
    """Bytes of a video, or of all frames of a frame folder."""
    if os.path.isdir(path):
        return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
    return os.path.getsize(path)


class ShardGroup:
    """Rank 0 to all and all to rank 0 through a key-value store, for the plan and the summary only.

    ``store`` is any ``torch.distributed.Store``; by default torchrun's (``env://``). Values are
    pickled, as ``torch.distributed.broadcast_object_list`` would: every rank is this same program."""

    # Keys of one job: torchrun's run id and restart count, so a restarted job never reads the
    # values of the attempt before it from the agent's store, which outlives its workers.
    _JOB = "keep-restore/{run}/{attempt}/"
    # How long rank 0 waits, on leaving, for the others to have read its last value: only a store
    # hosted by rank 0 itself (a launch without torchrun's agent) needs it, and a dead rank must
    # not hold the job for long.
    _LEAVE_TIMEOUT = timedelta(seconds=60)

    def __init__(self, shard: Shard, store=None):
        self.shard = shard
        self._store = store
        self._count = 0

    def __enter__(self) -> "ShardGroup":
        import torch.distributed as dist
        if self._store is None:
            store, _, _ = next(dist.rendezvous("env://", timeout=GATHER_TIMEOUT))
            self._store = store
        prefix = self._JOB.format(run=os.environ.get("TORCHELASTIC_RUN_ID", "none"),
                                  attempt=os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        self._store = dist.PrefixStore(prefix, self._store)
        self._store.set_timeout(GATHER_TIMEOUT)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self._store.set(f"left/{self.shard.rank}", b"1")
        except RuntimeError:       # the store is gone (its host ended): nobody is left to tell
            return
        if self.shard.is_leader and exc_type is None:
            others = [f"left/{rank}" for rank in range(1, self.shard.world_size)]
            try:
                self._store.wait(others, self._LEAVE_TIMEOUT)
            except RuntimeError:   # a rank that died or is slow to leave; torchrun reports it
                pass

    def _key(self) -> str:
        self._count += 1          # every rank makes the same calls in the same order
        return f"{self._count}/"

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        key = self._key() + "value"
        if self.shard.is_leader:
            self._store.set(key, pickle.dumps(value))
            return value
        return pickle.loads(self._store.get(key))

    def gather(self, value: Any) -> Optional[List[Any]]:
        """Every rank's ``value`` on rank 0 (in rank order); None on the others."""
        key = self._key()
        self._store.set(f"{key}{self.shard.rank}", pickle.dumps(value))
        if not self.shard.is_leader:
            return None
        return [pickle.loads(self._store.get(f"{key}{rank}")) for rank in range(self.shard.world_size)]


def select_gpu(shard: Shard, device: str) -> None:
    """Make ``cuda`` mean this rank's GPU (``cuda:LOCAL_RANK``) when the run uses CUDA. More ranks on a
    node than GPUs is refused: they would share GPUs unevenly."""
    if device not in ("auto", "cuda") or not torch.cuda.is_available():
        return
    count = torch.cuda.device_count()
    if shard.local_rank >= count:
        raise ValueError(f"{shard.tag()} local rank {shard.local_rank} has no GPU of its own ({count} visible); "
                         f"start at most {count} processes per node (--nproc_per_node {count})")
    torch.cuda.set_device(shard.local_rank)
