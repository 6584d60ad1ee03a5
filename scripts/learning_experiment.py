"""A small learning experiment: train tiny stages I-III on CPU and report, on held-out clips, PSNR
against bicubic and against the image baseline (the same KEEP, every frame alone), flicker and code
accuracy, after each stage, with a plot.

Clips: procedural (no data; default) or a folder of aligned face clips (``--root``, e.g. the output
of `keep prepare`, frames resized to 64 px with ``resize: true``).

    python scripts/learning_experiment.py --steps 500 1000 300      # the documented setting (~1 h)
    python scripts/learning_experiment.py --steps 150 100 20 --out results/learning   # reduced
    python scripts/learning_experiment.py --stage3-losses pixel release release_official_init   # several stage IIIs

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


# stage III variants: overrides of configs/tiny_stage3.yaml
RELEASE_STAGE3 = ["losses.l1=0.1", "losses.perceptual=1.0", "losses.perceptual_type=lpips_vgg_release",
                  "losses.temporal=0.1", "losses.temporal_scales=[\"32\"]", "losses.adversarial=0.01",
                  "losses.adversarial_weight=fixed", "losses.disc_passes=separate", "optim.lr=2.0e-4"]
STAGE3_VARIANTS = {
    "pixel": ["losses.l1=1.0", "losses.perceptual=0.0", "losses.adversarial=0.01", "optim.lr=2.0e-4"],
    "config": [],
    "release": RELEASE_STAGE3,
    "release_official_init": RELEASE_STAGE3 + ["fusion_init=official"],
}


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
    parser.add_argument("--stage3-losses", choices=sorted(STAGE3_VARIANTS), nargs="+", default=["pixel"],
                        help="one stage III per name, all from the same stage II. pixel (default): L1 + a small "
                             "adversarial and the temporal loss, lr 2e-4, because offline the perceptual loss's "
                             "VGG is random and then pulls away from the GT; config: the tiny config's losses as "
                             "they are; release: the v1.0.0 release's stage III losses (configs/release/stage3.yaml: "
                             "L1 0.1, LPIPS with its double normalisation, feature temporal loss at 32, GAN 0.01, "
                             "separate D passes) at lr 2e-4 with our gated fusion init; release_official_init: the "
                             "same with the release's all-zero CFT/CFA init")
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
    for i, variant in enumerate(args.stage3_losses):
        name = [] if i == 0 else [f"name=tiny_stage3_{variant}"]
        t3 = run(3, args.steps[2], out, data + [init3, *STAGE3_VARIANTS[variant], *name])
        results["stage3" if i == 0 else f"stage3_{variant}"] = {
            "losses": variant, "kalman": evaluate_keep(t3.ema.module, samples, True),
            "image": evaluate_keep(t3.ema.module, samples, False)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    stage3_keys = [k for k in results if k.startswith("stage3")]
    names = ["stage II"] + [f"III {results[k]['losses']}".replace("_", " ") for k in stage3_keys]
    for key, ax, label in (("psnr", axes[0], "held-out PSNR (dB)"), ("flicker", axes[1], "flicker (x1e-3)")):
        for mode, marker in (("kalman", "o-"), ("image", "s--")):
            ax.plot(names, [results[s][mode][key] for s in ["stage2"] + stage3_keys], marker, label=f"KEEP {mode}")
        ax.set_title(label)
        ax.tick_params(axis="x", labelsize=7, rotation=15)
    axes[0].axhline(results["stage2"]["kalman"]["psnr_bicubic"], color="grey", ls=":", label="bicubic")
    axes[0].axhline(results["stage1"]["psnr"], color="green", ls=":", label="stage I recon (GT in)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"tiny KEEP, procedural clips, steps I/II/III = {args.steps}")
    fig.tight_layout()
    fig.savefig(out / "learning.png", dpi=120)
    print(f"wrote {out / 'results.json'} and {out / 'learning.png'}")


if __name__ == "__main__":
    main()
