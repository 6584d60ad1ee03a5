"""Under CI=true the tests that need ../shared cannot be skipped into a green run: a missing file stops
the run with one message (tests/conftest.py), and a numerics parametrisation over no fixture files fails
(tests/shared_material.py reference_files; pytest.ini makes any empty parametrisation fail)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared_material import CONFORMANCE, REQUIRED, SHARED

REPO = Path(__file__).resolve().parents[1]


def _pytest(shared: Path, ci: bool, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(KEEP_SHARED_DIR=str(shared), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def test_required_list_names_files_that_exist_here():
    assert all((SHARED / name).is_file() for name in REQUIRED), [n for n in REQUIRED if not (SHARED / n).is_file()]


def test_missing_shared_material_fails_a_ci_run_with_one_message(tmp_path):
    done = _pytest(tmp_path / "nowhere", True, "tests/test_flow.py", "tests/test_io.py")
    out = done.stdout + done.stderr
    assert done.returncode == 4, out                 # pytest's usage error: the run fails before any test
    assert out.count("CI=true but the shared material is incomplete: 11 file(s) missing") == 1, out
    assert out.strip().startswith("ERROR: CI=true") and len(out.strip().splitlines()) == 1, out
    assert "passed" not in out and "skipped" not in out


def test_no_fixture_files_is_a_failure_not_an_empty_pass(tmp_path):
    shared = tmp_path / "shared"
    (shared / "conformance").mkdir(parents=True)
    for name in ("keep_released_keys.json", "fill.py"):        # everything but the *.npz references
        (shared / "conformance" / name).symlink_to(CONFORMANCE / name)
    done = _pytest(shared, False, "tests/test_conformance.py", "--collect-only")
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "no *.npz in" in out and "nothing to compare" in out, out
