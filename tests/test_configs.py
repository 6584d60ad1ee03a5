"""Every shipped configs/*.yaml loads through its schema (picked by the top-level `kind:`) and
dry-builds: networks on the meta device (no memory, no time), frozen prefixes and init prefix maps
checked against the real parameter names."""
from pathlib import Path

import pytest
import torch

import keep.archs  # noqa: F401
import keep.models  # noqa: F401
from keep.config import ConfigError, load_config, load_yaml
from keep.engine.config import SCHEMAS, TrainConfig
from keep.engine.init import apply_frozen
from keep.registry import ARCHS, MODELS

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def dry_build_train(cfg: TrainConfig) -> None:
    assert f"stage{cfg.stage}" in MODELS
    with torch.device("meta"):
        net = ARCHS.build(cfg.net)
        if cfg.discriminator:
            ARCHS.build(cfg.discriminator)
    apply_frozen(net, cfg.frozen)
    names = set(net.state_dict())
    for item in cfg.init:
        for targets in item.prefix_map.values():
            for prefix in targets:
                assert any(n.startswith(prefix) for n in names), f"init prefix {prefix} matches nothing"
        for prefix in item.exclude:
            assert any(n.startswith(prefix) for n in names), f"init exclude {prefix} matches nothing"


DRY_BUILD = {"train": dry_build_train}


def test_there_are_stage_configs():
    names = {p.stem for p in CONFIGS}
    assert {"stage1", "stage2", "stage3", "tiny_stage1", "tiny_stage2", "tiny_stage3"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_and_dry_builds(path):
    from keep.config import load_with_bases
    kind = load_with_bases(path).get("kind")
    assert kind in SCHEMAS, f"{path.name}: top-level `kind:` must be one of {sorted(SCHEMAS)}, got {kind!r}"
    cfg = load_config(SCHEMAS[kind], path)
    DRY_BUILD[kind](cfg)


def test_paper_settings_in_full_configs():
    root = REPO_CONFIGS
    expected = {1: (2e-4, 800_000), 2: (2e-4, 400_000), 3: (1e-4, 50_000)}
    for stage, (lr, iters) in expected.items():
        cfg = load_config(TrainConfig, root / f"stage{stage}.yaml")
        assert (cfg.optim.lr, cfg.iters, cfg.data.batch_size) == (lr, iters, 4)
    s3 = load_config(TrainConfig, root / "stage3.yaml").losses
    assert (s3.l1, s3.perceptual, s3.adversarial, s3.temporal) == (0.01, 1.0, 0.1, 0.1)


def test_unknown_key_and_bad_values_are_errors():
    path = REPO_CONFIGS / "tiny_stage1.yaml"
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(TrainConfig, path, ["losses.l2=1"])
    with pytest.raises(ConfigError, match="stage"):
        load_config(TrainConfig, path, ["stage=4"])
    with pytest.raises(ConfigError, match="amp"):
        load_config(TrainConfig, path, ["amp=fp8"])


def test_release_recipe_numbers():
    root = REPO_CONFIGS
    r1, r2, r3 = (load_config(TrainConfig, root / "release" / f"stage{i}.yaml") for i in (1, 2, 3))
    assert (r1.iters, r1.optim.lr, r1.data.batch_size) == (1_600_000, 7e-5, 4)
    assert (r2.iters, r2.optim.lr, r2.optim.milestones, r2.data.train.clip_length) == (500_000, 2e-4, [200_000, 400_000], 8)
    assert (r3.iters, r3.optim.lr, r3.optim_d.lr) == (50_000, 2e-5, 1e-5)
    assert r2.data.train.degradation.crf == (25, 45)
    assert r3.net == {**load_config(TrainConfig, root / "stage3.yaml").net, "kalman_init": "official"}
    for i in (1, 2, 3):  # the paper folder is the paper's numbers
        paper, top = (load_config(TrainConfig, p) for p in (root / "paper" / f"stage{i}.yaml", root / f"stage{i}.yaml"))
        assert (paper.iters, paper.optim.lr, paper.net) == (top.iters, top.optim.lr, top.net)


@pytest.mark.parametrize("path, protocol", [
    ("configs/stage2.yaml", "release"), ("configs/stage3.yaml", "release"), ("configs/causal_stage2.yaml", "release"),
    ("configs/release/stage2.yaml", "release"), ("configs/release/stage3.yaml", "release"),
    ("configs/paper/stage2.yaml", "paper"), ("configs/paper/stage3.yaml", "paper")])
def test_shipped_recipes_degrade_with_their_protocol(path, protocol):
    """Issue 10: the shipped recipes train on the release's data code (the released weights' own), the
    paper recipes on Eq. 9 as printed; no recipe overrides a setting its protocol governs."""
    from keep.config import from_dict, load_with_bases
    from keep.data.degradation import PROTOCOLS
    root = Path(__file__).resolve().parents[1]
    config = from_dict(TrainConfig, load_with_bases(root / path))
    for split in (config.data.train, config.data.val):
        degradation = split.degradation
        assert degradation.protocol == protocol
        assert degradation.deviations() == {}, path
        assert degradation.order == PROTOCOLS[protocol]["order"]
