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


def fixture_input(frames):
    """A fixture's (T, H, W, 3) uint8 RGB frames as the network input (1, T, 3, H, W) in [-1, 1]
    (the release's ``(v / 255 - 0.5) / 0.5``)."""
    import torch
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)[None]


def run_on_all_cores(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in inference mode with every CPU core (the real 512 network is run once
    per fixture; the tests' one-thread default would make that several times slower)."""
    import os

    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        with torch.inference_mode():
            return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def load_fill():
    """``fill_state_dict`` of ../shared/conformance/fill.py (the deterministic weight fill)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("conformance_fill", CONFORMANCE / "fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_state_dict
