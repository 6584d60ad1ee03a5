"""``keep doctor`` (issue 9, item 4): a first-run check of every registered pretrained file.

The files here have the real networks' keys and shapes in the release layouts, but each tensor is a
stride-0 view of one value (``torch.save`` keeps the one-element storage), so a "158 M value" KEEP file
is a few hundred KB and loads strictly through the same loaders ``keep restore`` uses. Nothing is
downloaded: ``urlopen`` raises in-process, and the subprocess test checks its weights folder stays empty.
"""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

from keep.cli import main as keep_main
from keep.weights import WEIGHTS
from tests.shared_material import CONFORMANCE, require

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NEEDED = ("keep-v1", "retinaface-resnet50")      # --detector retinaface --mask auto
DEFAULT_FILES = DEFAULT_NEEDED + ("parsenet",)            # ParseNet: optional (square mask without it)


def shell(state, value: float = 0.5):
    """Same keys, shapes and dtypes; every tensor a broadcast view of one value (a tiny file)."""
    return {k: torch.full((), value, dtype=v.dtype).expand(v.shape) for k, v in state.items()}


def on_meta(build):
    with torch.device("meta"):
        return build().state_dict()


@pytest.fixture(scope="module")
def layouts(one_thread):
    """The release layout of each default-pipeline file: KEEP v1.0.0 ``{'params_ema': ...}`` with
    ``cft.*`` / ``cfa.*`` names, RetinaFace's raw state dict with ``module.`` prefixes, ParseNet raw."""
    from facexlib.parsing.parsenet import ParseNet
    from keep.api import config_kwargs
    from keep.archs.keep_net import KEEP
    from keep.checkpoint import to_v1_names
    from keep.face.detect import build_retinaface
    return {
        "keep-v1": {"params_ema": shell(to_v1_names(on_meta(lambda: KEEP(**config_kwargs("keep-v1")))))},
        "retinaface-resnet50": {"module." + k: v for k, v in shell(build_retinaface().state_dict()).items()},
        "parsenet": shell(on_meta(lambda: ParseNet(in_size=512, out_size=512, parsing_ch=19))),
    }


@pytest.fixture(autouse=True)
def no_download(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))   # LPIPS's backbones: torch hub's cache
    def refuse(*args, **kwargs):
        raise AssertionError("keep doctor tried to download")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def put(root: Path, name: str, obj) -> Path:
    path = WEIGHTS[name].path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def trust(monkeypatch, root: Path, name: str) -> None:
    """Register the file's own digest, as if it were the published one."""
    digest = hashlib.sha256(WEIGHTS[name].path(root).read_bytes()).hexdigest()
    monkeypatch.setitem(WEIGHTS, name, dataclasses.replace(WEIGHTS[name], sha256=digest))


def doctor(capsys, *args):
    status = keep_main(["doctor", *map(str, args)])
    return status, capsys.readouterr().out


def rows_of(out: str):
    lines = out.splitlines()
    header = next(line for line in lines if line.strip().startswith("NAME"))
    rows = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()[0] in WEIGHTS}
    return header, rows


def problems(out: str):
    """Problem lines under the 'files keep restore needs' heading, by name."""
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if "problem(s) with files keep restore needs" in line), None)
    found = {}
    for line in lines[start + 1:] if start is not None else []:
        if not line.startswith("  - "):
            break
        name, text = line[4:].split(": ", 1)
        found[name] = text
    return found


def test_every_registered_file_has_a_known_use_and_loader():
    from keep.doctor import USES
    assert set(USES) == set(WEIGHTS)


