"""Writers and readers of pneumo's outputs: Kaggle submission CSV, JSON lines, overlay PNGs.

Boxes in memory are float32 ``(N, 5)`` xyxy + confidence in original pixels; RSNA's ``x y width height``
appears only in the files. Every writer is atomic (``pneumo.files.atomic_write``): readers never see half a file.

Submission CSV format (Kaggle RSNA): header ``patientId,PredictionString``; the prediction string repeats
``conf x y width height`` per box, highest confidence first, separated by single spaces, empty for no box.
Confidence is written with 6 decimals. Coordinates are whole pixels, as in the challenge's own files: the
corners are rounded half-up (x = round(x1), width = round(x2) - round(x1)), so each corner moves at most
0.5 px; a box whose rounded width or height is 0 is left out (it could never match anything).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from pneumo.errors import DataLayoutError, InvalidBoxesError, InvalidImageError
from pneumo.files import atomic_write
from pneumo.postprocess import as_boxes, sort_by_confidence
from pneumo.types import Prediction, boxes_to_array

__all__ = [
    "csv_cell",
    "uncsv_cell",
    "format_prediction_string",
    "parse_prediction_string",
    "write_submission_csv",
    "read_submission_csv",
    "write_jsonl",
    "prediction_to_record",
    "PredictionSet",
    "read_predictions",
    "render_overlay",
    "save_png",
    "boxes_from_prediction",
    "rows_from_predictions",
]

SUBMISSION_HEADER = ("patientId", "PredictionString")
PREDICTION_COLOUR = (255, 120, 0)  # orange
GROUND_TRUTH_COLOUR = (40, 220, 60)  # green
CAPTION = "Decision support - not a diagnosis"  # ASCII: Pillow's default font has no em dash


#: first characters that make a spreadsheet read a text cell as a formula (CSV / formula injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell made safe for spreadsheets: one starting with ``= + - @``, tab or CR gets a leading
    apostrophe (OWASP's advice). Numbers pass unchanged (a negative number is not a formula); use for every
    text cell of every CSV pneumo writes."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def uncsv_cell(text: str) -> str:
    """Undo ``csv_cell`` (for reading back files pneumo wrote)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def _round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(values, dtype=np.float64) + 0.5).astype(np.int64)


def format_prediction_string(boxes: np.ndarray) -> str:
    """``(N, 5)`` xyxy + confidence -> ``"conf x y width height ..."`` (see the module docstring)."""
    boxes = sort_by_confidence(boxes)
    x1, y1, x2, y2 = (_round_half_up(boxes[:, k]) for k in range(4))
    parts = []
    for i in range(len(boxes)):
        width, height = x2[i] - x1[i], y2[i] - y1[i]
        if width > 0 and height > 0:
            parts.append(f"{boxes[i, 4]:.6f} {x1[i]} {y1[i]} {width} {height}")
    return " ".join(parts)


def parse_prediction_string(text: str) -> np.ndarray:
    """``"conf x y width height ..."`` -> float32 ``(N, 5)`` xyxy + confidence; raises ``DataLayoutError``."""
    tokens = (text or "").split()
    if len(tokens) % 5:
        raise DataLayoutError(f"a PredictionString needs groups of 5 numbers, got {len(tokens)} values")
    try:
        values = np.asarray([float(t) for t in tokens], dtype=np.float64).reshape(-1, 5)
    except ValueError as error:
        raise DataLayoutError(f"a PredictionString holds a non-number: {error}") from None
    if not np.isfinite(values).all() or (values[:, 3:5] < 0).any():
        raise DataLayoutError("a PredictionString holds a non-finite value or a negative width/height")
    out = np.column_stack([values[:, 1], values[:, 2], values[:, 1] + values[:, 3],
                           values[:, 2] + values[:, 4], values[:, 0]])
    return sort_by_confidence(out.astype(np.float32))


def write_submission_csv(path: str | os.PathLike, rows: Iterable[tuple[str, np.ndarray]]) -> Path:
    """Write a Kaggle submission: one row per ``(patient_id, boxes (N, 5) xyxy + conf, original px)``."""
    seen: set[str] = set()
    with atomic_write(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SUBMISSION_HEADER)
        for patient_id, boxes in rows:
            if patient_id in seen:
                raise DataLayoutError("duplicate patientId in submission rows")
            seen.add(patient_id)
            writer.writerow((csv_cell(patient_id), format_prediction_string(boxes)))
    return Path(path)


def _open_text(path: str | os.PathLike) -> IO[str]:
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as error:
        raise DataLayoutError(f"cannot read {path}: {error.strerror or error}") from None


