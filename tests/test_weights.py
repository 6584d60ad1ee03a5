"""Weights registry and download: URL -> cache folder, sha256 check, atomic rename, offline errors.

Nothing is fetched from the internet: downloads read a local ``file://`` URL, and the offline case
points at a closed port on the loopback address.
"""
import hashlib

import pytest

from keep.cli import main as keep_main
from keep.weights import WEIGHTS, WeightFile, WeightsNotFoundError, get_weight, verify_weight


def _register(monkeypatch, tmp_path, sha256: str, url: str = "") -> WeightFile:
    source = tmp_path / "source.bin"
    source.write_bytes(b"KEEP test payload" * 1000)
    item = WeightFile("test-file", url or source.as_uri(), "test-file.bin", "test", sha256, "a test file")
    monkeypatch.setitem(WEIGHTS, item.name, item)
    return item


def test_the_three_keep_releases_are_registered_with_v1_general_as_default():
    keep_files = {name: item.filename for name, item in WEIGHTS.items() if item.subdir == "KEEP"}
    assert keep_files == {"keep-v1": "KEEP-b76feb75.pth", "keep-v1-asian": "KEEP_Asian-4765ebe0.pth",
                          "keep-v0.1": "KEEP-a1a14d46.pth"}
    for item in WEIGHTS.values():  # release names carry their sha256 prefix: the registry must agree
        if item.subdir == "KEEP":
            assert item.filename.split("-")[-1].split(".")[0] == item.sha256


def test_download_checks_sha256_and_renames_into_the_cache(monkeypatch, tmp_path):
    payload = b"KEEP test payload" * 1000
    _register(monkeypatch, tmp_path, hashlib.sha256(payload).hexdigest()[:8])
    root = tmp_path / "weights"
    path = get_weight("test-file", root=root, progress=False)
    assert path == root / "test" / "test-file.bin" and path.read_bytes() == payload
    assert verify_weight("test-file", root=root)
    assert not list(root.rglob("*.part"))
    assert get_weight("test-file", root=root, download=False) == path  # cached: no second download


def test_corrupt_download_is_refused_and_leaves_nothing(monkeypatch, tmp_path):
    _register(monkeypatch, tmp_path, "00000000")
    root = tmp_path / "weights"
    with pytest.raises(WeightsNotFoundError, match="does not match the expected 00000000"):
        get_weight("test-file", root=root, progress=False)
    assert not any(p.is_file() for p in root.rglob("*"))


def test_offline_error_names_the_file_the_url_and_where_to_put_it(monkeypatch, tmp_path):
    item = _register(monkeypatch, tmp_path, "", url="http://127.0.0.1:9/test-file.bin")
    root = tmp_path / "weights"
    with pytest.raises(WeightsNotFoundError) as err:
        get_weight("test-file", root=root, progress=False)
    message = str(err.value)
    assert "test-file.bin" in message and item.url in message and str(root / "test" / "test-file.bin") in message
    with pytest.raises(WeightsNotFoundError, match="is missing"):
        get_weight("test-file", root=root, download=False)


def test_unknown_name_lists_the_registered_files():
    with pytest.raises(KeyError, match="keep-v1"):
        get_weight("no-such-file")


def test_keep_download_command(monkeypatch, tmp_path, capsys):
    payload = b"KEEP test payload" * 1000
    _register(monkeypatch, tmp_path, hashlib.sha256(payload).hexdigest())
    root = tmp_path / "weights"
    assert keep_main(["download", "--list", "--dir", str(root)]) == 0
    listing = capsys.readouterr().out
    assert "test-file" in listing and "missing" in listing and "KEEP-b76feb75.pth" in listing
    assert keep_main(["download", "test-file", "--dir", str(root)]) == 0
    assert (root / "test" / "test-file.bin").read_bytes() == payload
    assert keep_main(["download", "no-such-file", "--dir", str(root)]) == 1
    assert "unknown weight file" in capsys.readouterr().err
