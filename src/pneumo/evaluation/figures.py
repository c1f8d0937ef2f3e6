"""The figures a front end may show about the shipped models, and where they come from.

* Cross-validated (``cv``): the fenced ```json metrics block of each model card ``<model_dir>/<name>.md``
  (out-of-fold figures recorded when the models were chosen; keys ``cv_auc_mean``, ``cv_auc_std``,
  ``cv_map_mean``, ``cv_map_std``, ``cv_folds``).
* Held out (``heldout``): ``<model_dir>/heldout.json`` from ``scripts/heldout_calibration.py``: the shipped
  weights run on patients they never saw (rsna-plus), with 95 % patient-bootstrap intervals.
* Anything in ``<name>.history.csv`` of a shipped model is in-sample: the shipped weights were fitted on all
  the images their "validation" columns were computed on, so those columns are training-data figures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HELDOUT_FILE = "heldout.json"
_METRICS_BLOCK = re.compile(r"```json metrics\n(.*?)\n```", flags=re.S)


def card_metrics(model_dir: Path, name: str) -> dict[str, Any]:
    """The metrics block of ``<model_dir>/<name>.md`` ({} when the card or block is missing or unreadable)."""
    try:
        match = _METRICS_BLOCK.search((Path(model_dir) / f"{name}.md").read_text(encoding="utf-8"))
        return dict(json.loads(match.group(1))) if match else {}
    except (OSError, ValueError):
        return {}


def heldout_figures(model_dir: Path) -> dict[str, Any]:
    """``<model_dir>/heldout.json`` ({} when missing or unreadable): {"data": ..., "models": {name: {...}}}."""
    try:
        data = json.loads((Path(model_dir) / HELDOUT_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
