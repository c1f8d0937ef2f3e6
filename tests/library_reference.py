"""The hand-written implementations pneumo used before it called libraries for them (copied verbatim from the
commit before issue 16's library replacements): the reference the parity tests compare the libraries with."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pneumo.postprocess import as_boxes, iou_matrix, sort_by_confidence


def weighted_boxes_fusion(
    boxes_list: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    iou_thr: float = 0.55,
    skip_thr: float = 0.0,
    conf_type: str = "avg",
) -> np.ndarray:
    """Weighted boxes fusion (Solovyev, Wang & Gabruseva; the ZFTurbo ``ensemble_boxes`` algorithm), one class.

    ``boxes_list``: one ``(N_i, 5)`` array per model (same image, same pixel frame). Boxes with confidence
    below ``skip_thr`` are ignored; each confidence is multiplied by its model's weight. All boxes are taken
    by descending weighted confidence; a box joins the cluster whose current fused box has the highest IoU
    with it if that IoU is greater than ``iou_thr``, else it starts a new cluster. A cluster's fused box is the
    confidence-weighted mean of its boxes' coordinates. Its confidence:

    - ``"avg"``: mean weighted confidence of the cluster x ``min(n_boxes, n_models) / sum(weights)``
      (with unit weights: mean confidence x min(n_boxes, n_models) / n_models, so a box found by only one of
      two models keeps half its confidence);
    - ``"max"``: highest weighted confidence in the cluster / ``max(weights)``.

    As in ZFTurbo's code, ``n_boxes`` counts boxes in the cluster (two boxes of one model count twice).
    Returns ``(K, 5)`` by descending fused confidence.
    """
    if conf_type not in ("avg", "max"):
        raise ValueError(f"unknown WBF conf_type {conf_type!r}; use 'avg' or 'max'")
    n_models = len(boxes_list)
    w = np.ones(n_models) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_models,) or (w <= 0).any():
        raise ValueError(f"WBF needs one positive weight per model ({n_models}), got {list(np.atleast_1d(w))}")
    rows = []  # (weighted confidence, model weight, x1, y1, x2, y2)
    for model_boxes, weight in zip(boxes_list, w):
        b = as_boxes(model_boxes, 5).astype(np.float64)
        b = b[b[:, 4] >= skip_thr]
        if len(b):
            rows.append(np.column_stack([b[:, 4] * weight, np.full(len(b), weight), b[:, :4]]))
    if not rows:
        return np.zeros((0, 5), dtype=np.float32)
    all_rows = np.concatenate(rows)
    all_rows = all_rows[np.argsort(-all_rows[:, 0], kind="stable")]

    clusters: list[list[np.ndarray]] = []
    fused: list[np.ndarray] = []  # current fused xyxy per cluster
    for row in all_rows:
        best = -1
        if fused:
            ious = iou_matrix(row[None, 2:6], np.asarray(fused))[0]
            j = int(np.argmax(ious))
            if ious[j] > iou_thr:
                best = j
        if best < 0:
            clusters.append([row])
            fused.append(row[2:6].copy())
        else:
            clusters[best].append(row)
            members = np.asarray(clusters[best])
            fused[best] = (members[:, 0:1] * members[:, 2:6]).sum(axis=0) / members[:, 0].sum()

    out = np.zeros((len(clusters), 5), dtype=np.float64)
    for k, members_list in enumerate(clusters):
        members = np.asarray(members_list)
        out[k, :4] = fused[k]
        if conf_type == "avg":
            out[k, 4] = members[:, 0].mean() * min(len(members), n_models) / w.sum()
        else:
            out[k, 4] = members[:, 0].max() / w.max()
    return sort_by_confidence(out.astype(np.float32))


def roc_auc(s: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    s, y = np.asarray(s, dtype=np.float64), np.asarray(y, dtype=np.int64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _cumulative_counts(s: np.ndarray, y: np.ndarray):
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1] if s.size else np.array([], int)
    tps = np.cumsum(y_sorted)[last_of_group]
    fps = (last_of_group + 1) - tps
    return s_sorted[last_of_group], tps.astype(np.float64), fps.astype(np.float64)


def roc_curve(s: np.ndarray, y: np.ndarray):
    s, y = np.asarray(s, dtype=np.float64), np.asarray(y, dtype=np.int64)
    thresholds, tps, fps = _cumulative_counts(s, y)
    n_pos, n_neg = y.sum(), y.size - y.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = np.r_[0.0, tps] / n_pos if n_pos else np.full(tps.size + 1, np.nan)
        fpr = np.r_[0.0, fps] / n_neg if n_neg else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def precision_recall_curve(s: np.ndarray, y: np.ndarray):
    s, y = np.asarray(s, dtype=np.float64), np.asarray(y, dtype=np.int64)
    thresholds, tps, fps = _cumulative_counts(s, y)
    n_pos = y.sum()
    precision = tps / (tps + fps)
    recall = tps / n_pos if n_pos else np.full(tps.size, np.nan)
    return precision, recall, thresholds


def average_precision(s: np.ndarray, y: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(s, y)
    if recall.size == 0 or np.isnan(recall).any():
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


# ---- paired augmentation (pneumo.data.augment before torchvision.transforms.v2)


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: x -> W - x for the image and the boxes."""
    width = image.shape[1]
    flipped = np.ascontiguousarray(image[:, ::-1])
    out = _boxes(boxes).copy()
    out[:, [0, 2]] = width - out[:, [2, 0]]
    return flipped, out


