"""Pure ``nn.Module`` networks, registered in :data:`keep.registry.ARCHS` when this package is imported."""
from keep.registry import ARCHS

from keep.archs import (  # noqa: F401  (imported for their registrations)
    discriminator,
    flow,
    fusion,
    kalman,
    keep_net,
    layers,
    transformer,
    vqgan,
    warp,
)

__all__ = ["ARCHS"]
