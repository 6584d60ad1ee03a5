"""End-to-end training of the three stages on clips made by the tests (tiny configs, CPU)."""
from pathlib import Path

import pytest
import torch

from keep.api import load_model
from keep.config import load_config
from keep.engine.checkpoint import list_checkpoints, load_checkpoint
from keep.engine.config import TrainConfig
from keep.engine.init import MissingFilesError
from keep.engine.trainer import Trainer, train
from keep.registry import MODELS
from test_data import make_clips

REPO = Path(__file__).resolve().parents[1]
FUSION = ("fuse_convs_dict.", "cross_fuse.")


def tiny(stage: int, tmp_path: Path, *overrides: str, root: Path = None) -> TrainConfig:
    """A shipped tiny config (procedural clips: no data), or on frame folders at ``root``."""
    base = [f"output_dir={tmp_path / 'runs'}", "data.val=null", "init=[]", "log_every=1"]
    if root is not None:
        base += ["data.train.procedural=null", f"data.train.root={root}"]
    return load_config(TrainConfig, REPO / "configs" / f"tiny_stage{stage}.yaml", base + list(overrides))


def test_three_stages_chain_checkpoint_resume_and_export(tmp_path):
    runs = tmp_path / "runs"
    # stage I
    t1 = train(tiny(1, tmp_path, "iters=2", "save_every=1"))
    assert [p.name for p in list_checkpoints(t1.ckpt_dir)] == ["step_00000001.pth", "step_00000002.pth"]
    assert (runs / "tiny_stage1" / "config.yaml").is_file() and (runs / "tiny_stage1" / "export.pth").is_file()
    resumed = train(tiny(1, tmp_path, "iters=3"), resume=True)
    assert resumed.step == 3 and load_checkpoint(list_checkpoints(t1.ckpt_dir)[-1])["step"] == 3

    # stage II from the stage I export: E_H and the LQ encoder both start from the VQGAN encoder
    stage1 = torch.load(runs / "tiny_stage1" / "export.pth", weights_only=True)["params"]
    init = ('init=[{path: %s, prefix_map: {"encoder.": ["encoder.", "hq_encoder."], '
            '"quantize.": ["quantize."], "generator.": ["generator."]}}]' % (runs / "tiny_stage1" / "export.pth"))
    t2 = train(tiny(2, tmp_path, "iters=2", "data.train.clip_length=2", init))
    net2 = t2.model.net.state_dict()
    for key, value in stage1.items():
        if key.startswith(("quantize.", "generator.")):
            assert torch.equal(net2[key], value), key  # frozen: still the stage I weights
        elif key.startswith("encoder."):
            assert torch.equal(net2["hq_encoder." + key[len("encoder."):]], value), key

    # stage III from the stage II export, CFT/CFA excluded from the init; validation on held-out clips
    make_clips(tmp_path / "clips", n_clips=2, n_frames=5)
    cfg3 = tiny(3, tmp_path, "iters=2", "data.train.clip_length=2",
                f"init=[{{path: {runs / 'tiny_stage2' / 'export.pth'}, exclude: [fuse_convs_dict., cross_fuse.]}}]",
                f"data.val={{root: {tmp_path / 'clips'}, clips: [clip_1], clip_length: 2, gt_size: 64, "
                "hflip_prob: 0.0, degradation: {upsample: false}}")
    torch.manual_seed(cfg3.seed)
    initial = {k: v.clone() for k, v in MODELS.get("stage3")(cfg3).net.state_dict().items()}
    t3 = train(cfg3)
    final = load_checkpoint(list_checkpoints(t3.ckpt_dir)[-1])["nets"]["net"]
    fusion_weights = [k for k in final if k.startswith(FUSION) and k.endswith("weight")]
    assert fusion_weights
    assert not [k for k in fusion_weights if not final[k].any()], "a CFT/CFA weight is still all zero"
    assert all(not torch.equal(final[k], initial[k]) for k in fusion_weights if ".norm" not in k)
    exported = torch.load(runs / "tiny_stage2" / "export.pth", weights_only=True)["params"]
    # every tensor under a frozen prefix of the config (the Kalman filter, the encoders, the generator,
    # the code transformer...) is still the stage II export's, and each prefix names some tensor
    frozen = [k for k in final if k.startswith(tuple(cfg3.frozen))]
    assert {p for p in cfg3.frozen if any(k.startswith(p) for k in frozen)} == set(cfg3.frozen)
    assert any(k.startswith("kalman_filter.") for k in frozen)
    changed = [k for k in frozen if not torch.equal(final[k], exported[k])]
    assert not changed, f"frozen in stage III but changed: {changed[:5]}"

    # the stage III export is a self-describing inference file the restore API loads
    model = load_model(runs / "tiny_stage3" / "export.pth")
    with torch.no_grad():
        out = model(torch.zeros(1, 2, 3, 64, 64))
    assert out.shape == (1, 2, 3, 64, 64) and torch.isfinite(out).all()


