"""Two processes on CPU (gloo), launched the way torchrun does it (environment variables only):
after a few DDP steps every replica holds the same weights although each read different clips."""
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from keep.config import load_config
from keep.engine.config import TrainConfig
from keep.engine.trainer import Trainer
from test_data import make_clips

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str, extra=()) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, REPO / "configs" / "tiny_stage1.yaml",
                      [f"output_dir={tmp}/runs", "data.train.procedural=null", f"data.train.root={tmp}/clips",
                       "data.val=null", "iters=3", "data.batch_size=1", "losses.disc_start=0", "export=false", *extra])
    trainer = Trainer(cfg)
    keys = []
    step_fn = trainer.model.training_step

    def recording(batch, step, ctx):
        keys.extend(batch["key"])
        return step_fn(batch, step, ctx)
    trainer.model.training_step = recording
    trainer.fit()
    torch.save({"net": trainer.model.net.state_dict(), "disc": trainer.model.disc.state_dict(), "keys": keys,
                "ddp": type(trainer.model.runners["net"]).__name__}, f"{tmp}/rank{rank}.pt")
    trainer.close()


def test_two_gloo_processes_keep_replicas_identical(tmp_path):
    make_clips(tmp_path / "clips", n_clips=4, n_frames=3)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["ddp"] == "DistributedDataParallel"
    assert r0["keys"] != r1["keys"]  # each rank trained on its own share of the clips
    for part in ("net", "disc"):
        for key, value in r0[part].items():
            assert torch.equal(value, r1[part][key]), f"{part}.{key} differs between replicas"
    last = sorted((tmp_path / "runs" / "tiny_stage1" / "checkpoints").glob("*.pth"))[-1]
    initial = torch.load(last, weights_only=True)
    assert initial["world_size"] == 2 and initial["step"] == 3


def test_separate_real_fake_passes_under_ddp_keep_replicas_identical(tmp_path):
    """The release's D update (real, then fake, each with its own forward and backward; only the last
    backward all-reduces) under DDP, with the global batch fixed by data.gpus (2 x 1 here)."""
    make_clips(tmp_path / "clips", n_clips=4, n_frames=3)
    extra = ["losses.disc_passes=separate", "data.gpus=2"]
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), extra), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["keys"] != r1["keys"] and len(r0["keys"]) == 3   # 1 clip per process per step
    for key, value in r0["disc"].items():
        assert torch.equal(value, r1["disc"][key]), f"disc.{key} differs between replicas"
