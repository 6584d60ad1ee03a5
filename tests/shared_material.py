"""Where the read-only shared material lives for the tests: ``../shared`` beside the repository.

CI always has it; a test that needs it and runs without it skips with the path it looked for.
"""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEOS = SHARED / "videos"
CONFORMANCE = SHARED / "conformance"


def require(path: Path) -> Path:
    """``path`` if it exists, else skip the calling test naming what is missing."""
    if not path.exists():
        pytest.skip(f"shared material absent: {path} (expected ../shared beside the repository)")
    return path
