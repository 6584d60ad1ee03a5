"""Fixtures shared by the test modules; under CI=true, the shared material is checked first."""
import pytest
import torch

from shared_material import ci_message, in_ci, missing_material


def pytest_configure(config):
    """CI always has ../shared: without it the tests that need it would skip and CI would pass having run
    none of them. One message ("ERROR: ..."), exit status 4, no test run."""
    missing = missing_material() if in_ci() else []
    if missing:
        raise pytest.UsageError(ci_message(missing))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one thread is faster than several (and robust to a busy shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
