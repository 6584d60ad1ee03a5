"""Exported graphs (keep/deploy) against the eager network, on a tiny KEEP with random weights.

The reference is the PyTorch network's own ``restore_window`` / ``restore_frame`` over several windows
with the state carried; the exported side runs the ONNX files with onnxruntime and OpenVINO and
carries its state through the graphs' named inputs and outputs. The packages are optional: without
them these tests skip, except under CI (the test extra installs them there).
"""
import json

import numpy as np
import pytest
import torch

from keep.api import load_model
from keep.cli import main

from optional_packages import need
from tiny_models import random_tiny_checkpoint

SIZE = 64
# Random tiny weights make the network ill-conditioned: eager fp32 itself is up to ~1e-2 from an fp64 run
# of the same network after a few carried frames. So the exported graphs are judged against the fp64
# run: no worse than eager fp32 (ACCURACY x its error, plus SLACK), and close to eager fp32 (TOL).
# A wrong state, flow, gain or memory moves frames by 0.1 or more.
TOL, ACCURACY, SLACK = 2e-2, 2.0, 1e-3


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return random_tiny_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pth", SIZE)


@pytest.fixture(scope="module")
def net(weights):
    return load_model(weights, channels_last=False)


@pytest.fixture(scope="module")
def net64(weights):
    return load_model(weights, channels_last=False).double()


def _as_accurate_as_eager(ours, ref, ref64):
    """ours (exported, fp32) vs ref (eager fp32) and ref64 (eager fp64)."""
    assert ours.shape == ref.shape == ref64.shape
    eager_error = _max_diff(ref.double(), ref64)
    return _max_diff(ours, ref) <= TOL and _max_diff(ours.double(), ref64) <= ACCURACY * eager_error + SLACK


@pytest.fixture(scope="module")
def cli_exports(tmp_path_factory, weights):
    """`keep export` of the tiny checkpoint: {causal: folder}, window-wide and causal gains."""
    need("onnx")
    root = tmp_path_factory.mktemp("graphs")
    folders = {False: root / "window", True: root / "causal"}
    for causal, folder in folders.items():
        assert main(["export", "--weights", str(weights), "-o", str(folder)] + (["--causal"] if causal else [])) == 0
    return folders


@pytest.fixture(scope="module", params=[False, True], ids=["window", "causal"])
def exported(request, cli_exports):
    return cli_exports[request.param], request.param


def _open(folder, backend):
    need(backend)
    from keep.deploy.backends import ExportedNetwork
    return ExportedNetwork(folder, backend, threads=1)


def _max_diff(a, b):
    return float((a - b).abs().max())


def _state_tensors(state):
    ctx = state.gain_context
    tensors = [state.prev_input, state.prev_output] + [state.prev_feats[k] for k in sorted(state.prev_feats)]
    tensors += list(ctx.anchor) + list(ctx.prev)
    if ctx.temporal is not None:
        tensors += [t for pair in ctx.temporal for t in pair]
    return tensors


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_windows_with_carried_state_equal_eager(exported, net, net64, backend):
    folder, causal = exported
    graphs = _open(folder, backend)
    torch.manual_seed(1)
    x = torch.rand(2, 7, 3, SIZE, SIZE) * 2 - 1   # batch 2: the batch axis is dynamic
    ref_state = state = state64 = None
    with torch.inference_mode():
        for part in (slice(0, 3), slice(3, 4), slice(4, 7)):   # fresh window, one frame, carried window
            ref, ref_state = net.restore_window(x[:, part], ref_state, causal=causal)
            ref64, state64 = net64.restore_window(x[:, part].double(), state64, causal=causal)
            ours, state = graphs.restore_window(x[:, part], state)
            assert _as_accurate_as_eager(ours, ref, ref64)
        # the chosen codes of a fresh window (the graphs' `indices` output) are the network's
        codes = net(x[:, :3], return_intermediates=True, causal=causal).indices.numpy()
        graphs.restore_window(x[:, :3])
        assert (np.stack(graphs.last_indices, 1) == codes).mean() >= 0.99
        ref_tensors, our_tensors = _state_tensors(ref_state), _state_tensors(state)
        assert len(ref_tensors) == len(our_tensors)
        ref64_tensors = _state_tensors(state64)
        assert all(_as_accurate_as_eager(b, a, c) for a, b, c in zip(ref_tensors, our_tensors, ref64_tensors))
        assert state.frames_seen == 7
        # the image baseline: every frame alone
        ref, _ = net.restore_window(x[:, :3], propagate=False)
        ref64, _ = net64.restore_window(x[:, :3].double(), propagate=False)
        assert _as_accurate_as_eager(graphs.restore_window(x[:, :3], propagate=False)[0], ref, ref64)


