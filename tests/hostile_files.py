"""Files that torch.save never writes, built to test that they are refused before they cost memory."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import torch


def _members(obj) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src:
        return {name: src.read(name) for name in src.namelist()}


def inflating_checkpoint(dest: Path, inflated_bytes: int) -> Path:
    """A real torch.save zip whose ``data.pkl`` is replaced by a deflate-compressed pickle of one string
    of ``inflated_bytes`` bytes: ~1000x smaller on disk than in memory (torch inflates it, then unpickles
    it: twice its size). Written in 1 MiB chunks, so building it costs no memory."""
    members = _members({"w": torch.zeros(3)})
    chunk = b"a" * (1 << 20)
    with zipfile.ZipFile(dest, "w") as out:
        for name, data in members.items():
            if not name.endswith("data.pkl"):
                out.writestr(name, data)
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with out.open(info, "w", force_zip64=True) as member:
                member.write(b"\x80\x02X" + struct.pack("<I", inflated_bytes))
                left = inflated_bytes
                while left:
                    member.write(chunk[:min(left, len(chunk))])
                    left -= min(left, len(chunk))
                member.write(b".")
    return dest


def lying_sizes_checkpoint(dest: Path) -> Path:
    """A stored (uncompressed) torch zip whose directory claims a 4 GB data member."""
    members = _members({"w": torch.zeros(3)})
    with zipfile.ZipFile(dest, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)
    raw = bytearray(dest.read_bytes())
    # patch every central-directory entry of data/0: both size fields to 0xFFFFFFF0 (4 GB)
    start = 0
    while True:
        at = raw.find(b"PK\x01\x02", start)
        if at < 0:
            break
        name_len = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46:at + 46 + name_len].endswith(b"data/0"):
            struct.pack_into("<II", raw, at + 20, 0xFFFFFFF0, 0xFFFFFFF0)
        start = at + 4
    dest.write_bytes(bytes(raw))
    return dest
