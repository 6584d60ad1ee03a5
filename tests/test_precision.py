"""CUDA precision is set once per run and never flipped while its threads run (keep/precision.py): the
network's full-precision sections only switch autocast off (thread-local), never the process-wide TF32
switches that the detector, parser and upsampler threads also read."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from keep.archs.keep_net import KEEP
from keep.precision import configure_cuda_precision, cuda_tf32_flags
from keep.restore.restorer import FaceRestorer

SENTINEL = (False, True)     # neither PyTorch's default nor what a strict run sets: any write shows


@pytest.fixture
def sentinel_flags():
    before = cuda_tf32_flags()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = SENTINEL
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_full_precision_sections_never_touch_the_global_switches(sentinel_flags):
    """Four threads in and out of the flow net's / code transformer's section (on a CUDA tensor's device)
    while a watcher samples the switches: they never change."""
    cuda_like = SimpleNamespace(device=torch.device("cuda"))
    seen, stop = set(), threading.Event()

    def watch():
        while not stop.is_set():
            seen.add(cuda_tf32_flags())

    def sections():
        for _ in range(2000):
            with KEEP._full_precision(cuda_like):
                seen.add(cuda_tf32_flags())

    watcher = threading.Thread(target=watch)
    workers = [threading.Thread(target=sections) for _ in range(4)]
    watcher.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert seen == {SENTINEL}


def test_full_precision_still_switches_autocast_off():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with KEEP._full_precision(torch.zeros(1)):
            assert not torch.is_autocast_enabled("cpu")
        assert torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("precision,expected", [("fp32", (True, False)), ("fp32-strict", (False, False)),
                                                ("bf16", (True, False))])
def test_a_run_sets_the_switches_once_at_its_start(sentinel_flags, precision, expected):
    net = SimpleNamespace(img_size=32)
    FaceRestorer(net, torch.device("cuda"), precision)          # (builds nothing on the device)
    assert cuda_tf32_flags() == expected
    # a later default run does not inherit a strict one's switches (the demo runs many in one process)
    configure_cuda_precision("fp32", torch.device("cuda"))
    assert cuda_tf32_flags() == (True, False)


def test_a_cpu_run_leaves_the_switches_alone(sentinel_flags):
    FaceRestorer(SimpleNamespace(img_size=32), torch.device("cpu"), "fp32-strict")
    assert cuda_tf32_flags() == SENTINEL
