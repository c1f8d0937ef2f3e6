"""A bounded, thread-safe, in-memory LRU of recent results in front of the database (``pneumo.store``), so
follow-up GETs (overlay, heatmap, image, CSV) of recent results need no database read or PNG decode. The
database is the record: this cache only holds copies."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pneumo.types import Prediction


@dataclass
class StoredResult:
    """One analysed image.

    image_u8: (h, w) uint8 radiograph, MONOCHROME2: the bounded display copy (``pneumo.display.display_copy``;
      the full image up to 1536 x 1536 px), never the float pixels.
    ground_truth: float32 (N, 4) xyxy original px, or None when the server has no labels for this image.
    submission_id: the Kaggle ``patientId`` (DICOM PatientID or file stem): used in the CSV row, never logged.
    payload: the JSON body returned by ``POST /v1/predictions`` (without embedded images).
    """

    id: str
    prediction: Prediction
    image_u8: np.ndarray
    ground_truth: np.ndarray | None
    submission_id: str
    payload: dict[str, Any]
    renders: dict[str, bytes] = field(default_factory=dict)  # cached PNGs by kind

    @property
    def nbytes(self) -> int:
        heat = self.prediction.heatmap
        size = self.image_u8.nbytes + (heat.nbytes if heat is not None else 0)
        return size + sum(len(b) for b in self.renders.values())


class ResultStore:
    """LRU bounded by entry count and by approximate bytes; the oldest results are evicted first."""

    def __init__(self, max_entries: int = 256, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, StoredResult] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, result: StoredResult) -> None:
        with self._lock:
            self._items[result.id] = result
            self._items.move_to_end(result.id)
            self._evict()

    def get(self, result_id: str) -> StoredResult | None:
        with self._lock:
            result = self._items.get(result_id)
            if result is not None:
                self._items.move_to_end(result_id)
            return result

    def add_render(self, result: StoredResult, kind: str, png: bytes) -> None:
        """Cache a rendered PNG with its result (counted against the byte bound)."""
        with self._lock:
            result.renders[kind] = png
            self._evict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _evict(self) -> None:
        total = sum(r.nbytes for r in self._items.values())
        while self._items and (len(self._items) > self.max_entries or total > self.max_bytes):
            if len(self._items) == 1:
                break  # always keep the newest result, even if it alone is above the byte bound
            _, oldest = self._items.popitem(last=False)
            total -= oldest.nbytes
