"""``keep download``: the listing shows what the README promises (state, sha256, file, URL) in columns
that line up, and a file already on disk is verified before it is reported (issues 8 and 15).

Nothing is fetched: the registered test file is served from a local ``file://`` URL.
"""
import hashlib

import pytest

from keep.cli import main as keep_main
from keep.weights import WEIGHTS, WeightFile

PAYLOAD = b"KEEP test payload" * 1000


@pytest.fixture
def registered(monkeypatch, tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    item = WeightFile("test-file", source.as_uri(), "test-file.bin", "test",
                      hashlib.sha256(PAYLOAD).hexdigest()[:16], "a test file")
    monkeypatch.setitem(WEIGHTS, item.name, item)
    return item, tmp_path / "weights"


def _listing(capsys, root):
    assert keep_main(["download", "--list", "--dir", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.strip().startswith("NAME"))
    rows = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()[0] in WEIGHTS}
    return header, rows


def test_list_shows_state_sha256_file_and_url_in_aligned_columns(registered, capsys):
    item, root = registered
    header, rows = _listing(capsys, root)
    assert set(rows) == set(WEIGHTS)
    row = rows["test-file"]
    assert row.split()[1:] == ["missing", item.sha256, "test/test-file.bin", item.url]
    for column in ("STATE", "SHA256", "FILE", "URL"):  # every row's cell starts under its header
        start = header.index(column)
        for name, line in rows.items():
            assert line[start - 1] == " " and line[start] != " ", (column, name)
    for name, entry in WEIGHTS.items():
        if entry.published:
            assert entry.url in rows[name]


def test_truncated_file_is_listed_as_wrong_and_not_reported_as_present(registered, capsys):
    item, root = registered
    path = item.path(root)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD[:1000])  # an interrupted copy
    _, rows = _listing(capsys, root)
    assert rows["test-file"].split()[1:3] == ["sha256", "mismatch"]
    # `keep download NAME` checks the file on disk instead of trusting it: exit 1, what to do
    assert keep_main(["download", "test-file", "--dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "keep download test-file --force" in err
    assert path.read_bytes() == PAYLOAD[:1000]  # nothing replaced without --force
    # --force fetches a verified copy and replaces the bad one
    assert keep_main(["download", "test-file", "--force", "--dir", str(root)]) == 0
    assert path.read_bytes() == PAYLOAD
    _, rows = _listing(capsys, root)
    assert rows["test-file"].split()[1] == "ok"


def test_truncated_torch_file_without_digest_is_incomplete(monkeypatch, tmp_path, capsys):
    import torch
    full = tmp_path / "full.pth"
    torch.save({"w": torch.zeros(1000)}, full)
    item = WeightFile("nodigest", full.as_uri(), "nodigest.pth", "test", "", "no published digest")
    monkeypatch.setitem(WEIGHTS, item.name, item)
    root = tmp_path / "weights"
    path = item.path(root)
    path.parent.mkdir(parents=True)
    path.write_bytes(full.read_bytes()[:2000])
    _, rows = _listing(capsys, root)
    assert rows["nodigest"].split()[1] == "incomplete"
    assert keep_main(["download", "nodigest", "--dir", str(root)]) == 1
    path.write_bytes(full.read_bytes())
    _, rows = _listing(capsys, root)
    assert rows["nodigest"].split()[1] == "unverified"
    assert keep_main(["download", "nodigest", "--dir", str(root)]) == 0
