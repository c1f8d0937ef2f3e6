"""The ensemble (above the models, below inference): ``spec`` (what ``models/ensemble.json`` holds) and
``fuse`` (the recipe for one image). Tuning its values is training's job: ``pneumo.training.ensemble_tuning``."""

from pneumo.ensemble.fuse import ensemble_probability, finalize_boxes, fuse, fused_member_boxes, score_boxes
from pneumo.ensemble.spec import BOX_SCORES, EnsembleMember, EnsembleSpec, FusionParams

__all__ = [
    "BOX_SCORES", "EnsembleMember", "EnsembleSpec", "FusionParams",
    "ensemble_probability", "finalize_boxes", "fuse", "fused_member_boxes", "score_boxes",
]
