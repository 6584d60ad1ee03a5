"""Where the read-only shared material lives for the tests: ``../shared`` beside the repository.

CI always has it; a test that needs it and runs without it skips with the path it looked for.
"""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VIDEOS = SHARED / "videos"
CONFORMANCE = SHARED / "conformance"

# Tolerances of ../shared/conformance/README.md, in one place. The flow tolerance is what the
# official implementation itself shows across CPUs (AMD EPYC AVX2 vs Intel: 2.6e-2 px at 512x512);
# a wrong flow (direction, scale, a missing refinement) is off by whole pixels.
TOLERANCE = {
    "output_max": 1e-2,
    "output_mean": 2e-4,
    "flows": 5e-2,
    "z_codes": 1e-3,
    "gains": 1e-4,
}


def require(path: Path) -> Path:
    """``path`` if it exists, else skip the calling test naming what is missing."""
    if not path.exists():
        pytest.skip(f"shared material absent: {path} (expected ../shared beside the repository)")
    return path