def test_restore_frame_stream_equals_eager(exported, net, net64):
    folder, causal = exported
    graphs = _open(folder, "onnxruntime")
    torch.manual_seed(2)
    frames = torch.rand(10, 1, 3, SIZE, SIZE) * 2 - 1   # past the causal window (8): the cache rolls
    if not causal:
        with pytest.raises(ValueError, match="causal"):
            graphs.restore_frame(frames[0])
        return
    ref_state = state = state64 = None
    with torch.inference_mode():
        for frame in frames:
            ref, ref_state = net.restore_frame(frame, ref_state)
            ref64, state64 = net64.restore_frame(frame.double(), state64)
            ours, state = graphs.restore_frame(frame, state)
            assert _as_accurate_as_eager(ours, ref, ref64)
    assert state.gain_context.temporal[0][0].shape[1] == net.kalman_filter.window - 1


def test_keep_export_cli_writes_atomically_and_never_over_user_files(tmp_path, cli_exports, weights, capsys):
    import shutil
    from keep.weights import sha256_of
    for causal, out in cli_exports.items():
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["checkpoint_sha256"] == sha256_of(weights) and manifest["causal"] is causal
        assert manifest["precision"] == "fp32" and manifest["opset"] == 17
        assert sorted(manifest["graphs"]) == sorted(p.stem for p in out.glob("*.onnx"))
        step = manifest["graphs"]["gains_step"]["inputs"]
        assert step["z_obs"][:2] == ["batch", "window"] and ("key_0" in step) is causal
        assert causal is False or step["key_0"][1] == "cached"
    assert sorted(p.name for p in cli_exports[True].parent.iterdir()) == ["causal", "window"]   # no temporary left
    # an existing folder: refused without --overwrite; a user's folder refused even with it
    out = tmp_path / "graphs"
    shutil.copytree(cli_exports[True], out)
    assert main(["export", "--weights", str(weights), "-o", str(out)]) == 1
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert main(["export", "--weights", str(weights), "-o", str(user), "--overwrite"]) == 1
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("keep export: error:") for line in err)
    # an earlier export is replaced by --overwrite
    assert json.loads((out / "manifest.json").read_text())["causal"] is True
    assert main(["export", "--weights", str(weights), "-o", str(out), "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["causal"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graphs", "mine"]


def test_restore_backend_flag_same_faces_cached_graphs(tmp_path, weights, capsys):
    need("onnxruntime")
    import cv2
    from keep.weights import sha256_of
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(4):   # a slowly moving pattern, so flows and the Kalman update matter
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.roll(base, i, axis=1))

    def restore(backend, run=""):
        out = tmp_path / f"{backend}{run}"
        assert main(["restore", str(frames), "-o", str(out), "--weights", str(weights), "--aligned", "--window", "3",
                     "--no-progress", "--save-faces", "--backend", backend]) == 0
        return [cv2.imread(str(p)) for p in sorted((out / "frames" / "restored_faces").glob("*.png"))], \
            capsys.readouterr().out

    ref, _ = restore("torch")
    ours, summary = restore("onnxruntime")
    assert len(ours) == 4 and max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(ref, ours)) <= 1
    assert "onnxruntime" in summary and "CPUExecutionProvider" in summary and "fp32" in summary
    cache = weights.parent / f"{weights.name}.onnx"
    sets = [p for p in cache.iterdir() if p.is_dir()]
    assert len(sets) == 1 and sets[0].name.startswith(sha256_of(weights)[:16])
    assert "exported to" in summary
    _, again = restore("onnxruntime", "again")   # second use: the cached set, no new export
    assert "exported to" not in again and [p for p in cache.iterdir() if p.is_dir()] == sets


