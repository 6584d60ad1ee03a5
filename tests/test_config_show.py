"""`keep config show`: the fully resolved config (bases merged, defaults filled, overrides applied)."""
import json
from pathlib import Path

import yaml

from keep.cli import main
from keep.config import load_config, to_dict
from keep.engine.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_show_json_is_the_loaded_config_with_defaults_and_overrides(capsys):
    path = CONFIGS / "release" / "stage3.yaml"
    assert main(["config", "show", str(path), "--json", "--set", "losses.l1=0.5"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["losses"]["l1"] == 0.5                      # the override
    assert shown["name"] == "release_stage3"                 # from the file itself
    assert shown["net"]["type"] == "KEEP"                    # from its base
    assert shown["ema_warmup"] in (True, False)              # a default nobody wrote
    assert "consistency_alpha" in shown["losses"]            # a default of a nested section
    expected = json.loads(json.dumps(to_dict(load_config(TrainConfig, path, ["losses.l1=0.5"]))))
    for key in ("net", "discriminator"):   # shown with the network's own defaults added
        assert expected.pop(key).items() <= shown.pop(key).items()
    assert shown == expected


def test_show_yaml_round_trips(capsys):
    path = CONFIGS / "release" / "stage1.yaml"
    assert main(["config", "show", str(path)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = json.loads(json.dumps(to_dict(load_config(TrainConfig, path))))
    assert shown["net"]["res_blocks"] == 2 and shown["net"]["type"] == "VQGAN"
    shown["net"] = {k: v for k, v in shown["net"].items() if k in expected["net"]}
    shown["discriminator"] = {k: v for k, v in shown["discriminator"].items() if k in expected["discriminator"]}
    assert shown == expected


def test_show_fills_the_network_defaults(capsys):
    assert main(["config", "show", str(CONFIGS / "release" / "stage3.yaml"), "--json"]) == 0
    net = json.loads(capsys.readouterr().out)["net"]
    assert (net["cft_weight"], net["mask_ratio"], net["flow_type"]) == (1.0, 0.0, "gmflow")


def test_show_bad_config_is_one_line(capsys, tmp_path):
    assert main(["config", "show", str(tmp_path / "missing.yaml")]) == 2
    assert main(["config", "show", str(CONFIGS / "stage1.yaml"), "--set", "losses.nope=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("keep config: ") for line in err)
    assert "losses.nope" in err[1]
