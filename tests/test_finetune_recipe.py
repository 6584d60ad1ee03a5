"""The "fine-tune on your own videos" recipe (issue 11) runs on real face videos, in tiny: a tiny
"released" model (the tiny stage III export), `keep prepare` on two real clips (one held out), then
`keep train -c configs/tiny_finetune_stage3.yaml`. The export must start from every weight of the
released model and change only what stage III trains (CFT and CFA)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared_material import VIDEOS, require

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def _keep(cwd, *argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "keep.cli", *argv], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"keep {' '.join(argv)}:\n{run.stderr[-3000:]}"
    return run


def _params(path):
    return torch.load(path, map_location="cpu", weights_only=True)["params"]


def test_prepare_then_finetune_from_the_released_model(tmp_path):
    clips = [require(VIDEOS / "real_1.mp4"), require(VIDEOS / "real_2.mp4")]
    videos = tmp_path / "my_videos"
    videos.mkdir()
    for clip in clips:
        (videos / clip.name).symlink_to(clip)
    _keep(tmp_path, "train", "-c", str(CONFIGS / "tiny_stage3.yaml"))          # the tiny "released" model
    released = tmp_path / "experiments" / "tiny_stage3" / "export.pth"
    _keep(tmp_path, "prepare", str(videos), "-o", "datasets/mine_64", "--size", "64", "--detector", "dlib",
          "--max-frames", "24", "--min-frames", "8", "--val", "real_2")
    for split in ("train", "val"):
        segments = list((tmp_path / "datasets" / "mine_64" / split).iterdir())
        assert segments and all(len(list(s.glob("*.png"))) >= 8 for s in segments), split
    run = _keep(tmp_path, "train", "-c", str(CONFIGS / "tiny_finetune_stage3.yaml"))
    assert "done at step 8" in run.stderr + run.stdout

    before = _params(released)
    after = _params(tmp_path / "experiments" / "tiny_finetune_stage3" / "export.pth")
    assert before.keys() == after.keys()
    trained = {k for k in after if not torch.equal(after[k], before[k])}
    assert trained, "the fine-tune changed nothing"
    assert all(k.startswith(("fuse_convs_dict.", "cross_fuse.")) for k in trained), sorted(trained)[:5]
    # Both CFT and CFA moved: they were loaded from the released model, not re-initialised and left.
    assert any(k.startswith("fuse_convs_dict.") for k in trained) and any(k.startswith("cross_fuse.") for k in trained)


@pytest.mark.parametrize("name", ["finetune/stage3.yaml"])
def test_full_recipe_starts_from_the_released_weights(name):
    from keep.engine.config import TrainConfig
    from keep.config import load_config
    cfg = load_config(TrainConfig, CONFIGS / name)
    assert [item.weight for item in cfg.init] == ["keep-v1"] and not cfg.init[0].exclude
    assert (cfg.stage, cfg.iters, cfg.optim.lr, cfg.optim_d.lr) == (3, 30000, 2e-5, 1e-5)
    assert cfg.data.train.root == "datasets/mine/train" and cfg.data.train.degradation.protocol == "release"
