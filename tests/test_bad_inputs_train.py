"""Bad inputs to `keep train`: each case ends in a one-line message and exit 1 or 2, never a traceback.

One row per case (issue 8, items 6, 8, 9, 10; issue 20); add rows as cases are found. Each row prepares a
run folder, returns the `keep train` arguments, the exit code, a phrase the message must contain and,
optionally, a check run afterwards.
"""
import errno
import os
import socket
from pathlib import Path

import pytest
import torch

from hostile_files import inflating_checkpoint
from keep.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY1 = REPO / "configs" / "tiny_stage1.yaml"


def _args(tmp, *sets, config=TINY1):
    return ["train", "-c", str(config), "--set", f"output_dir={tmp / 'runs'}", "--set", "data.val=null",
            "--set", "iters=2", "--set", "save_every=1", *[x for s in sets for x in ("--set", s)]]


def malformed_yaml(tmp):
    bad = tmp / "bad.yaml"
    bad.write_text("kind: train\nnet: {type: VQGAN\nstage: 1\n")
    return ["train", "-c", str(bad)], 2, "not valid YAML"


def missing_config(tmp):
    return ["train", "-c", str(tmp / "nope.yaml")], 2, "not found"


def unknown_net_type(tmp):
    return _args(tmp, "net.type=NoSuchNet"), 1, "unknown arch"


def bad_arch_argument(tmp):
    return _args(tmp, "net.nff=8"), 1, "bad arguments"


def absurd_size(tmp):
    return _args(tmp, "net.nf=1000000"), 1, "G parameters"


def init_with_foreign_keys(tmp):
    path = tmp / "foreign.pth"
    torch.save({"params": {"some.other.weight": torch.zeros(3)}}, path)
    return _args(tmp, f"init=[{{path: {path}}}]"), 1, "not in the network"


