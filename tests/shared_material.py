"""Where the read-only shared material lives for the tests: ``../shared`` beside the repository
(``KEEP_SHARED_DIR`` overrides it).

CI always has it, so under ``CI=true`` a missing file fails the run: ``conftest.py`` checks
:data:`REQUIRED` before any test and stops with one message, :func:`require` fails instead of skipping,
and :func:`reference_files` refuses an empty list of numerics fixtures (an empty parametrisation would
pass having checked nothing; ``pytest.ini`` makes any other empty parametrisation fail too). Elsewhere
a test that needs the material and runs without it skips with the path it looked for.
"""
import os
from pathlib import Path
from typing import List

import pytest

SHARED = Path(os.environ.get("KEEP_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared")
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


#: Every shared file some test reads (relative to SHARED): checked up front under CI=true.
REQUIRED = ("videos/real_1.mp4", "videos/real_2.mp4", "videos/synthetic_1.mp4", "videos/synthetic_2.mp4",
            "conformance/fill.py", "conformance/keep_released_keys.json", "conformance/keep_seed0.npz",
            "conformance/v1/keep_v1_general_keys.json", "conformance/v1/keep_v1_asian_keys.json",
            "conformance/v1/keep_v1_asian_seed11.npz", "spec/official-PIPELINE.md")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing_material() -> List[str]:
    return [name for name in REQUIRED if not (SHARED / name).is_file()]


def ci_message(missing: List[str]) -> str:
    return (f"CI=true but the shared material is incomplete: {len(missing)} file(s) missing under {SHARED} "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); CI must run the tests that need "
            f"them. Put ../shared beside the repository (or set KEEP_SHARED_DIR)")


def require(path: Path) -> Path:
    """``path`` if it exists; else skip the calling test naming what is missing (fail under CI=true)."""
    if not path.exists():
        if in_ci():
            pytest.fail(ci_message([str(path)]), pytrace=False)
        pytest.skip(f"shared material absent: {path} (expected ../shared beside the repository)")
    return path


def reference_files(folder: Path, pattern: str) -> List[Path]:
    """The fixture files a numerics test is parametrised over. None found is an error (the tests would
    pass having compared nothing) wherever the folder exists, and always under CI=true; without the
    shared material elsewhere, the calling module is skipped."""
    found = sorted(folder.glob(pattern))
    if found:
        return found
    if folder.is_dir() or in_ci():
        pytest.fail(f"no {pattern} in {folder}: the numerics tests would have nothing to compare", pytrace=False)
    pytest.skip(f"shared material absent: {folder} (expected ../shared beside the repository)",
                allow_module_level=True)


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
