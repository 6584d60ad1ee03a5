"""Every ``.pth`` / ``.pt`` file is read through :func:`load_torch_file`: checked before it is unpickled.

``torch.load(weights_only=True)`` runs no code, but it still inflates what the file says: a 1 MB file
whose zip member ``data.pkl`` is deflate-compressed can unpack to 1 GB (and torch then unpickles that),
so a hostile checkpoint could cost gigabytes before any error. :func:`inspect_torch_file` reads only the
file's structure first and refuses, with a one-line message, what ``torch.save`` never writes:

* zip format (torch >= 1.6): the central directory is walked entry by entry (nothing inflated, at most
  the directory's own bytes in memory). ``torch.save`` stores every member uncompressed, so a compressed
  member, a member whose sizes disagree, members totalling more bytes than the file, a directory that
  lies outside the file, no ``data.pkl``, or a ``data.pkl`` over :data:`MAX_PICKLE_BYTES` is refused.
* legacy format (torch < 1.6, e.g. torchvision's ``vgg19-dcbb9e9d.pth``): accepted, because released
  files still use it. It holds no compression, so what is unpickled is at most the file's own bytes; its
  pickles are measured opcode by opcode (:mod:`pickletools`, which builds no object) and refused over
  :data:`MAX_PICKLE_BYTES`. Its storages are allocated at their declared size and then filled from the
  file; a size the file does not hold is refused by torch after the allocation, whose pages are never
  written (not resident: ``tests/test_torch_file.py`` measures it).
* anything else (an empty file, an HTML error page saved as the checkpoint, text) is named for what it
  is (:func:`sniff`), so a failed download is not taken for a present file.

Sizes, not content, are checked here: the weights-only unpickler then refuses anything but tensors and
plain values, and :mod:`keep.checkpoint` checks keys, shapes and the size of a described network.
"""
from __future__ import annotations

import io
import pickletools
import re
import struct
from pathlib import Path
from typing import NamedTuple, Optional, Union

from keep.checkpoint import CheckpointError
from keep.file_kind import NOT_A_CHECKPOINT, sniff

#: Largest pickle accepted (zip ``data.pkl`` or the pickles of a legacy file). A state dict's pickle
#: takes ~200 bytes per tensor (the released KEEP: 0.3 MB for 2,3xx tensors), so 64 MiB is ~300,000
#: tensors; unpickling costs a small multiple of the pickle's size.
MAX_PICKLE_BYTES = 64 << 20

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"


class UnsafeCheckpoint(CheckpointError):
    """A file refused before it is unpickled: its structure is not what ``torch.save`` writes."""


class TorchFileInfo(NamedTuple):
    format: str          # "zip" | "legacy"
    size: int            # bytes on disk
    pickle_bytes: int    # data.pkl (zip) or all pickles (legacy)
    members: int         # zip members (0 for legacy)


def _refuse(path: Path, reason: str) -> UnsafeCheckpoint:
    return UnsafeCheckpoint(f"{path}: refused before reading it: {reason}; this is not a file torch.save "
                            f"writes (corrupt, or made to exhaust memory). Use the original checkpoint")


def _u16(buf: bytes, at: int) -> int:
    return struct.unpack_from("<H", buf, at)[0]


def _u32(buf: bytes, at: int) -> int:
    return struct.unpack_from("<I", buf, at)[0]


def _u64(buf: bytes, at: int) -> int:
    return struct.unpack_from("<Q", buf, at)[0]


def _central_directory(handle, size: int, path: Path):
    """(entries, offset, length) of the zip's central directory, from its end record (zip64 aware)."""
    tail_len = min(size, 22 + 0xFFFF)
    handle.seek(size - tail_len)
    tail = handle.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint: no end of zip archive "
                              f"({size:,} bytes; truncated?); is it a complete .pth file?")
    entries, length, offset = _u16(tail, at + 10), _u32(tail, at + 12), _u32(tail, at + 16)
    if 0xFFFF in (entries,) or 0xFFFFFFFF in (length, offset):
        locator = at - 20
        if locator < 0 or tail[locator:locator + 4] != _EOCD64_LOCATOR:
            raise _refuse(path, "a zip64 end record without its locator")
        record = _u64(tail, locator + 8)
        if record + 56 > size:
            raise _refuse(path, "a zip64 end record outside the file")
        handle.seek(record)
        rec = handle.read(56)
        if rec[:4] != _EOCD64:
            raise _refuse(path, "a damaged zip64 end record")
        entries, length, offset = _u64(rec, 32), _u64(rec, 40), _u64(rec, 48)
    if offset + length > size:
        raise _refuse(path, f"a zip directory of {length:,} bytes at {offset:,}, outside the file ({size:,} bytes)")
    return entries, offset, length


