"""The window a ``keep restore`` video was made with, written into the MP4 it makes and read back.

``keep eval --window`` (the window-boundary report) must name the window the restore used. Without
``--window`` that depends on the device the restore ran on (:func:`keep.restore.progress.default_window`:
4 on the CPU, 20 elsewhere), which the evaluation cannot know, so the restore records it in the
container's ``comment`` tag (a tag the MP4 muxer keeps; ``ffprobe`` shows it) and the evaluation reads
it from the prediction's videos.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional, Tuple

#: the container tag holding the record; its value is ``keep restore window=N``
TAG = "comment"
_RECORD = re.compile(r"keep restore window=(\d+)")


def window_tags(window: int) -> Dict[str, str]:
    """The container tags that record ``window`` (for :class:`keep.io.writer.VideoWriter`)."""
    return {TAG: f"keep restore window={int(window)}"}


def recorded_window(video: Path) -> Optional[int]:
    """The window recorded in ``video`` by ``keep restore``, or None (another program's video, an
    older restore's, or a file that cannot be opened: the caller falls back and says so)."""
    import av
    try:
        with av.open(str(video)) as container:
            text = container.metadata.get(TAG, "")
    except (OSError, ValueError, av.error.FFmpegError):
        return None
    match = _RECORD.fullmatch(text.strip())
    return int(match.group(1)) if match else None


def window_of_predictions(roots) -> Tuple[Optional[int], str]:
    """The window recorded in the videos of the prediction folders (or files) ``roots`` and a phrase
    saying where it came from; ``(None, why)`` when none records one. Videos recording other windows
    are an error (one boundary report cannot serve both): :class:`ValueError` asking for ``--window``."""
    from keep.io import VIDEO_SUFFIXES
    found: Dict[int, Path] = {}
    for root in map(Path, roots):
        videos = [root] if root.is_file() else sorted(
            p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
            and p.suffix.lower() in VIDEO_SUFFIXES) if root.is_dir() else []
        for video in videos:
            window = recorded_window(video)
            if window is not None:
                found.setdefault(window, video)
    if len(found) > 1:
        named = ", ".join(f"{w} ({p.name})" for w, p in sorted(found.items()))
        raise ValueError(f"the predictions were restored with different windows: {named}; give the one to report "
                         f"with --window")
    if found:
        (window, video), = found.items()
        return window, f"recorded by keep restore in {video.name}"
    return None, "no prediction video records the window keep restore used"
