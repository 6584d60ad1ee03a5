"""Fixtures shared by the test modules."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one thread is faster than several (and robust to a busy shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
