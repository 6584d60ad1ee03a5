"""Behaviour of keep.registry and keep.config (the foundation every YAML-driven part relies on)."""
from dataclasses import dataclass, field
from typing import List, Optional

import pytest

import keep.archs  # noqa: F401  (fills ARCHS)
from keep.config import ConfigError, apply_overrides, from_dict, load_config, load_yaml, to_dict
from keep.registry import ARCHS, Registry


def test_duplicate_name_raises():
    reg = Registry("thing")

    @reg.register()
    class Foo:
        pass

    with pytest.raises(KeyError, match="already registered"):
        reg.register("Foo")(type("Other", (), {}))


def test_unknown_name_lists_what_exists():
    reg = Registry("thing")
    reg.register("alpha")(dict)
    reg.register("beta")(list)
    with pytest.raises(KeyError) as err:
        reg.get("gamma")
    assert "gamma" in str(err.value) and "alpha" in str(err.value) and "beta" in str(err.value)


def test_build_never_mutates_spec():
    reg = Registry("thing")

    @reg.register()
    class Box:
        def __init__(self, items):
            self.items = items
            items.append("touched")

    spec = {"type": "Box", "items": ["a"]}
    box = reg.build(spec)
    assert spec == {"type": "Box", "items": ["a"]}  # neither the type key nor the nested list changed
    assert box.items == ["a", "touched"]


def test_build_rejects_spec_without_type():
    with pytest.raises(ValueError, match="type"):
        Registry("thing").build({"items": []})


def test_archs_registry_holds_the_network():
    assert "KEEP" in ARCHS and "VQGAN" in ARCHS and "CFTBlock" in ARCHS and "CFABlock" in ARCHS


@dataclass
class Optim:
    lr: float = 1.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])


@dataclass
class Cfg:
    name: str = "x"
    iters: int = 1
    optim: Optim = field(default_factory=Optim)
    note: Optional[str] = None


def test_unknown_key_names_its_dotted_path():
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        from_dict(Cfg, {"optim": {"lrr": 1e-4}})


def test_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n")
    assert load_yaml(path)["optim"]["lr"] == pytest.approx(1e-4)
    cfg = load_config(Cfg, path)
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == pytest.approx(1e-4)


def test_wrong_type_names_path():
    with pytest.raises(ConfigError, match="iters"):
        from_dict(Cfg, {"iters": "many"})


def test_overrides_are_validated_and_round_trip():
    data = apply_overrides({"name": "a"}, ["optim.lr=2e-4", "iters=3"])
    cfg = from_dict(Cfg, data)
    assert cfg.optim.lr == pytest.approx(2e-4) and cfg.iters == 3
    assert from_dict(Cfg, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="optim.nope"):
        from_dict(Cfg, apply_overrides({}, ["optim.nope=1"]))


def test_duplicate_yaml_key_is_an_error():
    with pytest.raises(ConfigError, match="duplicate"):
        load_yaml("a: 1\na: 2\n")


def test_yaml_merge_keys_share_settings_and_may_be_overridden():
    data = load_yaml("base: &base {lr: 2e-4, iters: 10}\nstage: {<<: *base, iters: 20}\n")
    assert data["stage"] == {"lr": 2e-4, "iters": 20} and isinstance(data["stage"]["lr"], float)
