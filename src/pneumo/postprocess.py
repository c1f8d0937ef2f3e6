"""Box post-processing: validation, IoU, weighted box fusion, shrink, clipping, masks/heatmaps -> boxes.

Every array of boxes here is float32 ``(N, 4)`` xyxy, or ``(N, 5)`` with the confidence as the last column,
in the pixels of whatever image the caller works in (normally the original image; see ``pneumo.types``).
Functions never modify their inputs and return new arrays; outputs with a confidence column are sorted by
descending confidence. ``iou_matrix`` is the single IoU implementation of the package (the RSNA metric uses it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pneumo.errors import ConfigError, InvalidBoxesError

__all__ = [
    "as_boxes",
    "iou_matrix",
    "sort_by_confidence",
    "weighted_boxes_fusion",
    "shrink_boxes",
    "clip_boxes",
    "mask_to_boxes",
    "heatmap_to_boxes",
    "fuse_views",
    "mean_heatmap",
]


def as_boxes(boxes: np.ndarray | Sequence, columns: int = 4) -> np.ndarray:
    """Validate and copy ``boxes`` into a float32 ``(N, columns)`` array (``columns`` 4 or 5).

    Accepts anything array-like with ``N`` rows of at least ``columns`` values (extra columns are dropped, so
    ``(N, 5)`` passes where ``(N, 4)`` is asked for); an empty input gives ``(0, columns)``. Raises
    ``InvalidBoxesError`` for too few columns, non-finite values or ``x2 < x1`` / ``y2 < y1``.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, columns), dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] < columns:
        raise InvalidBoxesError(f"expected boxes of shape (N, {columns}), got {array.shape}")
    array = array[:, :columns]
    if not np.isfinite(array).all():
        raise InvalidBoxesError("boxes contain NaN or infinite values")
    if (array[:, 2] < array[:, 0]).any() or (array[:, 3] < array[:, 1]).any():
        raise InvalidBoxesError("boxes must be xyxy with x2 >= x1 and y2 >= y1")
    return array.astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of xyxy boxes: ``(N, 4+)`` x ``(M, 4+)`` -> float64 ``(N, M)``.

    Only the first four columns are used. Areas are ``(x2 - x1) * (y2 - y1)`` (exclusive edges, as in the
    RSNA metric); a pair whose union is empty (two zero-area boxes) has IoU 0.
    """
    a = as_boxes(a, 4).astype(np.float64)
    b = as_boxes(b, 4).astype(np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def sort_by_confidence(boxes: np.ndarray) -> np.ndarray:
    """``(N, 5)`` -> the same rows by descending confidence (stable: equal confidences keep their order)."""
    boxes = as_boxes(boxes, 5)
    return boxes[np.argsort(-boxes[:, 4], kind="stable")]


def weighted_boxes_fusion(
    boxes_list: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    iou_thr: float = 0.55,
    skip_thr: float = 0.0,
    conf_type: str = "avg",
) -> np.ndarray:
    """Weighted boxes fusion (Solovyev, Wang & Gabruseva), one class, by ``ensemble_boxes.weighted_boxes_fusion``.

    ``boxes_list``: one ``(N_i, 5)`` xyxy + confidence array per model (same image, same pixel frame). Boxes
    with confidence below ``skip_thr`` are ignored and zero-area boxes are dropped (as the library does); each
    confidence is multiplied by its model's weight. All boxes are taken by descending weighted confidence; a
    box joins the cluster whose fused box has the highest IoU with it if that IoU is greater than ``iou_thr``,
    else it starts a new cluster. A cluster's fused box is the confidence-weighted mean of its boxes. Its
    confidence (the library's ``conf_type``; its other options, ``box_and_model_avg`` and
    ``absent_model_aware_avg``, are not used by pneumo):

    - ``"avg"``: mean weighted confidence of the cluster x ``min(n_boxes, n_models) / sum(weights)``
      (with unit weights: a box found by only one of two models keeps half its confidence);
    - ``"max"``: highest weighted confidence in the cluster / ``max(weights)``.

    The library wants coordinates in [0, 1]: boxes are mapped there by the per-axis affine map that sends
    the smallest x1/y1 to 0 and the largest x2/y2 to 1 (IoU is invariant under it), then mapped back.
    Returns ``(K, 5)`` float32 by descending fused confidence, in the input pixels.
    """
    from ensemble_boxes import weighted_boxes_fusion as _wbf

    if conf_type not in ("avg", "max"):
        raise ConfigError(f"unknown WBF conf_type {conf_type!r}; use 'avg' or 'max'")
    n_models = len(boxes_list)
    w = np.ones(n_models) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_models,) or (w <= 0).any():
        raise ConfigError(f"WBF needs one positive weight per model ({n_models}), got {list(np.atleast_1d(w))}")
    arrays = []
    for model_boxes in boxes_list:
        b = as_boxes(model_boxes, 5).astype(np.float64)
        arrays.append(b[((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) > 0) & (b[:, 4] >= skip_thr)])
    rows = np.concatenate(arrays) if arrays else np.zeros((0, 5))
    if len(rows) == 0:
        return np.zeros((0, 5), dtype=np.float32)
    low = rows[:, :2].min(axis=0)
    span = np.maximum(rows[:, 2:4].max(axis=0) - low, np.finfo(np.float64).tiny)
    origin, scale = np.tile(low, 2), np.tile(span, 2)
    normalised = [np.clip((b[:, :4] - origin) / scale, 0.0, 1.0) for b in arrays]
    boxes, scores, _ = _wbf(
        normalised, [b[:, 4] for b in arrays], [np.zeros(len(b)) for b in arrays], weights=w.tolist(),
        iou_thr=float(iou_thr), skip_box_thr=float(skip_thr), conf_type=conf_type,
    )
    out = np.column_stack([np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale + origin, scores])
    return sort_by_confidence(out.astype(np.float32))


def shrink_boxes(boxes: np.ndarray, factor: float) -> np.ndarray:
    """Scale width and height by ``factor`` about each box's centre (0.875 -> 87.5 %, the RSNA 1st place).

    Works on ``(N, 4)`` or ``(N, 5)``; the confidence column is kept unchanged.
    """
    if factor <= 0:
        raise ConfigError(f"shrink factor must be positive, got {factor}")
    boxes = np.asarray(boxes, dtype=np.float32)
    columns = 5 if boxes.ndim == 2 and boxes.shape[1] >= 5 else 4
    out = as_boxes(boxes, columns).astype(np.float64)
    cx, cy = (out[:, 0] + out[:, 2]) / 2, (out[:, 1] + out[:, 3]) / 2
    half_w, half_h = (out[:, 2] - out[:, 0]) * factor / 2, (out[:, 3] - out[:, 1]) * factor / 2
    out[:, 0], out[:, 2] = cx - half_w, cx + half_w
    out[:, 1], out[:, 3] = cy - half_h, cy + half_h
    return out.astype(np.float32)


def clip_boxes(boxes: np.ndarray, image_size: tuple[int, int], drop_empty: bool = False) -> np.ndarray:
    """Clip xyxy boxes to an image of ``image_size = (height, width)``; ``(N, 4)`` or ``(N, 5)``.

    With ``drop_empty`` boxes left with zero width or height (wholly outside the image) are removed.
    """
    height, width = image_size
    boxes = np.asarray(boxes, dtype=np.float32)
    columns = 5 if boxes.ndim == 2 and boxes.shape[1] >= 5 else 4
    out = as_boxes(boxes, columns)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    if drop_empty:
        out = out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]
    return out


def mask_to_boxes(
    prob_map: np.ndarray, threshold: float = 0.5, min_area: float = 1.0, reduce: str = "mean"
) -> np.ndarray:
    """Connected components of ``prob_map >= threshold`` -> ``(N, 5)`` boxes in ``prob_map`` pixels.

    ``prob_map``: (H, W) probabilities in [0, 1]. Components use 8-connectivity; each gives its bounding box
    ``(col_min, row_min, col_max + 1, row_max + 1)`` (exclusive edges, so a single pixel is a 1x1 box).
    Components with fewer than ``min_area`` pixels are dropped. Confidence is the **mean** probability over
    the component's pixels (default: a large, uniformly confident region outranks a single hot pixel) or,
    with ``reduce="max"``, its peak probability. Sorted by descending confidence.
    """
    from scipy import ndimage

    if reduce not in ("mean", "max"):
        raise ConfigError(f"unknown reduce {reduce!r}; use 'mean' or 'max'")
    prob = np.asarray(prob_map, dtype=np.float32)
    if prob.ndim != 2:
        raise InvalidBoxesError(f"prob_map must be 2-D (H, W), got shape {prob.shape}")
    labels, n = ndimage.label(prob >= threshold, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 5), dtype=np.float32)
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones_like(prob), labels, index)
    scores = (ndimage.mean if reduce == "mean" else ndimage.maximum)(prob, labels, index)
    out = []
    for k, slices in enumerate(ndimage.find_objects(labels)):
        if slices is None or areas[k] < min_area:
            continue
        rows, cols = slices
        out.append((cols.start, rows.start, cols.stop, rows.stop, scores[k]))
    if not out:
        return np.zeros((0, 5), dtype=np.float32)
    return sort_by_confidence(np.asarray(out, dtype=np.float32))


def heatmap_to_boxes(
    heatmap: np.ndarray,
    image_size: tuple[int, int],
    threshold: float = 0.5,
    min_area: float = 0.0,
    reduce: str = "mean",
) -> np.ndarray:
    """A (h, w) heatmap in [0, 1] covering the whole original image -> ``(N, 5)`` boxes in original pixels.

    ``image_size = (height, width)`` of the original image; heatmap pixel edges are scaled by
    ``width / w`` and ``height / h``. ``min_area`` is in original pixels squared. See ``mask_to_boxes``.
    """
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise InvalidBoxesError(f"heatmap must be a non-empty 2-D array, got shape {heat.shape}")
    height, width = image_size
    sy, sx = height / heat.shape[0], width / heat.shape[1]
    boxes = mask_to_boxes(heat, threshold, min_area=max(min_area / (sx * sy), 0.0), reduce=reduce)
    boxes[:, [0, 2]] *= sx
    boxes[:, [1, 3]] *= sy
    return clip_boxes(boxes, (height, width))


def fuse_views(views: Sequence[np.ndarray], iou_thr: float) -> np.ndarray:
    """TTA views of one model -> (N, 5): the only view as is, or WBF of all views (equal weights) at ``iou_thr``
    (single models use ``pneumo.types.TTA_WBF_IOU``)."""
    if len(views) == 0:
        return np.zeros((0, 5), dtype=np.float32)
    if len(views) == 1:
        return sort_by_confidence(views[0])
    return weighted_boxes_fusion(list(views), iou_thr=iou_thr, conf_type="avg")


def mean_heatmap(heatmaps: Sequence[np.ndarray | None], weights: Sequence[float] | None = None) -> np.ndarray | None:
    """Weighted mean of (h_i, w_i) heatmaps over the same image, resized to the largest one; None if none."""
    from pneumo.preprocess import resize_float

    pairs = [(h, 1.0 if weights is None else float(weights[i])) for i, h in enumerate(heatmaps) if h is not None]
    pairs = [(h, w) for h, w in pairs if w > 0]
    if not pairs:
        return None
    shape = max((h.shape for h, _ in pairs), key=lambda s: s[0] * s[1])
    total = sum(w for _, w in pairs)
    out = np.zeros(shape, dtype=np.float32)
    for heat, weight in pairs:
        out += (weight / total) * resize_float(np.asarray(heat, dtype=np.float32), *shape)
    return np.clip(out, 0.0, 1.0)
