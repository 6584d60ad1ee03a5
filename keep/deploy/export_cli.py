"""``keep export``: a checkpoint as ONNX graphs with its recurrent state as named inputs/outputs (docs/deploy.md)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  keep export --weights keep-v1 -o keep-v1-onnx                 # restore_window semantics (window-wide gains)
  keep export --weights keep-v1 -o keep-v1-live --causal        # restore_frame semantics (live, causal gains)
  keep export --weights my.pth -o my-onnx --precision fp16      # fp16 graphs (for GPU runtimes)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--weights", default="keep-v1", help="checkpoint path or registry name (default keep-v1)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="new folder for the graphs and manifest.json (must not exist)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                        help="fp32 (default); fp16 weights and arithmetic with fp32 inputs/outputs, flow graph "
                             "fp32; bf16 is a runtime setting (OpenVINO), not a file format")
    parser.add_argument("--causal", action="store_true",
                        help="causal gains (the gain's temporal attention sees past frames only, with a "
                             "key/value cache in the state): what keep live and restore_frame use")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export at --output")


def main(args: argparse.Namespace) -> int:
    from keep.checkpoint import CheckpointError
    from keep.weights import WeightsNotFoundError
    try:
        return _export(args)
    except (ValueError, OSError, CheckpointError, WeightsNotFoundError, ImportError) as err:
        print(f"keep export: error: {err}", file=sys.stderr)
        return 1


def _export(args: argparse.Namespace) -> int:
    from keep.deploy.cache import checkpoint_fields, checkpoint_path, load_for_export
    from keep.deploy.export import export_graphs, is_export
    from keep.weights import sha256_of

    out: Path = args.output
    if args.precision == "bf16":
        raise ValueError("bf16 is a runtime precision, not a file format: export fp32 and run it with OpenVINO's "
                         "bf16 (keep restore --backend openvino --bf16)")
    if out.exists() or out.is_symlink():
        if not args.overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace an earlier export, or "
                                  f"choose another folder")
        if not is_export(out):
            raise FileExistsError(f"{out} exists and is not a KEEP ONNX export (no manifest.json of ours); "
                                  f"not replacing it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder {out.parent} does not exist")
    try:
        import onnx  # noqa: F401  (torch.onnx writes the files; onnx reads their signatures back)
    except ImportError:
        raise ImportError('keep export needs the onnx package: pip install -e ".[onnx]"') from None
    checkpoint = checkpoint_path(args.weights)
    net = load_for_export(args.weights)
    manifest = export_graphs(net, out, args.causal, args.precision,
                             extra=checkpoint_fields(checkpoint, sha256_of(checkpoint)), replace=args.overwrite)
    print(f"{checkpoint} -> {out}: {len(manifest['graphs'])} graphs ({', '.join(manifest['graphs'])}), "
          f"{args.precision}, {'causal' if args.causal else 'window'} gains, opset {manifest['opset']}")
    return 0