def test_kill_and_resume_continues_identically(tmp_path):
    args = ("iters=4", "save_every=2", "losses.disc_start=0", "data.batch_size=1")
    reference = Trainer(tiny(1, tmp_path / "a", *args))
    full = reference.fit()
    reference.close()

    killed = Trainer(tiny(1, tmp_path / "b", *args))
    step_fn = killed.model.training_step

    def dies_at_step_3(batch, step, ctx):
        if step == 3:
            raise KeyboardInterrupt  # a kill in the middle of step 3: only the step-2 checkpoint exists
        return step_fn(batch, step, ctx)
    killed.model.training_step = dies_at_step_3
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    killed.close()
    assert [p.name for p in list_checkpoints(killed.ckpt_dir)] == ["step_00000002.pth"]

    resumed = Trainer(tiny(1, tmp_path / "b", *args), resume=True)
    assert resumed.step == 2
    rest = resumed.fit()
    resumed.close()
    assert rest == full[2:]
    a = load_checkpoint(list_checkpoints(reference.ckpt_dir)[-1])
    b = load_checkpoint(list_checkpoints(resumed.ckpt_dir)[-1])
    for part in ("net", "disc"):
        assert all(torch.equal(a["nets"][part][k], v) for k, v in b["nets"][part].items())
    assert all(torch.equal(a["ema"][k], v) for k, v in b["ema"].items())


def test_sigterm_request_finishes_the_step_and_saves(tmp_path):
    trainer = Trainer(tiny(1, tmp_path, "iters=5", "save_every=100", "data.batch_size=1"))
    step_fn = trainer.model.training_step

    def stop_after_step_1(batch, step, ctx):
        logs = step_fn(batch, step, ctx)
        if step == 1:
            trainer._request_stop(15, None)
        return logs
    trainer.model.training_step = stop_after_step_1
    trainer.fit()
    trainer.close()
    assert trainer.step == 2 and [p.name for p in list_checkpoints(trainer.ckpt_dir)] == ["step_00000002.pth"]


def test_overfits_one_fixed_batch(tmp_path):
    make_clips(tmp_path / "one", n_clips=1, n_frames=1)
    cfg = tiny(1, tmp_path, "data.train.hflip_prob=0.0",
               "data.batch_size=1", "iters=40", "losses.perceptual=0", "losses.adversarial=0",
               "optim.lr=3e-3", "save_every=100", "export=false", root=tmp_path / "one")
    trainer = Trainer(cfg)
    history = trainer.fit()
    trainer.close()
    first, last = history[0]["l1"], sum(h["l1"] for h in history[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_missing_files_fail_before_training_naming_each(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path / "weights"))
    cfg = tiny(3, tmp_path, "losses.perceptual_pretrained=true", f"init=[{{path: {tmp_path / 'stage2.pth'}}}]")
    with pytest.raises(MissingFilesError) as err:
        Trainer(cfg)
    message = str(err.value)
    assert "stage2.pth" in message and "vgg19-dcbb9e9d.pth" in message and str(tmp_path / "weights") in message
    # an optional init that is absent is skipped: training starts from random
    Trainer(tiny(3, tmp_path, f"init=[{{path: {tmp_path / 'stage2.pth'}, required: false}}]")).close()