def test_empty_folder_fails_naming_every_default_file_and_the_command_to_fix_it(tmp_path):
    root = tmp_path / "weights"
    root.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KEEP_WEIGHTS_DIR": str(tmp_path / "elsewhere"),
           "TORCH_HOME": str(tmp_path / "torch-home")}
    done = subprocess.run([sys.executable, "-m", "keep.cli", "doctor", "--weights-dir", str(root)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    found = problems(done.stdout)
    assert set(found) == set(DEFAULT_NEEDED)          # optional files missing are no problem
    for name in DEFAULT_NEEDED:
        assert found[name].startswith("missing") and f"keep download {name}`" in found[name]
        assert str(WEIGHTS[name].path(root)) in found[name]   # where to put it by hand
    assert "or restore with --detector dlib" in found["retinaface-resnet50"]
    assert "  - parsenet: without it keep restore pastes faces back with a feathered square mask" in done.stdout
    _, rows = rows_of(done.stdout)
    assert set(rows) == set(WEIGHTS)
    assert all("missing" in row.split() for row in rows.values())
    assert list(root.iterdir()) == []                  # nothing downloaded, nothing written


def test_all_default_files_present_verified_and_loading_exit_0(layouts, tmp_path, monkeypatch, capsys):
    root = tmp_path / "w"
    for name, obj in layouts.items():
        put(root, name, obj)
    trust(monkeypatch, root, "keep-v1")
    trust(monkeypatch, root, "retinaface-resnet50")    # parsenet keeps "no digest": loading verifies it
    status, out = doctor(capsys, "--dir", root)
    assert status == 0, out
    header, rows = rows_of(out)
    keys = {"keep-v1": 896, "retinaface-resnet50": 456, "parsenet": 238}  # the release files' key counts
    for name in DEFAULT_FILES:
        cells = rows[name].split()
        assert cells[1] == ("optional" if name == "parsenet" else "yes") and "present" in cells
        assert f"ok ({keys[name]} keys)" in rows[name]
    assert " ok " in rows["keep-v1"] and "no digest recorded" in rows["parsenet"]
    for column in ("NEEDED", "USED BY", "FILE", "SHA256", "STRICT LOAD", "PATH"):  # aligned under the header
        start = header.index(column)
        for line in rows.values():
            assert line[start - 1] == " " and line[start] != " ", (column, line)
    assert problems(out) == {}
    assert "ready: everything keep restore --detector retinaface --mask auto needs is present and verified" in out


def test_correct_layout_with_wrong_sha256_is_a_mismatch_with_the_fix(layouts, tmp_path, capsys):
    root = tmp_path / "w"
    for name, obj in layouts.items():
        put(root, name, obj)
    # the real registry: keep-v1 must have sha256 b76feb75..., a file of the right layout does not
    status, out = doctor(capsys, "--dir", root, "--no-load")
    assert status == 1
    _, rows = rows_of(out)
    assert "sha256 mismatch" in rows["keep-v1"] and "skipped" in rows["keep-v1"]
    found = problems(out)
    assert set(found) == {"keep-v1"}
    actual = hashlib.sha256(WEIGHTS["keep-v1"].path(root).read_bytes()).hexdigest()
    assert found["keep-v1"].startswith(f"sha256 mismatch: {actual[:16]}... is not the registered b76feb75")
    assert "keep download keep-v1 --force" in found["keep-v1"]
    # --no-load leaves the digest-less files unverified, and says so
    assert "not verified (--no-load; no published digest): retinaface-resnet50, parsenet" in out


def test_file_whose_keys_do_not_fit_reports_missing_and_unexpected_counts(layouts, tmp_path, monkeypatch, capsys):
    from keep.metrics.identity import ArcFaceResNet18
    root = tmp_path / "w"
    parse = dict(layouts["parsenet"])
    parse.pop(sorted(parse)[0])
    parse["extra.weight"] = torch.zeros(2)
    parse["extra.bias"] = torch.zeros(2)
    wide = sorted(parse)[5]
    parse[wide] = torch.zeros(tuple(parse[wide].shape) + (2,))
    put(root, "parsenet", parse)
    # an optional file through the other error format (torch's own strict load_state_dict)
    arc = shell(on_meta(ArcFaceResNet18))
    arc["fc6.weight"] = arc.pop("fc5.weight")
    arc["bn5.weight"] = torch.zeros(3)
    put(root, "arcface-resnet18", arc)
    status, out = doctor(capsys, "--dir", root)
    assert status == 1
    _, rows = rows_of(out)
    assert "strict load: 1 missing, 2 unexpected, 1 wrongly shaped keys" in rows["parsenet"]
    assert "strict load: 1 missing, 1 unexpected, 1 wrongly shaped keys" in rows["arcface-resnet18"]
    found = problems(out)
    assert found["parsenet"].startswith("does not load into the network that uses it (strict load: 1 missing, "
                                        "2 unexpected, 1 wrongly shaped keys)")
    assert "keep download parsenet --force" in found["parsenet"]
    assert "arcface-resnet18" not in found                       # optional: listed apart
    assert "  - arcface-resnet18: does not load" in out.split("files this setup does not read, with problems")[1]
    status, out = doctor(capsys, "--dir", root, "--json")
    report = json.loads(out)
    files = {f["name"]: f for f in report["files"]}
    assert report["exit_status"] == status == 1
    assert (files["parsenet"]["missing_keys"], files["parsenet"]["unexpected_keys"],
            files["parsenet"]["wrong_shape_keys"]) == (1, 2, 1)
    assert (files["arcface-resnet18"]["missing_keys"], files["arcface-resnet18"]["unexpected_keys"]) == (1, 1)
    assert not files["parsenet"]["required"] and files["parsenet"]["optional"].startswith("without it")
    assert not files["arcface-resnet18"]["required"] and not files["arcface-resnet18"]["optional"]
    assert files["parsenet"]["sha256"] == hashlib.sha256(WEIGHTS["parsenet"].path(root).read_bytes()).hexdigest()
    assert files["keep-v1"]["present"] is False and files["keep-v1"]["fix"].startswith("run `keep download keep-v1`")


def test_nan_weights_and_unreadable_files_are_problems(layouts, tmp_path, capsys):
    root = tmp_path / "w"
    parse = dict(layouts["parsenet"])
    key = sorted(k for k, v in parse.items() if v.is_floating_point())[3]
    parse[key] = torch.full((), float("nan")).expand(parse[key].shape)
    put(root, "parsenet", parse)
    detector = WEIGHTS["retinaface-resnet50"].path(root)
    detector.write_bytes(b"<html>rate limited</html>")       # what a failed download by hand looks like
    status, out = doctor(capsys, "--dir", root)
    assert status == 1
    found = problems(out)
    assert f"1 tensors hold NaN or inf (e.g. {key})" in found["parsenet"]
    # an HTML page is not a present file (keep/file_kind.py): named for what it is, never loaded
    assert found["retinaface-resnet50"].startswith("the file there is an HTML page, not a checkpoint")
    assert "  HTML page  " in rows_of(out)[1]["retinaface-resnet50"]
    assert "keep download retinaface-resnet50 --force" in found["retinaface-resnet50"]
    # a zip-format file cut short (no digest to compare): incomplete, whatever loading would say
    path = WEIGHTS["parsenet"].path(root)
    path.write_bytes(path.read_bytes()[:5000])
    status, out = doctor(capsys, "--dir", root, "--no-load")
    assert status == 1 and problems(out)["parsenet"].startswith("incomplete: 5,000 bytes and no end of archive")


def test_a_file_that_cannot_be_read_is_a_problem_not_a_traceback(layouts, tmp_path, monkeypatch, capsys):
    import keep.doctor
    root = tmp_path / "w"
    put(root, "parsenet", layouts["parsenet"])

    def denied(path, *args):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(keep.doctor, "sha256_of", denied)
    status, out = doctor(capsys, "--dir", root)
    assert status == 1
    assert problems(out)["parsenet"].startswith("cannot be read (Permission denied); check the permissions of")


def from_manifest(name: str):
    """A file in the v1.0.0 release's layout, keys and shapes, from its key manifest (../shared)."""
    manifest = json.loads(require(CONFORMANCE / "v1" / name).read_text())
    assert manifest["file_layout"] == "{'params_ema': state_dict}"
    return {"params_ema": {k: torch.zeros((), dtype=getattr(torch, dtype)).expand(shape)
                           for k, shape, dtype in manifest["keys"]}}, len(manifest["keys"])


def test_release_layouts_asian_by_path_and_general_as_keep_v1(layouts, tmp_path, monkeypatch, capsys):
    asian, asian_keys = from_manifest("keep_v1_asian_keys.json")
    general, general_keys = from_manifest("keep_v1_general_keys.json")
    mine = tmp_path / "my_keep_asian.pth"
    torch.save(asian, mine)
    root = tmp_path / "w"
    for name in ("retinaface-resnet50", "parsenet"):
        put(root, name, layouts[name])
    status, out = doctor(capsys, "--dir", root, "--weights", mine)
    assert status == 0, out                  # keep-v1 is absent, but this run does not need it
    line = next(line for line in out.splitlines() if line.strip().startswith("--weights"))
    assert f"ok ({asian_keys} keys)" in line and "no digest recorded" in line and str(mine) in line
    assert rows_of(out)[1]["keep-v1"].split()[1] == "-"
    # the Asian file under the general configuration's name does not fit (CFT at 32..256, not 16..64)
    put(root, "keep-v1", asian)
    trust(monkeypatch, root, "keep-v1")
    status, out = doctor(capsys, "--dir", root)
    assert status == 1
    assert "does not load into the network that uses it (strict load: " in problems(out)["keep-v1"]
    # the general release's layout is what keep-v1 loads
    put(root, "keep-v1", general)
    trust(monkeypatch, root, "keep-v1")
    status, out = doctor(capsys, "--dir", root)
    assert status == 0, out
    assert f"ok ({general_keys} keys)" in rows_of(out)[1]["keep-v1"]


def test_require_makes_an_optional_file_needed_and_bad_names_are_one_line_errors(tmp_path, capsys):
    status, out = doctor(capsys, "--dir", tmp_path, "--require", "realesrgan-x2", "--no-load")
    assert status == 1 and "keep download realesrgan-x2`" in problems(out)["realesrgan-x2"]
    assert keep_main(["doctor", "--dir", str(tmp_path), "--require", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --require nope: not a registered file") and len(err.splitlines()) == 1
    assert keep_main(["doctor", "--dir", str(tmp_path), "--weights", "parsenet"]) == 2
    assert "not a KEEP network" in capsys.readouterr().err


def test_offline_dlib_user_with_only_the_keep_weights_is_ready(layouts, tmp_path, monkeypatch, capsys):
    """Issue 24: the setup `keep restore --detector dlib` runs with (KEEP weights only: dlib's models come
    from PyPI, ParseNet is optional under --mask auto) is "ready", exit 0; RetinaFace is not needed."""
    root = tmp_path / "w"
    put(root, "keep-v1", layouts["keep-v1"])
    trust(monkeypatch, root, "keep-v1")
    status, out = doctor(capsys, "--dir", root, "--detector", "dlib")
    assert status == 0, out
    assert "ready: everything keep restore --detector dlib --mask auto needs is present and verified" in out
    _, rows = rows_of(out)
    assert rows["keep-v1"].split()[1] == "yes"
    assert rows["retinaface-resnet50"].split()[1] == "-"          # the dlib setup does not read it
    assert rows["parsenet"].split()[1] == "optional"
    assert "  - parsenet: without it keep restore pastes faces back with a feathered square mask" in out
    dlib_row = next(line for line in out.splitlines() if line.strip().startswith("dlib-models"))
    assert "yes" in dlib_row.split() and "present" in dlib_row.split()
    # the same folder, the default detector: RetinaFace is needed, and the fix offers dlib
    status, out = doctor(capsys, "--dir", root)
    assert status == 1 and set(problems(out)) == {"retinaface-resnet50"}
    assert "or restore with --detector dlib" in problems(out)["retinaface-resnet50"]
    # --mask parse makes ParseNet needed; --mask square reads no ParseNet at all
    status, out = doctor(capsys, "--dir", root, "--detector", "dlib", "--mask", "parse")
    assert status == 1 and set(problems(out)) == {"parsenet"}
    status, out = doctor(capsys, "--dir", root, "--detector", "dlib", "--mask", "square", "--json")
    report = json.loads(out)
    files = {f["name"]: f for f in report["files"]}
    assert status == report["exit_status"] == 0
    assert report["setup"] == "keep restore --detector dlib --mask square"
    assert not files["parsenet"]["required"] and not files["parsenet"]["optional"]


def test_dlib_setup_without_its_models_is_not_ready(layouts, tmp_path, monkeypatch, capsys):
    import keep.restore.needs as needs
    root = tmp_path / "w"
    put(root, "keep-v1", layouts["keep-v1"])
    trust(monkeypatch, root, "keep-v1")
    monkeypatch.setattr(needs, "dlib_models_problem",
                        lambda: "the face-recognition-models package is not installed: pip install face-recognition-models")
    status, out = doctor(capsys, "--dir", root, "--detector", "dlib", "--no-load")
    assert status == 1
    assert problems(out) == {"dlib-models": "missing; the face-recognition-models package is not installed: "
                                            "pip install face-recognition-models"}


def test_doctor_and_restore_read_one_list_of_needs():
    """keep doctor's verdict and keep restore's pre-flight check come from restore_needs: the default setup
    needs the KEEP weights and RetinaFace, and reads ParseNet when present."""
    from keep.restore.needs import restore_needs
    needs = {n.name: n.required for n in restore_needs()}
    assert needs == {"keep-v1": True, "retinaface-resnet50": True, "parsenet": False}
    assert {n.name for n in restore_needs(detector="dlib", mask="square")} == {"keep-v1"}
    assert {n.name: n.required for n in restore_needs("x.pth", "dlib", "parse", bg_upsampler="realesrgan")} == \
        {"parsenet": True, "realesrgan-x2": True}
    assert restore_needs(aligned=True) == [n for n in restore_needs(aligned=True) if n.name == "keep-v1"]
