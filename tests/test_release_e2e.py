"""Every release config trains end to end on CPU, chained as the recipe chains them (stage II starts from
the stage I run's export, stage III from stage II's), with size overrides only: a tiny network, 64-px
procedural clips (no landmarks), DIS flow instead of GMFlow, a random perceptual backbone, 2 steps.
Everything else (losses, LPIPS double normalisation, feature temporal loss, separate D passes,
anisotropic kernels, frame sampling, the official fusion init, the global batch) is the release's."""
from __future__ import annotations

import json
import logging
from pathlib import Path


from keep.config import load_config
from keep.engine.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY_VQGAN = "{type: VQGAN, nf: 8, emb_dim: 16, ch_mult: [1, 2, 2], res_blocks: 1, attn_resolutions: [16], codebook_size: 32}"
TINY_KEEP = ("{type: KEEP, nf: 8, emb_dim: 16, ch_mult: [1, 2, 2], res_blocks: 1, attn_resolutions: [16], "
             "codebook_size: 32, dim_embd: 32, n_head: 2, n_layers: 1, cross_fuse_nhead: 2, cross_fuse_dim: 8, "
             "num_uncertainty_layers: 1, kalman_attn_heads: 2, kalman_attn_head_dim: 8, flow_type: dis, kalman_init: official}")
COMMON = ["iters=2", "resolution=64", "device=cpu", "cpu_threads=1", "log_every=1", "val_every=0", "data.val=null",
          "data.num_workers=0", "data.train.root=''", "data.train.landmarks=''",
          "data.train.procedural={num_clips: 3, num_frames: 24, seed: 0}", "losses.perceptual_pretrained=false"]
STAGE_OVERRIDES = {
    1: [f"net={TINY_VQGAN}", "discriminator={type: PatchDiscriminator, ndf: 8, n_layers: 2}", "losses.disc_start=1"],
    2: [f"net={TINY_KEEP}", "frozen=[hq_encoder., quantize., generator., fuse_convs_dict., cross_fuse.]",
        "data.train.clip_length=3"],
    3: [f"net={TINY_KEEP}", "discriminator={type: TemporalPatchDiscriminator, nf: 8, num_layers: 4, first_padding: [1, 1, 1]}",
        "data.train.clip_length=3", "losses.disc_start=1",
        "frozen=[position_emb, kalman_filter., hq_encoder., encoder., quantize., generator., feat_emb., ft_layers., idx_pred_layer.]"],
}


def _init_without_gmflow(stage: int) -> list:
    """The config's own init entries but GMFlow's (DIS flow has no weights): the chained path stays."""
    cfg = load_config(TrainConfig, CONFIGS / "release" / f"stage{stage}.yaml")
    kept = [item for item in cfg.init if item.weight != "gmflow-sintel"]
    assert kept and kept[0].path == f"experiments/release_stage{stage - 1}/export.pth"
    entries = [json.dumps({"path": i.path, "prefix_map": i.prefix_map, "exclude": i.exclude}) for i in kept]
    return [f"init=[{', '.join(entries)}]"]


def test_release_recipe_runs_end_to_end_chained(tmp_path, monkeypatch, caplog):
    from keep.cli import main
    monkeypatch.chdir(tmp_path)                    # the configs' relative experiments/ paths land here
    caplog.set_level(logging.INFO, logger="keep")
    for stage in (1, 2, 3):
        overrides = COMMON + STAGE_OVERRIDES[stage] + (_init_without_gmflow(stage) if stage > 1 else [])
        argv = ["train", "-c", str(CONFIGS / "release" / f"stage{stage}.yaml")]
        for item in overrides:
            argv += ["--set", item]
        assert main(argv) == 0, f"release stage {stage}"
        run = tmp_path / "experiments" / f"release_stage{stage}"
        assert (run / "export.pth").is_file()
        log = (run / "train.log").read_text() if (run / "train.log").is_file() else caplog.text
        batch = {1: "global batch 8 = 1 process(es) x 8", 2: "global batch 2 = 1 process(es) x 2",
                 3: "global batch 4 = 1 process(es) x 4"}[stage]
        assert batch in log, log[-2000:]
        if stage > 1:
            assert f"init from experiments/release_stage{stage - 1}/export.pth" in log
    stage3_log = (tmp_path / "experiments" / "release_stage3" / "train.log")
    text = stage3_log.read_text() if stage3_log.is_file() else caplog.text
    assert "temporal" in text and "d_loss_real" in text
