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

The process group is gloo (CPU tensors; works with or without GPUs, across nodes over TCP) and is
used only to broadcast the plan and gather the results, never on the frame path.
"""
from __future__ import annotations

import os
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
    """The gloo process group of a torchrun job, for the plan and the summary only."""

    def __init__(self, shard: Shard):
        self.shard = shard

    def __enter__(self) -> "ShardGroup":
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)
        return self

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        import torch.distributed as dist
        box = [value if self.shard.is_leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> Optional[List[Any]]:
        """Every rank's ``value`` on rank 0 (in rank order); None on the others."""
        import torch.distributed as dist
        boxes = [None] * self.shard.world_size if self.shard.is_leader else None
        dist.gather_object(value, boxes, dst=0)
        return boxes


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