def affine_matrix(
    height: int, width: int, scale: float = 1.0, translate: tuple[float, float] = (0.0, 0.0), angle_deg: float = 0.0
) -> np.ndarray:
    """3x3 matrix taking input (x, y, 1) to output coordinates: scale and rotate about the image centre,
    then shift by ``translate`` = (dx, dy) pixels. Positive angles turn clockwise on screen (y down)."""
    cx, cy = width / 2.0, height / 2.0
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta) * scale, math.sin(theta) * scale
    linear = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    to_origin = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, cx + translate[0]], [0.0, 1.0, cy + translate[1]], [0.0, 0.0, 1.0]])
    return back @ linear @ to_origin


def affine(
    image: np.ndarray,
    boxes: np.ndarray,
    matrix: np.ndarray,
    min_box_size: float = 2.0,
    min_visible: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` by the 3x3 ``matrix`` (bilinear, outside filled with 0) and its boxes by their corners.

    Each box becomes the axis-aligned box around its four transformed corners, clipped to the image; it is
    dropped when narrower / shorter than ``min_box_size`` px or when less than ``min_visible`` of its area
    remains inside the image.
    """
    height, width = image.shape
    inverse = np.linalg.inv(matrix)
    warped = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F").transform(
        (width, height),
        Image.Transform.AFFINE,
        data=tuple(inverse[:2].ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=0.0,
    )
    out_image = np.clip(np.asarray(warped, dtype=np.float32), 0.0, 1.0)
    return out_image, transform_boxes(boxes, matrix, height, width, min_box_size, min_visible)


def transform_boxes(
    boxes: np.ndarray, matrix: np.ndarray, height: int, width: int, min_box_size: float = 2.0, min_visible: float = 0.3
) -> np.ndarray:
    """(N, 4) xyxy -> boxes around the transformed corners, clipped to (height, width), small ones dropped."""
    boxes = _boxes(boxes)
    if not len(boxes):
        return boxes.copy()
    x1, y1, x2, y2 = boxes.T.astype(np.float64)
    corners = np.stack(
        [np.stack([x1, y1]), np.stack([x2, y1]), np.stack([x1, y2]), np.stack([x2, y2])], axis=0
    )  # (4, 2, N)
    xs = matrix[0, 0] * corners[:, 0] + matrix[0, 1] * corners[:, 1] + matrix[0, 2]
    ys = matrix[1, 0] * corners[:, 0] + matrix[1, 1] * corners[:, 1] + matrix[1, 2]
    moved = np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1)
    clipped = moved.copy()
    clipped[:, [0, 2]] = np.clip(moved[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(moved[:, [1, 3]], 0, height)
    full = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (w >= min_box_size) & (h >= min_box_size) & (w * h >= min_visible * np.maximum(full, 1e-9))
    return clipped[keep].astype(np.float32)


def _boxes(boxes: np.ndarray) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy, got shape {array.shape}")
    return array
