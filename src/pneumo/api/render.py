"""PNG and CSV renderings of a stored result (radiograph, heatmap, overlay, Kaggle submission row).

Renders work on the result's bounded display copy (``pneumo.display``), so their memory does not grow with the
input's size; the routes run them in the same bounded worker pool as inference."""

from __future__ import annotations

import base64
import csv
import io

import numpy as np
from PIL import Image

from pneumo.api.store import StoredResult
from pneumo.display import boxes_to_display
from pneumo.outputs import SUBMISSION_HEADER, boxes_from_prediction, csv_cell, format_prediction_string, render_overlay
from pneumo.types import Prediction

HEATMAP_MAX_ALPHA = 0.75


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W) uint8 (rounded)."""
    return (np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(array: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 (H, W), (H, W, 3) or (H, W, 4) -> PNG bytes (fast compression: these are served, not archived)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_png(result: StoredResult) -> bytes:
    """The decoded radiograph, 8-bit grayscale PNG: its display copy (original size up to
    ``pneumo.display.DISPLAY_MAX_PIXELS``, else scaled down; boxes stay in original pixels)."""
    return png_bytes(result.image_u8)


def heatmap_rgba(heatmap: np.ndarray) -> np.ndarray:
    """(h, w) float in [0, 1] -> (h, w, 4) uint8: a 'jet' colour with alpha rising with the value, so cold
    regions stay transparent when the layer is drawn over the radiograph (any resolution; scale to display)."""
    from matplotlib import colormaps

    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    rgba = colormaps["jet"](heat)  # (h, w, 4) float
    rgba[..., 3] = HEATMAP_MAX_ALPHA * heat
    return (rgba * 255.0 + 0.5).astype(np.uint8)


def heatmap_png(result: StoredResult) -> bytes | None:
    heatmap = result.prediction.heatmap
    return None if heatmap is None else png_bytes(heatmap_rgba(heatmap))


def overlay_png(result: StoredResult, with_heatmap: bool = False) -> bytes:
    """The radiograph with predicted boxes (orange, with confidences), ground truth (green) and the
    decision-support caption, drawn by ``pneumo.outputs.render_overlay``."""
    prediction = result.prediction
    shown = result.image_u8.shape
    truth = None if result.ground_truth is None else boxes_to_display(result.ground_truth, prediction.image_size, shown)
    rgb = render_overlay(
        result.image_u8.astype(np.float32) / 255.0,
        pred_boxes=boxes_to_display(boxes_from_prediction(prediction), prediction.image_size, shown),
        gt_boxes=truth,
        heatmap=prediction.heatmap if with_heatmap else None,
        title=f"pneumonia probability {prediction.probability:.1%}",
        model_name=model_label(prediction),
    )
    return png_bytes(rgb)


def model_label(prediction: Prediction) -> str:
    """``"chexnet-0.1.0+063c0b19"`` (the version already names the model) or ``"name version"``."""
    if prediction.model_version.startswith(prediction.model):
        return prediction.model_version
    return f"{prediction.model} {prediction.model_version}"


def submission_csv(result: StoredResult) -> str:
    """The Kaggle RSNA submission for this image: header plus one ``patientId,PredictionString`` row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUBMISSION_HEADER)
    boxes = boxes_from_prediction(result.prediction)
    writer.writerow((csv_cell(result.submission_id), format_prediction_string(boxes)))
    return buffer.getvalue()
