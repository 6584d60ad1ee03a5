"""``--backend`` on the command line (no heavy import: argument parsing stays fast)."""
from __future__ import annotations

import argparse

BACKENDS = ("torch", "onnxruntime", "openvino")


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="what runs the network: torch (default, eager PyTorch), onnxruntime or openvino "
                             "(graphs exported from --weights on first use, cached beside them; "
                             'pip install -e ".[onnx]" or ".[openvino]"; see docs/deploy.md). '
                             "--bf16/--fp16 then pick the runtime's reduced precision")
