"""`torchrun -m keep.cli restore FOLDER`: a folder sharded over 2 CPU processes, each input
restored exactly once, the same faces as a single-process run, resumable with --skip-existing."""
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from keep.cli import main
from keep.io import open_source
from keep.io.samples import write_sample_clip
from keep.restore.shard import Shard, ShardGroup, shard_from_environment, split_by_size

from test_restore import VIDEOS, decode, tiny_weights  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = {"c1": 2, "c2": 5, "c3": 3, "c4": 6, "c5": 4}   # frames of each clip: unequal shares


def test_split_gives_every_input_to_exactly_one_rank_largest_first():
    sizes = [10, 9, 8, 7, 1, 1, 1, 1]
    shares = split_by_size(sizes, 3)
    assert sorted(i for share in shares for i in share) == list(range(len(sizes)))
    assert [sorted(s) for s in shares] == shares                      # input order kept within a share
    loads = [sum(sizes[i] for i in share) for share in shares]
    # Longest-processing-time: 10 | 9 | 8, then 7 to the lightest (8), then the 1s to 9, 10, 9, 10.
    assert loads == [12, 11, 15]
    assert split_by_size(sizes, 3) == shares                           # deterministic
    assert split_by_size([5, 5], 4) == [[0], [1], [], []]              # more ranks than inputs
    assert split_by_size([], 2) == [[], []]


def test_shard_from_torchrun_environment():
    assert shard_from_environment({}) is None
    assert shard_from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert shard_from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Shard(3, 4, 1)


def test_group_broadcasts_and_gathers_through_a_store_in_call_order():
    """Three ranks as threads over one in-memory store: every rank sees rank 0's values, rank 0
    gets every rank's in rank order, and values of later calls never mix with earlier ones."""
    import threading

    import torch.distributed as dist

    store, world = dist.HashStore(), 3
    seen = {}

    def rank_main(rank):
        with ShardGroup(Shard(rank, world, rank), store=store) as group:
            plan = group.broadcast({"plan": [4, 5]} if rank == 0 else "ignored")
            first = group.gather((rank, "first"))
            second = group.gather(rank * 10)
            status = group.broadcast(7 if rank == 0 else None)
        seen[rank] = (plan, first, second, status)

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in (2, 1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert seen[0] == ({"plan": [4, 5]}, [(0, "first"), (1, "first"), (2, "first")], [0, 10, 20], 7)
    for rank in (1, 2):
        assert seen[rank] == ({"plan": [4, 5]}, None, None, 7)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shard") / "batch"
    folder.mkdir()
    with open_source(VIDEOS / "synthetic_1.mp4") as source:
        frames = [f.image for f in itertools.islice(source, 6)]
    for name, count in LENGTHS.items():
        write_sample_clip(frames[:count], folder / f"{name}.mp4", tone_hz=None)
    return folder


def _torchrun(batch, out, weights, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "keep.cli", "restore", str(batch), "-o", str(out), "--weights", str(weights), "--aligned",
               "--window", "2", "--device", "cpu", "--no-progress", "--save-faces", *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _restored_by_rank(stdout):
    """{clip name: [ranks that reported restoring it]} from the per-input summary lines."""
    done = {}
    for rank, name in re.findall(r"^\[rank (\d)/2\] \S+/(c\d)\.mp4 -> ", stdout, re.M):
        done.setdefault(name, []).append(int(rank))
    return done


def _faces(folder):
    return [cv2.imread(str(p)) for p in sorted((folder / "restored_faces").iterdir())]


@pytest.mark.usefixtures("one_thread")
def test_torchrun_restores_each_input_once_and_resumes(batch, tmp_path, tiny_weights):  # noqa: F811
    out = tmp_path / "out"
    run = _torchrun(batch, out, tiny_weights)
    assert run.returncode == 0, run.stderr[-3000:]
    done = _restored_by_rank(run.stdout)
    assert sorted(done) == sorted(LENGTHS) and all(len(r) == 1 for r in done.values()), run.stdout
    assert {r[0] for r in done.values()} == {0, 1}, "both ranks must get work"
    assert "5 of 5 inputs restored (2 processes)" in run.stdout
    for name, count in LENGTHS.items():
        assert len(decode(out / f"{name}.mp4")[1]) == count

    # Same faces as one process restoring the folder, in a fresh process with the same thread count
    # (so the same kernels; an in-process run inherits whatever backend flags earlier tests set).
    # 1 level allowed: the ranks and the single process need not sum in the same order.
    single = tmp_path / "single"
    command = [sys.executable, "-m", "keep.cli", "restore", str(batch), "-o", str(single), "--weights",
               str(tiny_weights), "--aligned", "--window", "2", "--device", "cpu", "--no-progress", "--save-faces"]
    alone = subprocess.run(command, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    for name in LENGTHS:
        faces, alone_faces = _faces(out / name), _faces(single / name)
        assert len(faces) == len(alone_faces)          # (zip(strict=True) is Python >= 3.10)
        for a, b in zip(faces, alone_faces):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1

    # Resume: one output lost; the re-run restores that one only and leaves the others untouched.
    (out / "c3.mp4").unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    again = _torchrun(batch, out, tiny_weights, "--skip-existing")
    assert again.returncode == 0, again.stderr[-3000:]
    assert list(_restored_by_rank(again.stdout)) == ["c3"]
    assert "1 of 5 inputs restored, 4 already done and kept (2 processes)" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert len(decode(out / "c3.mp4")[1]) == LENGTHS["c3"]

    # Without --skip-existing (or --overwrite) a finished output is an error, said once, not per rank.
    refused = _torchrun(batch, out, tiny_weights)
    assert refused.returncode != 0
    assert refused.stderr.count("c1.mp4 already exists; pass --overwrite to replace it or --skip-existing") == 1


def test_skip_existing_in_one_process(batch, tmp_path, tiny_weights, capsys):  # noqa: F811
    out = tmp_path / "out"
    args = ["restore", str(batch / "c1.mp4"), "-o", str(out), "--weights", str(tiny_weights), "--aligned",
            "--window", "2", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    before = (out / "c1.mp4").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args + ["--skip-existing"]) == 0
    assert "0 of 1 inputs restored, 1 already done and kept" in capsys.readouterr().out
    assert (out / "c1.mp4").stat().st_mtime_ns == before
