"""Conformance with the official KEEP release (../shared/conformance, see its README).

The released network (158.5 M parameters) gets the deterministic weights of ``fill.py`` and runs once
per reference file ``*.npz`` there (any such file placed there is checked, e.g. another seed or
more frames); flows, observed codes, gains, code indices and restored frames are compared with the
tolerances of the README. Intermediates come from the network's own documented hook
(``return_intermediates=True``), not from re-running pieces here.
"""
import json

import numpy as np
import pytest
import torch

from keep.api import RELEASED_CONFIG, create_model

from shared_material import CONFORMANCE, TOLERANCE, fixture_input, load_fill, reference_files, run_on_all_cores
FIXTURES = reference_files(CONFORMANCE, "*.npz")  # keep_seed0.npz and any other reference placed there

pytestmark = pytest.mark.skipif(not (CONFORMANCE / "keep_released_keys.json").is_file(),
                                reason=f"conformance data not found at {CONFORMANCE} "
                                       "(the shared folder next to the repo)")


@pytest.fixture(scope="module")
def manifest():
    return json.loads((CONFORMANCE / "keep_released_keys.json").read_text())


@pytest.fixture(scope="module")
def released():
    # channels-last (except the flow net) is what load_model gives on CPU: check that path
    return create_model("keep-v1").channels_last_()


def test_state_dict_keys_and_shapes_equal_the_release(released, manifest):
    ours = {k: (list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in released.state_dict().items()}
    assert list(released.state_dict())[0] == "position_emb"
    ref = {k: (shape, dtype) for k, shape, dtype in manifest["keys"]}
    assert len(ref) == 896
    assert sorted(set(ref) - set(ours)) == [] and sorted(set(ours) - set(ref)) == []
    assert {k: v for k, v in ours.items() if ref[k] != v} == {}
    assert sum(v.numel() for v in released.state_dict().values()) == 158_485_860


def test_released_config_is_the_manifests(manifest):
    assert RELEASED_CONFIG == manifest["config"]


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.stem for p in FIXTURES])
def run(request, released):
    ref = dict(np.load(request.param))
    net = released
    net.load_state_dict(load_fill()(net.state_dict(), seed=int(ref["seed"])))
    out = run_on_all_cores(net, fixture_input(ref["frames"]), return_intermediates=True)
    return out, ref


def _max_mean(ours: torch.Tensor, ref: np.ndarray):
    diff = np.abs(ours.float().numpy() - ref.astype(np.float32))
    assert ours.shape == ref.shape
    return float(diff.max()), float(diff.mean())


def test_flows(run):
    out, ref = run
    assert _max_mean(out.flows, ref["flows"])[0] <= TOLERANCE["flows"]


def test_observed_codes(run):
    out, ref = run
    assert _max_mean(out.z_obs[0], ref["z_codes"])[0] <= TOLERANCE["z_codes"]


def test_gains_weight_the_prediction(run):
    out, ref = run
    assert _max_mean(out.gains, ref["gains"])[0] <= TOLERANCE["gains"]


def test_code_indices_identical(run):
    out, ref = run
    assert np.array_equal(out.indices[0].numpy(), ref["indices"].astype(np.int64))


def test_output(run):
    out, ref = run
    max_diff, mean_diff = _max_mean(out.frames, ref["output"])
    assert max_diff <= TOLERANCE["output_max"] and mean_diff <= TOLERANCE["output_mean"]