def test_missing_backend_is_one_line_naming_the_extra(tmp_path, weights, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)   # import openvino -> ImportError
    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2
    cv2.imwrite(str(frames / "0.png"), np.zeros((SIZE, SIZE, 3), np.uint8))
    assert main(["restore", str(frames), "-o", str(tmp_path / "o"), "--weights", str(weights), "--aligned",
                 "--no-progress", "--backend", "openvino"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '.[openvino]' in err[0]
    assert not (tmp_path / "o").exists()


def test_help_lists_the_backends(capsys):
    for command in ("restore", "live"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--backend {torch,onnxruntime,openvino}" in capsys.readouterr().out


def _doc_snippet() -> str:
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    block = text.split("<!-- numpy-loop -->", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def test_docs_numpy_loop_runs_without_torch_and_equals_eager(cli_exports, net, tmp_path):
    """The loop of docs/deploy.md, run as written in a process where torch and keep cannot be imported,
    restores a stream like the eager network's restore_frame."""
    import ast
    import subprocess
    import sys
    need("onnxruntime")
    snippet = _doc_snippet()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(snippet))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    assert imported == {"json", "numpy", "onnxruntime"}
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    crops = np.stack([np.roll(base, 2 * i, axis=0) for i in range(9)])   # 9 frames: the cache rolls
    np.save(tmp_path / "crops.npy", crops)
    driver = (
        "import sys\nsys.modules['torch'] = None\nsys.modules['keep'] = None\n"   # any import of them fails
        + snippet
        + f"\ncrops = np.load({str(tmp_path / 'crops.npy')!r})\n"
        + f"stream = KeepStream({str(cli_exports[True])!r})\n"
        + f"np.save({str(tmp_path / 'out.npy')!r}, np.stack([stream.restore(c) for c in crops]))\n")
    subprocess.run([sys.executable, "-c", driver], check=True, cwd=tmp_path)
    ours = np.load(tmp_path / "out.npy")
    state, ref = None, []
    with torch.inference_mode():
        for crop in crops:
            x = torch.from_numpy(crop).permute(2, 0, 1).float().div(127.5).sub(1.0)[None]
            y, state = net.restore_frame(x, state)
            ref.append(y[0].clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).numpy())
    diff = np.abs(ours.astype(int) - np.stack(ref).astype(int))
    assert ours.shape == crops.shape and diff.max() <= 2 and diff.mean() < 0.05


def test_live_backend_flag_restores_like_torch(tmp_path, capsys):
    """keep live --backend onnxruntime: causal graphs, the same stream as the eager network (after x264)."""
    need("onnxruntime")
    from shared_material import VIDEOS, require
    from keep.io import open_source
    clip = require(VIDEOS / "synthetic_1.mp4")   # aligned 128 px faces: a 128 px network, no resize
    weights = random_tiny_checkpoint(tmp_path / "tiny128.pth", 128)
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.mp4"
        assert main(["live", str(clip), "-o", str(out), "--aligned", "--max-frames", "5", "--weights", str(weights),
                     "--device", "cpu", "--threads", "1", "--no-progress", "--backend", backend]) == 0
        with open_source(out) as source:
            outputs[backend] = [f.image.astype(int) for f in source]
    assert "onnxruntime" in capsys.readouterr().out and "causal" in str(list((weights.parent / f"{weights.name}.onnx").iterdir()))
    assert len(outputs["torch"]) == len(outputs["onnxruntime"]) == 5
    assert max(np.abs(a - b).mean() for a, b in zip(outputs["torch"], outputs["onnxruntime"])) < 1.0
