"""KEEP: Kalman-Inspired Feature Propagation for Video Face Super-Resolution (ECCV 2024)."""
__version__ = "0.1.0"


def create_model(name: str = "keep-v1", **kwargs):
    """Build a registered network configuration (``"keep-v1"`` is the released one), in eval mode.

    Lazy import so that ``import keep`` stays light.
    """
    from keep.api import create_model as _create_model
    return _create_model(name, **kwargs)


def load_model(weights=None, **kwargs):
    """Build the released network and load a checkpoint (path or registry name); see :mod:`keep.checkpoint`."""
    from keep.api import load_model as _load_model
    return _load_model(weights, **kwargs)