def read_submission_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Kaggle submission CSV -> patientId -> float32 ``(N, 5)`` xyxy + confidence (original px)."""
    out: dict[str, np.ndarray] = {}
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or [f.strip() for f in reader.fieldnames[:2]] != list(SUBMISSION_HEADER):
            raise DataLayoutError(f"{path}: expected header 'patientId,PredictionString', got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            patient_id = uncsv_cell((row.get("patientId") or "").strip())
            if not patient_id:
                raise DataLayoutError(f"{path}:{line}: empty patientId")
            if patient_id in out:
                raise DataLayoutError(f"{path}:{line}: patientId appears twice")
            try:
                out[patient_id] = parse_prediction_string(row.get("PredictionString") or "")
            except DataLayoutError as error:
                raise DataLayoutError(f"{path}:{line}: {error}") from None
    return out


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically (NaN/inf are refused: they are not JSON)."""
    with atomic_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n")
    return Path(path)


def prediction_to_record(patient_id: str, prediction: Prediction) -> dict[str, Any]:
    """A JSON-lines record: ``{"patientId": ..., **prediction.to_json()}``, plus ``"threshold"`` when the
    prediction carries its operating threshold in ``extra["threshold"]``."""
    record: dict[str, Any] = {"patientId": patient_id, **prediction.to_json()}
    threshold = prediction.extra.get("threshold") if prediction.extra else None
    if isinstance(threshold, (int, float)) and math.isfinite(threshold):
        record["threshold"] = float(threshold)
    return record


@dataclass(frozen=True)
class PredictionSet:
    """Predictions read from a file.

    boxes: patientId -> float32 (N, 5) xyxy + confidence, original px. probabilities: patientId -> image
    probability, or None for a submission CSV (which has none). threshold: the operating threshold recorded in
    the file (the same ``threshold`` in every JSONL record that has one), else None. models: model names seen.
    """

    boxes: dict[str, np.ndarray]
    probabilities: dict[str, float] | None
    threshold: float | None
    models: tuple[str, ...]


def _record_boxes(items: Any, where: str) -> np.ndarray:
    if items is None:
        return np.zeros((0, 5), dtype=np.float32)
    if not isinstance(items, list):
        raise DataLayoutError(f"{where}: 'boxes' must be a list")
    rows = []
    for item in items:
        try:
            x, y = float(item["x"]), float(item["y"])
            w, h = float(item["width"]), float(item["height"])
            conf = float(item.get("confidence", 1.0))
        except (TypeError, KeyError, ValueError):
            raise DataLayoutError(f"{where}: each box needs numeric x, y, width, height, confidence") from None
        rows.append((x, y, x + w, y + h, conf))
    try:
        return sort_by_confidence(np.asarray(rows, dtype=np.float32).reshape(-1, 5))
    except InvalidBoxesError as error:
        raise DataLayoutError(f"{where}: {error}") from None


