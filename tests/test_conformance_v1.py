"""Conformance with the KEEP v1.0.0 release (../shared/conformance/v1, see the README there).

``KEEP-b76feb75.pth`` (general) and ``KEEP_Asian-4765ebe0.pth`` are ``{'params_ema': sd}`` files with
``cft.*`` / ``cfa.*`` names; the Asian network has CFT at 32..256. Checked here: the keys, shapes and
order of both manifests; the v1.0.0 constructor arguments map onto our named configurations; the
configuration is inferred from a file's keys alone; and the real 512 network, with weights filled
under the **v1.0.0 names**, saved in the release's wrapper and loaded the way a user loads a file
(``load_model(path)``, no configuration named), restores the fixture's frames as the v1.0.0 code does.
One network run per ``keep_v1_asian_seed*.npz`` (a held-back fixture is checked the same way).
"""
import json

import numpy as np
import pytest
import torch

from keep.api import CONFIGS, config_kwargs, create_model, infer_config, load_model, official_v1_kwargs
from keep.archs.keep_net import KEEP
from keep.checkpoint import CheckpointError, to_v1_names

from shared_material import CONFORMANCE, TOLERANCE, fixture_input, load_fill, reference_files, run_on_all_cores

V1 = CONFORMANCE / "v1"
ASIAN_FIXTURES = reference_files(V1, "keep_v1_asian_seed*.npz")
MANIFESTS = {"keep-v1": "keep_v1_general_keys.json", "keep-v1-asian": "keep_v1_asian_keys.json"}

pytestmark = pytest.mark.skipif(not (V1 / "keep_v1_asian_keys.json").is_file(),
                                reason=f"v1.0.0 conformance data not found at {V1} (the shared folder next to the repo)")


def _manifest(config_name):
    return json.loads((V1 / MANIFESTS[config_name]).read_text())


def _meta_state(manifest):
    """The manifest as a state dict of meta tensors: keys and shapes without memory."""
    return {k: torch.empty(shape, dtype=getattr(torch, dtype), device="meta") for k, shape, dtype in manifest["keys"]}


@pytest.mark.parametrize("config_name", sorted(MANIFESTS))
def test_keys_shapes_and_order_equal_the_v1_release(config_name):
    manifest = _manifest(config_name)
    with torch.device("meta"):
        net = create_model(config_name)
    ours = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in to_v1_names(net.state_dict()).items()]
    assert ours == manifest["keys"]
    assert len(ours) == {"keep-v1": 896, "keep-v1-asian": 914}[config_name]
    assert manifest["file_layout"] == "{'params_ema': state_dict}"


@pytest.mark.parametrize("config_name", sorted(MANIFESTS))
def test_v1_constructor_arguments_map_onto_the_named_configuration(config_name):
    kwargs = official_v1_kwargs(_manifest(config_name)["config"])
    named = config_kwargs(config_name)
    defaults = {k: p.default for k, p in __import__("inspect").signature(KEEP).parameters.items()}
    for key, value in kwargs.items():
        assert named.get(key, defaults[key]) == value, key
    assert CONFIGS["keep-v1-asian"]["connect_list"] == ["32", "64", "128", "256"]


@pytest.mark.parametrize("config_name", sorted(MANIFESTS))
def test_configuration_is_inferred_from_the_keys(config_name):
    kwargs = infer_config(_meta_state(_manifest(config_name)))
    assert kwargs == config_kwargs(config_name)


def test_inference_refuses_what_it_cannot_infer():
    state = _meta_state(_manifest("keep-v1-asian"))
    state["generator.blocks.0.weight"] = torch.empty(7, 7, 3, 3, device="meta")  # another width
    with pytest.raises(CheckpointError, match=r"wrongly shaped keys \(generator.blocks.0.weight.*CFT at \['32'"):
        infer_config(state, source="mine.pth")
    with pytest.raises(CheckpointError, match="not a KEEP checkpoint"):
        infer_config({"body.conv1.weight": torch.empty(64, 3, 7, 7, device="meta")}, source="retinaface.pth")


