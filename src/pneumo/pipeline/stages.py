"""Running the pipeline's stages in order (``pneumo models STAGE...``); each stage lives with its job:
``pretrain`` / ``cv`` / ``final`` in ``pneumo.pipeline.cv``, ``report`` in ``pneumo.pipeline.report``, ``ship`` in
``pneumo.pipeline.shipping``."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pneumo.errors import ConfigError

if TYPE_CHECKING:
    from pneumo.pipeline.cv import Pipeline

#: the stages, in their natural order (importing this module is cheap: ``pneumo models --help`` lists them)
STAGES: tuple[str, ...] = ("pretrain", "cv", "report", "final", "ship")


def run_stages(pipeline: Pipeline, stages: Sequence[str]) -> None:
    """Run ``stages`` in the order given (each one of ``STAGES``)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    from pneumo.pipeline.cv import stage_cv, stage_final, stage_pretrain
    from pneumo.pipeline.report import stage_report
    from pneumo.pipeline.shipping import stage_ship

    table = {"pretrain": stage_pretrain, "cv": stage_cv, "report": stage_report, "final": stage_final,
             "ship": stage_ship}
    pipeline.log(f"pneumo models {' '.join(stages)}: work {pipeline.settings.work}, data "
                 f"{', '.join(p.name for p in pipeline.settings.data)}, {pipeline.settings.folds} folds, "
                 f"experiments {', '.join(pipeline.experiments)}; python {sys.version.split()[0]}")
    for stage in stages:
        started = time.monotonic()
        table[stage](pipeline)
        pipeline.log(f"stage {stage} finished in {time.monotonic() - started:.0f} s")
