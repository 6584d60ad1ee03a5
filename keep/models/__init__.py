"""Training models, one per stage, registered in :data:`keep.registry.MODELS` as ``stage1`` .. ``stage3``."""
from keep.models.base import StageModel
from keep.models.stage1 import VQGANStage
from keep.models.stage2 import CodePredictionStage
from keep.models.stage3 import FusionStage

__all__ = ["StageModel", "VQGANStage", "CodePredictionStage", "FusionStage"]