def truncated_init(tmp):
    path = tmp / "trunc.pth"
    torch.save({"params": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    return _args(tmp, f"init=[{{path: {path}}}]"), 1, "truncated or corrupt"


def inflating_init(tmp):
    path = inflating_checkpoint(tmp / "bomb.pth", 8 << 20)   # 8 MB of pickle in a 9 KB file
    return _args(tmp, f"init=[{{path: {path}}}]"), 1, "is compressed (zip method 8)"


def html_page_as_init(tmp):
    path = tmp / "page.pth"
    path.write_text("<!DOCTYPE html><html><body>404: Not Found</body></html>")
    return _args(tmp, f"init=[{{path: {path}}}]"), 1, "is an HTML page"


def infinite_learning_rate(tmp):
    return _args(tmp, "optim.lr=.inf"), 2, "optim.lr: expected a finite number >= 0, got inf"


def loss_turns_nan(tmp):
    # step 1's update (lr 1e30) sends the weights to ~1e30: step 2's loss is NaN
    return _args(tmp, "optim.lr=1e30", "iters=3"), 1, "step 2: non-finite training (l1=nan"


def malicious_resume(tmp):
    path = tmp / "evil.pth"
    torch.save({"format": "keep-train-v1", "payload": os.getcwd}, path)  # a pickled function, not a tensor
    return _args(tmp) + ["--resume", str(path)], 1, "refused"


def resume_with_changed_net(tmp):
    assert main(_args(tmp)) == 0
    return _args(tmp, "net.nf=4") + ["--resume"], 1, "config changed"


def resume_foreign_file(tmp):
    path = tmp / "plain.pth"
    torch.save({"w": torch.zeros(2)}, path)
    return _args(tmp) + ["--resume", str(path)], 1, "not a KEEP training checkpoint"


def run_folder_in_use(tmp):
    """Another training writes this run folder now (pid 1 always runs): refused (keep/io/outputs.py)."""
    run = tmp / "runs" / "tiny_stage1"
    run.mkdir(parents=True)
    (run / ".keep-lock").write_text(f"1 {socket.gethostname()} keep train\n")
    return _args(tmp), 1, "being written by keep train (pid 1)"


def _data_root(tmp):
    """A folder of training clips (one clip, one frame) and a check that the run left it byte for byte as
    it was: a run folder inside it would write checkpoints into the user's data (keep/io/outputs.py)."""
    frame = tmp / "data" / "clip_a" / "00000000.png"
    frame.parent.mkdir(parents=True)
    frame.write_bytes(b"the user's frame")

    def untouched():
        assert sorted(p.relative_to(tmp) for p in (tmp / "data").rglob("*")) == \
            [Path("data/clip_a"), Path("data/clip_a/00000000.png")]
        assert frame.read_bytes() == b"the user's frame"
    return tmp / "data", untouched


def run_folder_inside_the_data(tmp):
    data, untouched = _data_root(tmp)
    argv = _args(tmp, "data.train.procedural=null", f"data.train.root={data}", f"output_dir={data}")
    return argv, 1, "lies inside the input", untouched


def run_folder_is_the_data(tmp):
    data, untouched = _data_root(tmp)
    argv = _args(tmp, "data.train.procedural=null", f"data.train.root={data}", f"output_dir={tmp}", "name=data")
    return argv, 1, "would replace the input", untouched


CASES = [malformed_yaml, missing_config, unknown_net_type, bad_arch_argument, absurd_size, init_with_foreign_keys,
         truncated_init, malicious_resume, resume_with_changed_net, resume_foreign_file, run_folder_in_use,
         inflating_init, html_page_as_init, infinite_learning_rate, loss_turns_nan, run_folder_inside_the_data,
         run_folder_is_the_data]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_is_a_clean_error(case, tmp_path, capsys, one_thread):
    argv, code, phrase, *check = case(tmp_path)   # a fourth element: a check run afterwards
    capsys.readouterr()
    assert main(argv) == code  # an uncaught exception (a traceback) fails here
    err = capsys.readouterr().err
    assert phrase.lower() in err.lower(), err
    assert "Traceback" not in err
    for extra in check:
        extra()


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys, one_thread):
    assert main(_args(tmp_path)) == 0
    ckpts = sorted((tmp_path / "runs" / "tiny_stage1" / "checkpoints").glob("step_*.pth"))
    assert [p.name for p in ckpts] == ["step_00000001.pth", "step_00000002.pth"]
    ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:500])
    (tmp_path / "runs" / "tiny_stage1" / "export.pth").unlink()
    capsys.readouterr()
    assert main(_args(tmp_path) + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "step_00000002.pth" in err and "falling back" in err
    assert torch.load(ckpts[-1], weights_only=True)["step"] == 2  # retrained and rewritten


def test_resume_after_a_crash_before_the_export_writes_it(tmp_path, one_thread):
    assert main(_args(tmp_path)) == 0
    export = tmp_path / "runs" / "tiny_stage1" / "export.pth"
    export.unlink()  # the crash: last checkpoint written, export not
    assert main(_args(tmp_path) + ["--resume"]) == 0
    assert export.is_file() and torch.load(export, weights_only=True)["arch"]["type"] == "VQGAN"


def test_stale_temporaries_of_a_killed_save_are_removed(tmp_path, one_thread):
    ckpt_dir = tmp_path / "runs" / "tiny_stage1" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    stale = ckpt_dir / ".step_00000001.pth.tmp999999999"  # no such process
    stale.write_bytes(b"half")
    live = ckpt_dir / f".step_00000001.pth.tmp{os.getppid()}"  # a live process: left alone
    live.write_bytes(b"half")
    assert main(_args(tmp_path)) == 0
    assert not stale.exists() and live.exists()


def test_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, capsys, monkeypatch, one_thread):
    """ENOSPC in the middle of a checkpoint save: one line, exit 1, the half-written file removed."""
    from keep.engine import checkpoint

    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    capsys.readouterr()
    assert main(_args(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "the disk is full" in err and "--resume" in err and "Traceback" not in err, err
    run = tmp_path / "runs" / "tiny_stage1"
    assert not [p.name for p in run.rglob("*tmp*")] and not (run / ".keep-lock").exists()
