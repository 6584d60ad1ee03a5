"""What a file at a checkpoint's place is, from its first bytes (no torch import: ``keep download --list``
and ``keep doctor --no-load`` use it). A failed download can leave an empty file or a saved HTML error
page where the registry looks; neither may count as a present checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Union

ZIP_LOCAL = b"PK\x03\x04"
# legacy torch.save (torch < 1.6): pickles, the first of the magic number 0x1950a86a20f9469cfc6c; every
# pickle of protocol 2 to 5 starts with PROTO (0x80) and its protocol byte
PICKLE_STARTS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def sniff(path: Union[str, Path]) -> str:
    """What the file looks like from its first bytes: ``zip``, ``legacy`` (torch < 1.6), ``empty``,
    ``html`` (an error page saved by a failed download), ``text`` or ``unknown``."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "empty"
    if head.startswith(ZIP_LOCAL):
        return "zip"
    if head.startswith(PICKLE_STARTS):
        return "legacy"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in lowered:
        return "html"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text"


#: What a non-checkpoint sniff result means, for messages.
NOT_A_CHECKPOINT = {
    "empty": "is empty (0 bytes): a download that failed or was never made",
    "html": "is an HTML page, not a checkpoint: a failed download saved an error page (e.g. 404) as the file",
    "text": "is a text file, not a checkpoint",
    "unknown": "is not a PyTorch checkpoint (neither the zip nor the legacy torch.save format)",
}

#: What a failed download leaves at a registry path: never counted as a present file (``keep download
#: --list``, ``keep doctor``, :func:`keep.weights.get_weight`). Other non-checkpoints (text, unknown
#: bytes) count as present files that then fail their checks (sha256, loading) with their own message.
FAILED_DOWNLOAD = ("empty", "html")