def _zip64_sizes(extra: bytes, compressed: int, uncompressed: int):
    """Sizes from the zip64 extra field (id 1) where the 32-bit fields say 0xFFFFFFFF."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = _u16(extra, at), _u16(extra, at + 2)
        body = extra[at + 4:at + 4 + length]
        if kind == 1:
            pos = 0
            if uncompressed == 0xFFFFFFFF and pos + 8 <= len(body):
                uncompressed, pos = _u64(body, pos), pos + 8
            if compressed == 0xFFFFFFFF and pos + 8 <= len(body):
                compressed = _u64(body, pos)
            break
        at += 4 + length
    return compressed, uncompressed


def _inspect_zip(handle, size: int, path: Path) -> TorchFileInfo:
    entries, offset, length = _central_directory(handle, size, path)
    if entries > length // 46:   # each directory entry takes at least 46 bytes
        raise _refuse(path, f"a zip directory claiming {entries:,} members in {length:,} bytes")
    handle.seek(offset)
    directory = handle.read(length)
    total, pickle_bytes, at, seen = 0, None, 0, 0
    while at + 46 <= len(directory) and seen < entries:
        if directory[at:at + 4] != _CENTRAL:
            raise _refuse(path, "a damaged zip directory")
        method, compressed, uncompressed = _u16(directory, at + 10), _u32(directory, at + 20), _u32(directory, at + 24)
        name_len, extra_len, comment_len = _u16(directory, at + 28), _u16(directory, at + 30), _u16(directory, at + 32)
        name = directory[at + 46:at + 46 + name_len].decode("utf-8", "replace")
        extra = directory[at + 46 + name_len:at + 46 + name_len + extra_len]
        compressed, uncompressed = _zip64_sizes(extra, compressed, uncompressed)
        if method != 0:
            raise _refuse(path, f"its member {name} is compressed (zip method {method}), to "
                                f"{uncompressed:,} bytes from {compressed:,}")
        if compressed != uncompressed:
            raise _refuse(path, f"its stored member {name} claims {uncompressed:,} bytes in {compressed:,}")
        total += uncompressed
        if total > size:
            raise _refuse(path, f"its members add up to more than the file's {size:,} bytes")
        if name == "data.pkl" or name.endswith("/data.pkl"):
            pickle_bytes = uncompressed
        at += 46 + name_len + extra_len + comment_len
        seen += 1
    if pickle_bytes is None:
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint: a zip archive without data.pkl "
                              f"(another kind of zip file?); give a .pth file written by torch.save")
    if pickle_bytes > MAX_PICKLE_BYTES:
        raise _refuse(path, f"its data.pkl is {pickle_bytes:,} bytes (limit {MAX_PICKLE_BYTES:,}; a state dict "
                            f"takes ~200 bytes per tensor)")
    return TorchFileInfo("zip", size, pickle_bytes, seen)


class _Bounded(io.RawIOBase):
    """A read-only view that never reads (or allocates) past the file's end, whatever length a pickle
    opcode claims, and stops once ``limit`` bytes are consumed."""

    def __init__(self, handle, size: int, limit: int):
        self._handle, self._left, self._limit = handle, size - handle.tell(), limit
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.consumed

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        if self.consumed + n > self._limit:
            raise OverflowError
        data = self._handle.read(n)
        self._left -= len(data)
        self.consumed += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        line = self._handle.readline(min(self._left, self._limit - self.consumed + 1))
        self._left -= len(line)
        self.consumed += len(line)
        if self.consumed > self._limit:
            raise OverflowError
        return line


def _inspect_legacy(handle, size: int, path: Path) -> TorchFileInfo:
    # magic number, protocol version, sys info, the object, the storage keys: five pickles, then raw storages
    reader = _Bounded(handle, size, MAX_PICKLE_BYTES)
    try:
        for _ in range(5):
            for _op in pickletools.genops(reader):
                pass
    except OverflowError:
        raise _refuse(path, f"its pickles take more than {MAX_PICKLE_BYTES:,} bytes") from None
    except ValueError as err:   # a truncated or garbled pickle: torch would fail on it too
        raise CheckpointError(f"{path}: cannot be read as a legacy PyTorch checkpoint ({err}); is it a "
                              f"complete .pth file?") from None
    return TorchFileInfo("legacy", size, reader.consumed, 0)


def inspect_torch_file(path: Union[str, Path]) -> TorchFileInfo:
    """Check the structure of a ``torch.save`` file without unpickling or inflating anything; raise
    :class:`UnsafeCheckpoint` for what torch.save never writes, :class:`CheckpointError` for a file that
    is no checkpoint at all (empty, an HTML page, ...)."""
    path = Path(path)
    kind = sniff(path)
    if kind in NOT_A_CHECKPOINT:
        raise CheckpointError(f"{path} {NOT_A_CHECKPOINT[kind]}; replace it with the real checkpoint")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        return _inspect_zip(handle, size, path) if kind == "zip" else _inspect_legacy(handle, size, path)


def load_torch_file(path: Union[str, Path], what: Optional[str] = None) -> object:
    """The one way this project reads a ``.pth``: :func:`inspect_torch_file`, then
    ``torch.load(weights_only=True)`` on the CPU. Errors are :class:`CheckpointError` with the whole
    reason (PyTorch's refusal of a pickle included) on one line."""
    import torch

    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{label}: not found")
    try:
        inspect_torch_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except OSError as err:   # permissions, an I/O error: not a question of the file's content
        raise CheckpointError(f"{label}: cannot be read ({err.strerror or err}); check its permissions") from None
    except Exception as err:  # pickle errors, truncated files, non-tensor objects
        # one line, without the terminal's bold escapes PyTorch puts in its refusal
        reason = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split()) or type(err).__name__
        if "weights_only" in reason or "Weights only" in reason:
            raise UnsafeCheckpoint(f"{label} holds objects other than tensors and plain values; refused by the "
                                   f"weights-only load (they could run code). PyTorch says: {reason}") from None
        raise CheckpointError(f"{label}: cannot be read as a weights-only PyTorch checkpoint ({reason}); "
                              f"is it a complete .pth file?") from None
