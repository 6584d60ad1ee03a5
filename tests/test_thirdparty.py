"""Third-party networks against facts of their reference definitions (tests/data/README.md)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared_material import CONFORMANCE, require

DATA = Path(__file__).resolve().parent / "data"


def _fill(state_dict, seed):
    import sys
    sys.path.insert(0, str(require(CONFORMANCE / "fill.py").parent))
    from fill import fill_state_dict
    return fill_state_dict(state_dict, seed)


def _keys(net):
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in net.state_dict().items()]


def test_rrdbnet_keys_and_output_match_basicsr():
    from keep.restore.upsampler import RRDBNet
    torch.set_num_threads(1)
    ref = np.load(DATA / "reference_rrdbnet_arcface.npz")
    net = RRDBNet().eval()
    assert _keys(net) == json.loads((DATA / "rrdbnet_x2_keys.json").read_text())["keys"]
    net.load_state_dict(_fill(net.state_dict(), int(ref["rrdb_seed"])))
    with torch.no_grad():
        out = net(torch.from_numpy(ref["rrdb_input"]).permute(2, 0, 1)[None].float() / 255.0).numpy()
    np.testing.assert_allclose(out, ref["rrdb_output"], atol=1e-4)   # fp32 kernels, 23 blocks


def test_arcface_keys_input_and_embedding_match_gfpgan():
    from keep.metrics.identity import ArcFaceResNet18, arcface_input
    ref = np.load(DATA / "reference_rrdbnet_arcface.npz")
    net = ArcFaceResNet18().eval()
    assert _keys(net) == json.loads((DATA / "arcface_resnet18_keys.json").read_text())["keys"]
    gray = arcface_input(ref["arcface_face"][None])
    np.testing.assert_allclose(gray.numpy(), ref["arcface_gray"].astype(np.float32), atol=1e-3)  # fp16 storage
    net.load_state_dict(_fill(net.state_dict(), int(ref["arcface_seed"])))
    with torch.no_grad():
        emb = net(gray).numpy()
    np.testing.assert_allclose(emb, ref["arcface_embedding"], rtol=1e-3, atol=1e-3)
