"""Training data: RSNA Kaggle layout and NIH weak labels -> records, patient-level folds, an image cache,
paired augmentations and torch datasets (``pneumo.data.datasets``, imported on demand: it needs torch).

See docs/data.md for the layouts read, the fold policy and the cache design.
"""

from __future__ import annotations

from pneumo.data.folds import assign_folds, split_records
from pneumo.data.nih import NihRecord, read_nih
from pneumo.data.records import ImageRecord
from pneumo.data.rsna import RsnaRecord, read_rsna, read_rsna_labels

__all__ = [
    "ImageRecord",
    "NihRecord",
    "RsnaRecord",
    "assign_folds",
    "read_nih",
    "read_rsna",
    "read_rsna_labels",
    "split_records",
]
