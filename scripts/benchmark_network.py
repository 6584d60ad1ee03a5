#!/usr/bin/env python
"""Speed and peak memory of the KEEP network on one window of aligned 512x512 faces.

Prints frames/s, s/frame, a breakdown (flow net, LQ encoder, the rest) and peak memory (CPU: peak
RSS of the process; CUDA: max allocated). Weights are random (speed does not depend on them).

    python scripts/benchmark_network.py --frames 3 --threads 2                 # CPU, fp32
    python scripts/benchmark_network.py --frames 20 --device cuda --dtype bf16  # GPU, autocast
    python scripts/benchmark_network.py --tiny --frames 4                       # keep-tiny

The official implementation needs about 9 s a frame on 2 CPU threads (fp32, 3 frames in ~27 s).
"""
from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import sys
import time

import torch

from keep.api import create_model

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20, help="window length T (default 20, as the release)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="fp32, or bf16/fp16 autocast (flow net and code transformer stay fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--tiny", action="store_true", help="benchmark keep-tiny instead of keep-v1")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs (the best is reported)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last convolutions except the flow net's (default: on CPU only, "
                             "as keep.load_model does)")
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None,
                        help="CUDA: allow TF32 in convolutions and matmuls (default: PyTorch's, i.e. "
                             "convolutions yes, matmuls no)")
    parser.add_argument("--compare", action="store_true",
                        help="with bf16/fp16: also run fp32 and print how far the autocast result is from it")
    parser.add_argument("--conformance", metavar="DIR", default=None,
                        help="instead of timing: run the conformance reference(s) DIR/keep_seed*.npz (with "
                             "DIR/fill.py weights, e.g. ../shared/conformance) on this device and dtype and "
                             "print the differences (tolerances: flows 2e-2, z 1e-3, gains 1e-4, output max "
                             "1e-2 / mean 2e-4, indices identical)")
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the flow net and the LQ encoder alone")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch sees no CUDA device")
    if args.dtype == "fp16" and not args.device.startswith("cuda"):
        parser.error("--dtype fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return args


def randomise_weights(net: torch.nn.Module, seed: int = 0) -> None:
    """Random weights of a sensible scale everywhere (so zero-initialised CFT/CFA do real work and the
    --compare figures mean something): N(0, 1/fan_in) matrices, 1 +- 0.1 norms, 0.1-scale biases."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in net.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif key.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def compare_to_fp32(net, x, autocast) -> None:
    """Print the autocast run's distance from fp32 on the same input."""
    with torch.inference_mode():
        ref = net(x, return_intermediates=True)
        with autocast():
            low = net(x, return_intermediates=True)
    diff = (low.frames - ref.frames).abs()
    same = (low.indices == ref.indices).float().mean().item()
    flow = (low.flows - ref.flows).abs().max().item() if ref.flows.numel() else 0.0
    print(f"vs fp32   output max {diff.max().item():.3e} mean {diff.mean().item():.3e}, "
          f"codes identical {100 * same:.2f}%, flows max {flow:.2e} (output range "
          f"{ref.frames.min().item():.2f}..{ref.frames.max().item():.2f})")


def run_conformance(net, folder: str, device: torch.device, autocast) -> int:
    """Compare this device/dtype with the official reference outputs in ``folder``."""
    import importlib.util
    from pathlib import Path

    import numpy as np

    root = Path(folder)
    files = sorted(root.glob("*.npz"))
    if not (root / "fill.py").is_file() or not files:
        print(f"error: {root} must hold fill.py and keep_seed*.npz", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("conformance_fill", root / "fill.py")
    fill = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill)
    for path in files:
        ref = np.load(path)
        net.load_state_dict(fill.fill_state_dict(net.state_dict(), seed=int(ref["seed"])))
        x = torch.from_numpy(ref["frames"]).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)[None]
        with torch.inference_mode(), autocast():
            out = net(x.to(device), return_intermediates=True)

        def diff(ours, key):
            d = np.abs(ours.float().cpu().numpy() - ref[key])
            return f"max {d.max():.2e} mean {d.mean():.2e}"
        same = (out.indices[0].cpu().numpy() == ref["indices"]).mean()
        print(f"{path.name}: flows {diff(out.flows, 'flows')} | z_codes {diff(out.z_obs[0], 'z_codes')} | "
              f"gains {diff(out.gains, 'gains')} | indices identical {100 * same:.2f}% | "
              f"output {diff(out.frames, 'output')}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.tf32 is not None:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
    cuda = device.type == "cuda"
    name = "keep-tiny" if args.tiny else "keep-v1"
    net = create_model(name)
    if not args.conformance:
        randomise_weights(net)
    net = net.to(device)
    if args.channels_last is None:
        args.channels_last = device.type == "cpu"
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.channels_last:
        net.channels_last_()
    dtype = DTYPES[args.dtype]
    x = (torch.rand(1, args.frames, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    cpu_seconds = {}

    def timed(fn) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode(), autocast():
            fn()
        if cuda:
            torch.cuda.synchronize(device)
        cpu_seconds[fn] = time.process_time() - start_cpu
        return time.perf_counter() - start

    print(f"network   {name} ({sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters), "
          f"window {args.frames} x 3 x 512 x 512, {args.dtype}, channels_last={args.channels_last}")
    print(f"device    {torch.cuda.get_device_name(device) if cuda else platform.processor() or 'cpu'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.conformance:
        return run_conformance(net, args.conformance, device, autocast)
    warm = x[:, : min(2, args.frames)]
    print(f"warm-up   {timed(lambda: net(warm)):.2f} s ({warm.shape[1]} frames)", flush=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    def window():
        net(x)

    total = min(timed(window) for _ in range(max(1, args.repeats)))
    frames = args.frames
    print(f"window    {total:.2f} s  ->  {total / frames:.3f} s/frame, {frames / total:.2f} frames/s")
    if not cuda:
        # CPU seconds of this process: on a shared, busy CPU the wall time above is inflated;
        # CPU time / threads estimates the wall time of an idle machine
        used = cpu_seconds[window]
        print(f"cpu time  {used:.1f} s ({used / frames:.2f} s/frame; / {torch.get_num_threads()} threads = "
              f"{used / frames / torch.get_num_threads():.2f} s/frame if the cores were free)")
    if cuda:
        print(f"memory    CUDA max allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    else:
        # ru_maxrss is in KiB on Linux (bytes on macOS)
        scale = 1 if sys.platform == "darwin" else 1024
        print(f"memory    peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30:.2f} GiB")
    if args.breakdown and frames > 1:
        frames_flat = x[0]
        flow = timed(lambda: net._flows(x, None, None))
        encoder = timed(lambda: net.encoder(frames_flat.contiguous(memory_format=memory_format), net.connect_list))
        print(f"breakdown flow net {flow:.2f} s ({frames - 1} pairs), LQ encoder {encoder:.2f} s ({frames} frames), "
              f"rest {max(total - flow - encoder, 0.0):.2f} s (gains, HQ encoder, transformer, generator)")
    if args.compare and dtype is not None:
        compare_to_fp32(net, x, autocast)
    if not cuda:
        print("reference official implementation: about 9 s/frame on 2 CPU threads (fp32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
