"""A small learning experiment: train tiny stages I-III on CPU and report, on held-out clips, PSNR
against bicubic and against the image baseline (the same KEEP, every frame alone), flicker and code
accuracy, after each stage, with a plot.

Clips: procedural (no data; default) or a folder of aligned face clips (``--root``, e.g. the output
of `keep prepare`, frames resized to 64 px with ``resize: true``).

    python scripts/learning_experiment.py --steps 500 1000 300      # the documented setting (~1 h)
    python scripts/learning_experiment.py --steps 150 100 20 --out results/learning   # reduced

Writes ``<out>/results.json`` and ``<out>/learning.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keep.config import load_config  # noqa: E402
from keep.data.dataset import VideoClipDataset  # noqa: E402
from keep.engine.config import TrainConfig  # noqa: E402
from keep.engine.probe import evaluate_keep, evaluate_vqgan  # noqa: E402
from keep.engine.trainer import Trainer  # noqa: E402

STAGE1_TO_KEEP = ('{"encoder.": ["encoder.", "hq_encoder."], "quantize.": ["quantize."], '
                  '"generator.": ["generator."]}')


def run(stage: int, steps: int, out: Path, extra) -> Trainer:
    sets = [f"output_dir={out}", f"iters={steps}", f"save_every={steps}", "log_every=50", "data.val=null", *extra]
    trainer = Trainer(load_config(TrainConfig, REPO / "configs" / f"tiny_stage{stage}.yaml", sets))
    trainer.fit()
    trainer.close()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=3, default=[500, 1000, 300], metavar=("I", "II", "III"))
    parser.add_argument("--root", default="", help="folder of aligned clips instead of procedural ones")
    parser.add_argument("--out", default="results/learning_experiment")
    parser.add_argument("--stage3-losses", choices=["pixel", "config"], default="pixel",
                        help="pixel (default): stage III on L1 + a small adversarial and the temporal loss, "
                             "lr 2e-4, because offline the perceptual loss's VGG is random and then pulls "
                             "away from the GT; config: the tiny config's losses as they are")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    data = ([] if not args.root else ["data.train.procedural=null", f"data.train.root={args.root}",
                                      "data.train.resize=true"])
    val_cfg = load_config(TrainConfig, REPO / "configs" / "tiny_stage2.yaml",
                          ["data.val.clip_length=6", "data.val.procedural.num_clips=4"]).data.val
    val = VideoClipDataset(val_cfg)
    samples = [val[i] for i in range(len(val))]
    results = {}

    t1 = run(1, args.steps[0], out, data + ["losses.disc_start=%d" % (args.steps[0] // 2)])
    results["stage1"] = evaluate_vqgan(t1.ema.module, samples)
    init2 = f"init=[{{path: {out}/tiny_stage1/export.pth, prefix_map: {STAGE1_TO_KEEP}}}]"
    t2 = run(2, args.steps[1], out, data + [init2, "data.train.clip_length=4"])
    results["stage2"] = {"kalman": evaluate_keep(t2.ema.module, samples, True),
                         "image": evaluate_keep(t2.ema.module, samples, False)}
    init3 = f"init=[{{path: {out}/tiny_stage2/export.pth, exclude: [fuse_convs_dict., cross_fuse.]}}]"
    pixel = (["losses.l1=1.0", "losses.perceptual=0.0", "losses.adversarial=0.01", "optim.lr=2.0e-4"]
             if args.stage3_losses == "pixel" else [])
    t3 = run(3, args.steps[2], out, data + [init3, *pixel])
    results["stage3"] = {"kalman": evaluate_keep(t3.ema.module, samples, True),
                         "image": evaluate_keep(t3.ema.module, samples, False)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    names = ["stage II", "stage III"]
    for key, ax, label in (("psnr", axes[0], "held-out PSNR (dB)"), ("flicker", axes[1], "flicker (x1e-3)")):
        for mode, marker in (("kalman", "o-"), ("image", "s--")):
            ax.plot(names, [results[s][mode][key] for s in ("stage2", "stage3")], marker, label=f"KEEP {mode}")
        ax.set_title(label)
    axes[0].axhline(results["stage2"]["kalman"]["psnr_bicubic"], color="grey", ls=":", label="bicubic")
    axes[0].axhline(results["stage1"]["psnr"], color="green", ls=":", label="stage I recon (GT in)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"tiny KEEP, procedural clips, steps I/II/III = {args.steps}")
    fig.tight_layout()
    fig.savefig(out / "learning.png", dpi=120)
    print(f"wrote {out / 'results.json'} and {out / 'learning.png'}")


if __name__ == "__main__":
    main()