def _read_jsonl(path: str | os.PathLike) -> PredictionSet:
    boxes: dict[str, np.ndarray] = {}
    probabilities: dict[str, float] = {}
    thresholds: set[float] = set()
    models: list[str] = []
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataLayoutError(f"{where}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("patientId"), str):
                raise DataLayoutError(f"{where}: each line must be an object with a string 'patientId'")
            patient_id = record["patientId"]
            if patient_id in boxes:
                raise DataLayoutError(f"{where}: patientId appears twice")
            boxes[patient_id] = _record_boxes(record.get("boxes"), where)
            probability = record.get("probability")
            if probability is not None:
                if not isinstance(probability, (int, float)) or not 0.0 <= float(probability) <= 1.0:
                    raise DataLayoutError(f"{where}: 'probability' must be a number in [0, 1]")
                probabilities[patient_id] = float(probability)
            if isinstance(record.get("threshold"), (int, float)):
                thresholds.add(float(record["threshold"]))
            model = record.get("model")
            if isinstance(model, str) and model not in models:
                models.append(model)
    return PredictionSet(
        boxes=boxes,
        probabilities=probabilities or None,
        threshold=thresholds.pop() if len(thresholds) == 1 else None,
        models=tuple(models),
    )


def read_predictions(path: str | os.PathLike) -> PredictionSet:
    """Read predictions from a submission ``.csv`` or a ``.jsonl`` written by ``write_jsonl``.

    JSONL records: ``patientId``, ``probability``, ``boxes`` (list of ``{x, y, width, height, confidence}`` in
    original pixels), ``model``, ``model_version`` and optionally ``threshold``; other keys are ignored.
    Raises ``DataLayoutError`` for an unknown suffix or malformed content.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return PredictionSet(read_submission_csv(path), None, None, ())
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    raise DataLayoutError(f"{path}: predictions must be a .csv submission or a .jsonl file")


# ----------------------------------------------------------------------------------------------- overlays


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size), True
    except (TypeError, ValueError, OSError):  # Pillow without FreeType: fixed bitmap font, latin-1 only
        return ImageFont.load_default(), False


def _heat_colours(heat: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float in [0, 1], a blue-cyan-yellow-red ramp ending in bright red."""
    r = np.clip(4 * heat - 1.5, 0, 1)
    g = np.clip(1.5 - np.abs(4 * heat - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * heat - 1), 0, 1)
    return np.stack([r, g, b], axis=-1)


def render_overlay(
    pixels: np.ndarray,
    pred_boxes: np.ndarray | None = None,
    gt_boxes: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
    title: str = "",
    model_name: str | None = None,
    heatmap_alpha: float = 0.45,
) -> np.ndarray:
    """Draw an image with its predictions -> uint8 RGB ``(H, W, 3)`` of the same size as ``pixels``.

    ``pixels``: (H, W) float in [0, 1] (MONOCHROME2). ``pred_boxes``: (N, 5) xyxy + confidence in ``pixels``
    coordinates, drawn in orange with their confidence; ``gt_boxes``: (M, 4) drawn in green. ``heatmap``:
    (h, w) in [0, 1] over the whole image, resized bilinearly and alpha-blended with weight
    ``heatmap_alpha * heat`` (cold areas stay grey). ``title`` goes top-left; the bottom line says
    "Decision support - not a diagnosis" and the model name.
    """
    from PIL import Image, ImageDraw

    gray = np.asarray(pixels, dtype=np.float32)
    if gray.ndim != 2 or gray.size == 0:
        raise InvalidImageError(f"pixels must be a non-empty (H, W) array, got shape {gray.shape}")
    gray = np.clip(np.nan_to_num(gray), 0.0, 1.0)
    height, width = gray.shape
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if heatmap is not None:
        heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
        if heat.shape != gray.shape:
            heat = np.asarray(Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR))
        alpha = heatmap_alpha * heat[..., None]
        rgb = (1 - alpha) * rgb + alpha * _heat_colours(heat)
    image = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    line = max(1, round(min(height, width) / 256))
    font_size = max(9, round(min(height, width) / 40))
    font, scalable = _font(font_size)

    def text(xy: tuple[float, float], message: str, colour: tuple[int, int, int]) -> None:
        if not scalable:
            message = message.encode("latin-1", "replace").decode("latin-1")
        left, top, right, bottom = draw.textbbox(xy, message, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=(0, 0, 0))
        draw.text(xy, message, fill=colour, font=font)

    if gt_boxes is not None:
        for x1, y1, x2, y2 in as_boxes(gt_boxes, 4):
            draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=GROUND_TRUTH_COLOUR, width=line)
    if pred_boxes is not None:
        for x1, y1, x2, y2, conf in sort_by_confidence(pred_boxes)[::-1]:
            draw.rectangle((x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)), outline=PREDICTION_COLOUR, width=line)
            text((x1 + line + 1, y1 + line + 1), f"{conf:.2f}", PREDICTION_COLOUR)
    if title:
        text((line + 2, line + 2), title, (255, 255, 255))
    lines = [CAPTION] + ([f"model: {model_name}"] if model_name else [])
    while scalable and font_size > 7 and max(draw.textlength(t, font=font) for t in lines) > width - 2 * line - 6:
        font_size -= 1  # narrow images: shrink the caption until it fits
        font, scalable = _font(font_size)
    y = height - line - 3
    for message in reversed(lines):
        y -= font_size + 3
        text((line + 2, y), message, (255, 255, 255))
    return np.asarray(image, dtype=np.uint8)


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Save a uint8 (H, W, 3) RGB or (H, W) gray array as PNG, atomically."""
    from PIL import Image

    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageError(f"save_png needs uint8 (H, W), (H, W, 3) or (H, W, 4), got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def boxes_from_prediction(prediction: Prediction) -> np.ndarray:
    """A ``Prediction``'s boxes as float32 ``(N, 5)`` xyxy + confidence."""
    return boxes_to_array(list(prediction.boxes), with_confidence=True)


def rows_from_predictions(items: Sequence[tuple[str, Prediction]]) -> list[tuple[str, np.ndarray]]:
    """``[(patient_id, Prediction)]`` -> rows for ``write_submission_csv``."""
    return [(patient_id, boxes_from_prediction(p)) for patient_id, p in items]
