"""GPU behaviour (skipped without CUDA; CI has no GPU, run these on a GPU machine).

Mixed precision must leave the flow net and the code choice in true fp32, and the CUDA result must
agree with the CPU one.
"""
import pytest
import torch

import keep

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    net = keep.create_model("keep-tiny")
    for p in net.parameters():          # non-trivial weights (zero-initialised CFT/CFA included)
        torch.nn.init.normal_(p, std=0.05)
    clip = torch.rand(1, 4, 3, net.img_size, net.img_size) * 2 - 1
    return net, clip


def test_cuda_fp32_matches_cpu(tiny_pair):
    net, clip = tiny_pair
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            cpu = net(clip, return_intermediates=True)
            gpu = net.cuda()(clip.cuda(), return_intermediates=True)
    finally:
        net.cpu()
        torch.backends.cudnn.allow_tf32 = True
    torch.testing.assert_close(gpu.flows.cpu(), cpu.flows, atol=5e-2, rtol=0)  # TF32 moved them by pixels
    torch.testing.assert_close(gpu.z_obs.cpu(), cpu.z_obs, atol=1e-3, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_flow_in_fp32_and_returns_fp32(tiny_pair, dtype):
    net, clip = tiny_pair
    net = net.cuda()
    try:
        with torch.inference_mode():
            ref = net(clip.cuda(), return_intermediates=True)
            with torch.autocast("cuda", dtype=dtype):
                out = net(clip.cuda(), return_intermediates=True)
    finally:
        net.cpu()
    assert out.frames.dtype == torch.float32 and torch.isfinite(out.frames).all()
    # the flow net never runs under autocast: the same flows as the fp32 run (same TF32 switches, set per run)
    torch.testing.assert_close(out.flows, ref.flows, atol=1e-5, rtol=0)
