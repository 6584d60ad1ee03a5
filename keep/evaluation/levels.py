"""The VFHQ-mild / -medium / -heavy test splits (supplement Table A1) and their per-clip seeds.

| level  | noise δ (0–255) | blur σ  | CRF      |
|--------|-----------------|---------|----------|
| mild   | [0, 5]          | [2, 5]  | [18, 25] |
| medium | [5, 10]         | [5, 10] | [25, 35] |
| heavy  | [5, 10]         | [5, 10] | [35, 45] |

Same degradation model as training, under a named protocol (``release``: the release's data code,
the default; ``paper``: Eq. 9 as printed; docs/protocol.md). LQ kept at 128×128 (×4 down, no
up-scale), like the release's synthetic examples; the network up-scales them itself.
"""
from __future__ import annotations

import hashlib

from typing import Optional, Sequence

from keep.data.degradation import DEFAULT_PROTOCOL, DegradationConfig

TABLE_A1 = {
    "mild": {"noise_sigma": (0.0, 5.0), "blur_sigma": (2.0, 5.0), "crf": (18, 25)},
    "medium": {"noise_sigma": (5.0, 10.0), "blur_sigma": (5.0, 10.0), "crf": (25, 35)},
    "heavy": {"noise_sigma": (5.0, 10.0), "blur_sigma": (5.0, 10.0), "crf": (35, 45)},
}


def level_config(level: str, order: Optional[Sequence[str]] = None, protocol: str = DEFAULT_PROTOCOL,
                 fps: Optional[int] = None) -> DegradationConfig:
    """DegradationConfig of a Table A1 level under ``protocol`` (LQ at 1/4 size, not up-scaled);
    ``order`` / ``fps`` override the protocol's step order / codec frame rate."""
    if level not in TABLE_A1:
        raise ValueError(f"unknown level '{level}'; use one of {', '.join(TABLE_A1)}")
    return DegradationConfig(**TABLE_A1[level], protocol=protocol, upsample=False,
                             order=list(order) if order is not None else None, fps=fps)


def clip_seed(level: str, clip: str, base_seed: int = 0) -> int:
    """A seed that depends only on (level, clip name, base seed): stable across machines and runs
    (Python's ``hash`` of a string is salted per process, sha256 is not)."""
    digest = hashlib.sha256(f"{level}/{clip}/{base_seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
