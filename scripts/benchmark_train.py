"""Training throughput: iterations/s of each stage and data clips/s (non-interactive; prints a table).

    python scripts/benchmark_train.py                       # tiny configs on CPU
    python scripts/benchmark_train.py --size full --device cuda --set data.batch_size=1
    python scripts/benchmark_train.py --size full --device cuda --amp bf16 --stages 3

Clips are synthesised in a temporary folder (smooth random frames at the config's GT size), so no
dataset is needed; pretrained files are not needed either (random perceptual backbone, no init).
``--set`` overrides apply to every stage config, as with ``keep train``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keep.config import load_config  # noqa: E402
from keep.data.dataset import VideoClipDataset  # noqa: E402
from keep.engine.config import TrainConfig  # noqa: E402
from keep.engine.trainer import Trainer  # noqa: E402


def synthesise_clips(root: Path, size: int, n_clips: int, n_frames: int) -> None:
    rng = np.random.default_rng(0)
    for c in range(n_clips):
        folder = root / f"clip_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = cv2.resize(rng.integers(0, 256, (size // 16, size // 16 + n_frames, 3), dtype=np.uint8),
                          (size + n_frames * 2, size), interpolation=cv2.INTER_CUBIC)
        for t in range(n_frames):
            cv2.imwrite(str(folder / f"{t:05d}.png"), base[:, 2 * t:2 * t + size])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_stage(stage: int, args, clips: Path, out: Path) -> dict:
    name = f"tiny_stage{stage}" if args.size == "tiny" else f"stage{stage}"
    overrides = [f"device={args.device}", f"amp={args.amp}", f"output_dir={out}", f"data.train.root={clips}",
                 "data.train.clips=[]", "data.train.resize=false", "data.val=null", "init=[]",
                 "losses.perceptual_pretrained=false", "losses.disc_start=0", "export=false",
                 f"data.num_workers={args.workers}", f"iters={args.warmup + args.iters}", "log_every=1000000",
                 "save_every=1000000"] + args.overrides
    cfg = load_config(TrainConfig, REPO / "configs" / f"{name}.yaml", overrides)
    trainer = Trainer(cfg)
    loader = iter(trainer._loader())
    ctx, model = trainer.ctx, trainer.model
    batches = [trainer._to_device(next(loader)) for _ in range(min(2, args.iters))]
    model.train()
    for i in range(args.warmup):
        model.training_step(batches[i % len(batches)], i, ctx)
        trainer.scaler.update()
    sync(trainer.device)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    start = time.perf_counter()
    for i in range(args.iters):
        model.training_step(batches[i % len(batches)], args.warmup + i, ctx)
        trainer.scaler.update()
        if trainer.ema is not None:
            trainer.ema.update(model.net)
    sync(trainer.device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(trainer.device) / 2 ** 30 if trainer.device.type == "cuda" else float("nan")
    # data: full samples (read, crop, flip, degrade incl. H.264 of the clip) in this process
    dataset = VideoClipDataset(cfg.data.train)
    start_data = time.perf_counter()
    for i in range(args.data_samples):
        dataset[(1, i % len(dataset))]
    data_rate = args.data_samples / (time.perf_counter() - start_data)
    trainer.close()
    return {"stage": stage, "config": name, "batch": cfg.data.batch_size, "frames": cfg.data.train.clip_length,
            "gt": cfg.data.train.gt_size, "it_s": args.iters / elapsed, "peak_gib": peak, "clips_s": data_rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--iters", type=int, default=5, help="timed steps per stage")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data-samples", type=int, default=8, help="samples timed for the data rate")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for stage in args.stages:
            name = f"tiny_stage{stage}" if args.size == "tiny" else f"stage{stage}"
            cfg = load_config(TrainConfig, REPO / "configs" / f"{name}.yaml", args.overrides)
            clips = tmp / f"clips_stage{stage}"
            synthesise_clips(clips, cfg.data.train.gt_size, n_clips=2, n_frames=2 * cfg.data.train.clip_length + 2)
            rows.append(bench_stage(stage, args, clips, tmp / "runs"))
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\nKEEP training throughput on {device}, amp {args.amp}, torch {torch.__version__}")
    print(f"{'stage':>5} {'config':>12} {'batch':>5} {'frames':>6} {'GT px':>6} {'it/s':>8} {'clips/s (data)':>15} {'peak GiB':>9}")
    for r in rows:
        print(f"{r['stage']:>5} {r['config']:>12} {r['batch']:>5} {r['frames']:>6} {r['gt']:>6} {r['it_s']:>8.3f} "
              f"{r['clips_s']:>15.2f} {r['peak_gib']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
