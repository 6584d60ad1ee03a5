"""Checkpoint layouts, v0.1.0 <-> v1.0.0 key names, strict-mismatch errors, safe loading."""
import pytest
import torch

from keep.api import CONFIGS, create_model, load_model
from keep.checkpoint import (CheckpointError, load_checkpoint, load_state_dict_into, save_inference_checkpoint,
                             to_v0_names, to_v1_names)
from keep.weights import WeightsNotFoundError
from test_archs import MICRO, randomise_


@pytest.fixture(scope="module")
def tiny():
    """keep-tiny with random (non-default) weights, so a successful load is visible."""
    return randomise_(create_model("keep-tiny"), seed=3)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("layout", ["raw", "params", "params_ema", "v1_names", "ddp"])
def test_release_layouts_load(tmp_path, tiny, layout):
    sd = tiny.state_dict()
    obj = {"raw": sd, "params": {"params": sd}, "params_ema": {"params_ema": sd, "params": {}},
           "v1_names": to_v1_names(sd), "ddp": {f"module.{k}": v for k, v in sd.items()}}[layout]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    loaded = load_model(path, name="keep-tiny")
    assert not loaded.training
    assert_same_weights(loaded, tiny)
    # on CPU the convolutions go channels-last, except the flow net's (numerically sensitive)
    assert loaded.generator.blocks[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert loaded.flownet.model.backbone.conv1.weight.is_contiguous()
    assert load_model(path, name="keep-tiny", channels_last=False).generator.blocks[0].weight.is_contiguous()


def test_v1_names_rename_both_ways(tiny):
    sd = tiny.state_dict()
    v1 = to_v1_names(sd)
    assert any(k.startswith("cft.16.") for k in v1) and any(k.startswith("cfa.32.") for k in v1)
    assert not any(k.startswith(("fuse_convs_dict.", "cross_fuse.")) for k in v1)
    assert to_v0_names(v1).keys() == sd.keys() and list(to_v1_names(v1)) == list(v1)
    assert "encoder.blocks.0.weight" in v1  # other groups untouched

    class V1Named(torch.nn.Module):  # a module that itself uses the v1.0.0 names
        def __init__(self):
            super().__init__()
            self.cft = torch.nn.ModuleDict({"16": torch.nn.Linear(2, 2)})
            self.encoder = torch.nn.Linear(2, 3)

    target = V1Named()
    source = {"fuse_convs_dict.16.weight": torch.ones(2, 2), "fuse_convs_dict.16.bias": torch.zeros(2),
              "encoder.weight": torch.ones(3, 2), "encoder.bias": torch.ones(3)}
    load_state_dict_into(target, source)
    assert torch.equal(target.cft["16"].weight, torch.ones(2, 2))


def test_self_describing_checkpoint_builds_its_own_arch(tmp_path):
    net = randomise_(create_model("keep-v1", **{k: v for k, v in MICRO.items()}), seed=5)
    path = save_inference_checkpoint(net, tmp_path / "sub" / "export.pth", {"type": "KEEP", **MICRO}, step=7)
    assert sorted(p.name for p in path.parent.iterdir()) == ["export.pth"]  # no temp file left behind
    sd, arch = load_checkpoint(path)
    assert arch["type"] == "KEEP" and arch["img_size"] == 64
    loaded = load_model(path)  # no name needed: the file says what it is
    assert loaded.img_size == 64
    assert_same_weights(loaded, net)
    with pytest.raises(ValueError, match="registered"):
        save_inference_checkpoint(net, tmp_path / "x.pth", {"type": "NoSuchNet"})


def test_mismatch_lists_missing_unexpected_and_wrong_shapes(tiny):
    sd = dict(tiny.state_dict())
    sd.pop("quantize.embedding.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["feat_emb.bias"] = torch.zeros(3)
    target = create_model("keep-tiny")
    with pytest.raises(CheckpointError) as err:
        load_state_dict_into(target, sd, source="bad.pth")
    message = str(err.value)
    for part in ("bad.pth", "1 missing keys", "quantize.embedding.weight", "1 unexpected keys", "extra.weight",
                 "1 wrongly shaped keys", "feat_emb.bias (3,) != (32,)"):
        assert part in message
    # a release checkpoint into a tiny net: counts and only the first few names
    many = {f"k{i}": torch.zeros(1) for i in range(20)}
    with pytest.raises(CheckpointError, match=r"20 unexpected keys \(k0, k1, k2, k3, k4, \.\.\.\)"):
        load_state_dict_into(target, many)


class Payload:
    pass


def test_unsafe_or_broken_files_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"params": Payload()}, path)  # arbitrary objects need full unpickling (can run code)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(path)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth"):
        load_checkpoint(broken)
    odd = tmp_path / "odd.pth"
    torch.save({"epoch": 3, "net": {"w": torch.zeros(1)}}, odd)
    with pytest.raises(CheckpointError, match="no state dict found.*epoch"):
        load_checkpoint(odd)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_model(tmp_path / "nowhere.pth")


def test_registry_names_resolve_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="KEEP-b76feb75.pth"):
        load_model(download=False)  # None = the v1.0.0 general release
    with pytest.raises(WeightsNotFoundError, match="KEEP-a1a14d46.pth"):
        load_model("keep-v0.1", download=False)


def test_create_model_configs():
    assert set(CONFIGS) >= {"keep-v1", "keep-tiny"}
    with pytest.raises(KeyError, match="keep-tiny"):
        create_model("keep-huge")
    net = create_model("keep-tiny", mask_ratio=0.1)
    assert not net.training and net.mask_ratio == 0.1 and net.img_size == 512
