"""Optional packages the deploy tests need (the test extra installs them)."""
import importlib
import os

import pytest


def need(package: str):
    """Import ``package``; without it skip, except under ``CI=true`` (the test extra installs it there, so a
    missing one is a failure, not a silent skip)."""
    try:
        return importlib.import_module(package)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{package} not installed (pip install -e \".[onnx]\" / \".[openvino]\")")
