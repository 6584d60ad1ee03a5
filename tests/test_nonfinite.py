"""A training run stops at the first non-finite loss or gradient (keep/engine/nonfinite.py): exit 1 with
the step and the terms, no NaN checkpoint or export, the last finite checkpoint kept; a non-finite
update is never applied; ``nonfinite_patience`` tolerates that many consecutive such steps."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from keep.cli import main
from keep.engine.checkpoint import list_checkpoints, load_checkpoint
from keep.engine.nonfinite import NonFiniteGuard, NonFiniteTraining
from keep.engine.step import StepContext

REPO = Path(__file__).resolve().parents[1]
TINY1 = REPO / "configs" / "tiny_stage1.yaml"


def _train(tmp, *sets):
    argv = ["train", "-c", str(TINY1), "--set", f"output_dir={tmp}", "--set", "data.val=null",
            "--set", "log_every=1", *[x for s in sets for x in ("--set", s)]]
    return main(argv)


def _all_finite(state_dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values() if v.is_floating_point())


def test_blow_up_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path, capsys, one_thread):
    # lr 1e-3 for steps 1-2 (checkpoint at step 2), then x1e33: step 3's update sends the weights to
    # ~1e30 and step 4's loss is NaN
    code = _train(tmp_path, "iters=8", "save_every=2", "optim.schedule=multistep", "optim.milestones=[2]",
                  "optim.gamma=1e33")
    err = capsys.readouterr().err
    run = tmp_path / "tiny_stage1"
    assert code == 1, err
    assert "step 4: non-finite training (l1=nan" in err and "loss=nan" in err and "Traceback" not in err
    assert "keep train: done" not in err
    saved = list_checkpoints(run / "checkpoints")
    assert [p.name for p in saved] == ["step_00000002.pth"]     # nothing from the poisoned steps 3-4
    assert str(saved[0]) in err                                   # the message names it
    state = load_checkpoint(saved[0])
    assert all(_all_finite(sd) for sd in state["nets"].values()) and _all_finite(state["ema"])
    assert not (run / "export.pth").exists()


def test_infinite_learning_rate_is_a_config_error(tmp_path, capsys):
    assert _train(tmp_path, "optim.lr=.inf") == 2
    err = capsys.readouterr().err
    assert "optim.lr: expected a finite number >= 0, got inf" in err
    assert not (tmp_path / "tiny_stage1").exists()


def _context(param: nn.Parameter, clip: float = 0.0) -> StepContext:
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return StepContext({"net": optimizer}, {"net": [param]}, scaler, "none", torch.device("cpu"), {"net": clip})


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_a_non_finite_update_is_not_applied(clip):
    param = nn.Parameter(torch.ones(3))
    ctx = _context(param, clip)
    ctx.optimize("net", (param * torch.tensor([1.0, float("nan"), 1.0])).sum())
    assert torch.equal(param.detach(), torch.ones(3)) and ctx.skipped == ["gradient of net: norm nan"]
    ctx.skipped.clear()
    ctx.optimize("net", (param * 2).sum())            # a finite step is applied: 1 - 0.1 * grad
    expected = 1 - 0.1 * (2 * min(1.0, clip / math.sqrt(12)) if clip else 2)
    assert torch.allclose(param.detach(), torch.full((3,), expected)) and ctx.skipped == []


def test_patience_counts_consecutive_non_finite_steps(tmp_path):
    net = {"net": nn.Linear(2, 2)}
    guard = NonFiniteGuard(patience=2, ckpt_dir=tmp_path)
    nan = {"loss": float("nan")}
    assert guard.check(1, nan, [], net) and guard.check(2, {"loss": 1.0}, ["gradient of net: norm inf"], net)
    assert not guard.check(3, {"loss": 1.0}, [], net) and guard.streak == 0     # a finite step resets it
    assert guard.check(4, nan, [], net) and guard.check(5, nan, [], net)
    with pytest.raises(NonFiniteTraining, match=r"step 6: non-finite training \(loss=nan\); stopped after 3"):
        guard.check(6, nan, [], net)


def test_non_finite_weights_are_never_written(tmp_path):
    guard = NonFiniteGuard(patience=0, ckpt_dir=tmp_path)
    net = nn.Linear(2, 2)
    guard.refuse_to_write(1, {"net": net}, "checkpoint")          # finite: nothing raised
    with torch.no_grad():
        net.bias[1] = float("inf")
    with pytest.raises(NonFiniteTraining, match=r"step 7: the weights hold NaN or inf \(1 tensors, e.g. net.bias\)"):
        guard.refuse_to_write(7, {"net": net}, "export export.pth")