# Frames after the first go through the flow net, and with filled (random) weights its flows are wild
# (|flow| up to ~460 px, mean ~29 px on keep_v1_asian_seed11), so the warped previous frame samples
# steep random textures and a few code choices sit near ties: moving the flows by 0.02 px (below the
# 0.026 px by which the official code itself differs across CPUs, README there) moves frame 1 by up
# to ~5-10 in max and ~0.04-0.07 in mean. No implementation can meet the strict output tolerance on
# such a frame on another machine. Where the strict check fails, the later frames must instead be
# no further from the reference than a flow perturbation this small moves our own output; a real
# difference in the temporal path is far outside that (measured on frame 1: gain semantics swapped
# 0.37, negated flow 0.26, zero flow 0.36, CFA left out 0.39 in mean, vs 0.026 for ours and an
# envelope of ~0.06). Frame 2 inherits frame 1's changes, so frame 1 is the discriminating one.
FLOW_JITTER_PX = 0.02
JITTER_SEEDS = (0, 1)


@pytest.fixture(scope="module", params=ASIAN_FIXTURES, ids=[p.stem for p in ASIAN_FIXTURES])
def asian_run(request, tmp_path_factory):
    """The Asian file given by path, restored once per fixture: (reference arrays, our output, and a
    function restoring the same frames with flows jittered by FLOW_JITTER_PX)."""
    ref = dict(np.load(request.param))
    config = json.loads(str(ref["config"]))
    assert config["cft_list"] == ["32", "64", "128", "256"]
    # Fill under the v1.0.0 names (the fill depends on them), save in the release's wrapper, load as a user.
    with torch.device("meta"):
        skeleton = KEEP(**official_v1_kwargs(config))
    v1_state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in to_v1_names(skeleton.state_dict()).items()}
    v1_state = load_fill()(v1_state, seed=int(ref["seed"]))
    path = tmp_path_factory.mktemp("asian") / "KEEP_Asian-4765ebe0.pth"
    torch.save({"params_ema": v1_state}, path)
    del v1_state
    net = load_model(path)  # no configuration named: inferred from the file
    path.unlink()
    assert net.connect_list == ["32", "64", "128", "256"] and net.cross_fuse_list == ["16", "32"]
    x = fixture_input(ref["frames"])
    out = run_on_all_cores(net, x, return_intermediates=True)
    assert out.frames.shape == ref["output"].shape

    def jittered(seed):
        noise = torch.randn(out.flows.shape, generator=torch.Generator().manual_seed(seed))
        return run_on_all_cores(net, x, flows=out.flows + FLOW_JITTER_PX * noise).numpy()
    return ref, out.frames.numpy(), jittered


def _within_tolerance(ours, theirs):
    diff = np.abs(ours - theirs)
    return diff.max() <= TOLERANCE["output_max"] and diff.mean() <= TOLERANCE["output_mean"], (diff.max(), diff.mean())


def test_asian_file_given_by_path_restores_frame_0_as_the_v1_code(asian_run):
    """Frame 0 uses every weight but the temporal ones (flow, Kalman gain, HQ encoder, CFA): it pins
    the rename, the inferred CFT scales 32..256, their encoder taps and decoder fuse points."""
    ref, out, _ = asian_run
    ok, figures = _within_tolerance(out[:, 0], ref["output"][:, 0])
    assert ok, figures


def test_asian_file_given_by_path_restores_later_frames_as_the_v1_code(asian_run):
    """Frames 1.. exercise flow, Kalman gain, HQ-encoder prediction and CFA: strictly within tolerance,
    or (an ill-conditioned fixture, see FLOW_JITTER_PX) within what a 0.02 px flow jitter moves them."""
    ref, out, jittered = asian_run
    ok, figures = _within_tolerance(out[:, 1:], ref["output"][:, 1:])
    if ok:
        return
    ref_diff = [float(np.abs(out[:, k] - ref["output"][:, k]).mean()) for k in range(1, out.shape[1])]
    runs = [jittered(seed) for seed in JITTER_SEEDS]
    assert all(np.array_equal(run[:, 0], out[:, 0]) for run in runs)   # frame 0 does not use the flow
    envelope = [float(np.mean([np.abs(run[:, k] - out[:, k]).mean() for run in runs])) for k in range(1, out.shape[1])]
    assert all(d <= e for d, e in zip(ref_diff, envelope)), (
        f"later frames differ from the v1.0.0 output by mean {ref_diff}, more than a {FLOW_JITTER_PX} px flow "
        f"jitter moves them ({envelope}): a difference in the temporal path (strict figures {figures})")
