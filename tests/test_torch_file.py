"""Checkpoints are checked before they are unpickled (keep/torch_file.py): a hostile file costs no more
memory than its size, on every path that reads a .pth (restore's load_model, training init/resume, the
doctor, the demo's upload, the metrics); legacy torch files still load; an empty file or a saved HTML
page is never taken for a present checkpoint; the doctor shows PyTorch's whole refusal."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hostile_files import inflating_checkpoint, lying_sizes_checkpoint
from keep import torch_file
from keep.checkpoint import CheckpointError, load_checkpoint
from keep.torch_file import UnsafeCheckpoint, inspect_torch_file, load_torch_file

REPO = Path(__file__).resolve().parents[1]
INFLATED = 64 << 20      # what the hostile file unpacks to (torch would hold it twice: ~190 MB)


def _legacy_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def test_compressed_member_is_refused_in_one_line(tmp_path):
    path = inflating_checkpoint(tmp_path / "bomb.pth", 1 << 20)
    with pytest.raises(UnsafeCheckpoint) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and "refused before reading it" in message
    assert "data.pkl is compressed (zip method 8), to 1,048,584 bytes" in message


def test_members_larger_than_the_file_are_refused(tmp_path):
    path = lying_sizes_checkpoint(tmp_path / "liar.pth")
    with pytest.raises(UnsafeCheckpoint, match="add up to more than the file's"):
        inspect_torch_file(path)


def test_oversized_pickle_is_refused(tmp_path, monkeypatch):
    zip_path, legacy_path = tmp_path / "z.pth", tmp_path / "l.pth"
    state = {f"w{i}": torch.zeros(1) for i in range(50)}
    torch.save(state, zip_path)
    legacy_path.write_bytes(_legacy_bytes(state))
    assert inspect_torch_file(zip_path).pickle_bytes > 2000 and inspect_torch_file(legacy_path).pickle_bytes > 2000
    monkeypatch.setattr(torch_file, "MAX_PICKLE_BYTES", 2000)
    with pytest.raises(UnsafeCheckpoint, match="its data.pkl is .* bytes .limit 2,000"):
        load_torch_file(zip_path)
    with pytest.raises(UnsafeCheckpoint, match="its pickles take more than 2,000 bytes"):
        load_torch_file(legacy_path)


def test_legacy_and_zip_files_load_as_torch_loads_them(tmp_path):
    state = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    (tmp_path / "legacy.pth").write_bytes(_legacy_bytes({"params": state}))
    torch.save({"params": state}, tmp_path / "zip.pth")
    for name, fmt in (("legacy.pth", "legacy"), ("zip.pth", "zip")):
        assert inspect_torch_file(tmp_path / name).format == fmt
        loaded, arch = load_checkpoint(tmp_path / name)
        assert arch is None and loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("content,phrase", [(b"", "is empty (0 bytes)"),
                                            (b"<!DOCTYPE html>\n<html><title>404</title></html>", "is an HTML page"),
                                            (b"Not Found", "is a text file")])
def test_empty_or_html_file_is_not_a_present_checkpoint(tmp_path, monkeypatch, capsys, content, phrase):
    from keep.cli import main
    from keep.weights import WeightsNotFoundError, check_file, get_weight

    monkeypatch.setenv("KEEP_WEIGHTS_DIR", str(tmp_path))
    path = tmp_path / "facelib" / "parsing_parsenet.pth"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(phrase)):
        load_checkpoint(path)
    if phrase == "is a text file":   # present (a file that fails its load), not a failed download
        return
    status = check_file("parsenet")
    assert status.state == "not a checkpoint" and not status.usable and phrase in status.detail
    with pytest.raises(WeightsNotFoundError, match=re.escape(phrase) + ".*keep download parsenet --force"):
        get_weight("parsenet", download=False)
    # keep download --list names the state; keep doctor does not count the file as present
    assert main(["download", "--list"]) == 0
    assert any(line.split()[:2] == ["parsenet", "not"] for line in capsys.readouterr().out.splitlines())
    assert main(["doctor", "--no-load", "--json"]) == 1
    row = next(r for r in json.loads(capsys.readouterr().out)["files"] if r["name"] == "parsenet")
    assert not row["present"] and phrase in row["problem"] and "keep download parsenet --force" in row["fix"]
    assert path.read_bytes() == content          # reported, never touched


def test_doctor_shows_pytorchs_whole_refusal(tmp_path, capsys):
    import os
    from keep.cli import main

    evil = tmp_path / "evil.pth"
    torch.save({"payload": os.getcwd}, evil)       # a pickled function, not a tensor
    with pytest.raises(Exception) as reference:    # PyTorch's own message: the independent reference
        torch.load(evil, weights_only=True)
    whole = " ".join(str(reference.value).split())
    assert len(whole) > 300                        # the old cut (300 characters) would lose its end
    assert main(["doctor", "--weights", str(evil), "--dir", str(tmp_path / "none")]) == 1
    assert whole in capsys.readouterr().out


def test_demo_upload_is_refused_without_server_paths(tmp_path):
    from keep.demo.job import DemoSettings, ModelCache, RestoreJob
    from keep.demo.workspace import Limits
    from keep.io.samples import write_sample_clip

    server = tmp_path / "srv" / "gradio" / "0123abcd"
    server.mkdir(parents=True)
    bomb = inflating_checkpoint(server / "upload.pth", 1 << 20)
    clip = write_sample_clip([np.full((32, 32, 3), 90, np.uint8)] * 2, server / "clip.mp4", tone_hz=None)
    run = tmp_path / "run"
    run.mkdir()
    job = RestoreJob(str(clip), DemoSettings(checkpoint=str(bomb), aligned=True), run, Limits(),
                     ModelCache(download=False), device="cpu").run()
    assert job.state == "failed" and "upload.pth: refused before reading it" in job.error, job.error
    assert str(tmp_path) not in job.error and "/srv/" not in job.error


_MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    sys.path[:0] = [{repo!r}, {tests!r}]
    import torch
    import keep.api, keep.doctor, keep.engine.checkpoint, keep.torch_file
    from hostile_files import inflating_checkpoint
    folder = Path(sys.argv[1])
    bomb = inflating_checkpoint(folder / "bomb.pth", {inflated})
    legacy = folder / "legacy.pth"
    import io
    buf = io.BytesIO()
    torch.save({{"w": torch.zeros(3)}}, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    at = raw.find(b"X\\x03\\x00\\x00\\x00cpu") + 10      # the storage's declared size: 3 -> 500 M floats
    assert raw[at:at + 2] == b"K\\x03"
    legacy.write_bytes(raw[:at] + b"J" + (500_000_000).to_bytes(4, "little") + raw[at + 2:])
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    calls = {{
        "load_model": lambda p: keep.api.load_model(p, device="cpu"),
        "training init": lambda p: keep.engine.checkpoint.safe_torch_load(p, "init[0] file"),
        "doctor": lambda p: keep.doctor.check_path(p, load=True),
    }}
    out = {{}}
    for path in (bomb, legacy):
        for name, call in calls.items():
            before = peak()
            try:
                result = call(path)
                error = getattr(result, "load_detail", "no error")
            except Exception as err:
                error = str(err)
            out[f"{{path.name}} {{name}}"] = [peak() - before, path.stat().st_size, error[:200]]
    print(json.dumps(out))
""")


def test_hostile_files_cost_no_more_memory_than_their_size(tmp_path):
    """Peak resident memory (ru_maxrss, which sees torch's C++ allocations) of a fresh process: a 64 KB
    file that inflates to 64 MB (a compressed data.pkl), and a 0.4 KB legacy file declaring a 2 GB
    storage, through restore's, training's and the doctor's loaders: each refused, each costing less
    than 3x its size plus 16 MB of slack (unguarded, the first costs ~190 MB)."""
    script = _MEMORY_PROBE.format(repo=str(REPO), tests=str(REPO / "tests"), inflated=INFLATED)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 6
    for case, (grown, size, error) in results.items():
        assert grown < 3 * size + (16 << 20), f"{case}: {grown / 2**20:.0f} MB for a {size:,}-byte file ({error})"
        assert error != "no error" and ("refused before reading it" in error or "wrong byte size" in error), \
            f"{case}: {error}"
