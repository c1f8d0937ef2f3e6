"""The evaluation report: a self-contained folder with ``index.html``, its PNG plots, ``metrics.json`` and
``per_image.csv``.

Plots are drawn with matplotlib's object API on an explicit Agg canvas created inside each plotting function:
no ``pyplot``, no ``matplotlib.use``, no global state, nothing at import time.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.evaluation.rsna_map import MapResult

__all__ = ["sort_worst_first", "thumbnail_overlay", "write_report"]

MAX_TABLE_ROWS = 500
PER_IMAGE_COLUMNS = ("patientId", "score", "n_gt", "n_pred", "top_confidence", "probability", "label")


def sort_worst_first(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Per-image rows by ascending ``score`` (more ground-truth boxes first on ties), skipped (None) last."""
    def key(row: Mapping[str, Any]) -> tuple:
        score = row.get("score")
        return (score is None, score if score is not None else 0.0, -(row.get("n_gt") or 0),
                str(row.get("patientId", "")))

    return sorted(rows, key=key)


def thumbnail_overlay(
    pixels: np.ndarray,
    pred_boxes: np.ndarray | None,
    gt_boxes: np.ndarray | None,
    title: str = "",
    model_name: str | None = None,
    max_size: int = 320,
) -> np.ndarray:
    """A small overlay (longest side ``max_size``): ``pixels`` (H, W) in [0, 1], boxes in its pixels."""
    from PIL import Image

    from pneumo.outputs import render_overlay
    from pneumo.postprocess import as_boxes

    gray = np.asarray(pixels, dtype=np.float32)
    scale = min(1.0, max_size / max(gray.shape))
    if scale < 1.0:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        gray = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR))
    pred = None if pred_boxes is None else as_boxes(pred_boxes, 5)
    gt = None if gt_boxes is None else as_boxes(gt_boxes, 4)
    if pred is not None:
        pred[:, :4] *= scale
    if gt is not None:
        gt *= scale
    return render_overlay(gray, pred, gt, None, title=title, model_name=model_name)


# ------------------------------------------------------------------------------------------------ plots


def _figure(width: float = 4.6, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> str:
    from pneumo.files import atomic_write

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path.name


def _plot_roc(path: Path, fpr: np.ndarray, tpr: np.ndarray, auc: float) -> str:
    figure = _figure()
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, color="tab:red", lw=2, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    return _save(figure, path)


def _plot_pr(path: Path, precision: np.ndarray, recall: np.ndarray, ap: float, prevalence: float) -> str:
    figure = _figure()
    ax = figure.add_subplot()
    ax.step(np.r_[0.0, recall], np.r_[precision[0] if precision.size else 1.0, precision], where="post",
            color="tab:blue", lw=2, label=f"AP = {ap:.4f}")
    ax.axhline(prevalence, color="grey", lw=1, ls="--", label=f"prevalence = {prevalence:.3f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall", xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(loc="lower left")
    return _save(figure, path)


def _plot_reliability(path: Path, bins, ece: float) -> str:
    figure = _figure()
    ax = figure.add_subplot()
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = np.diff(bins.edges)
    filled = bins.counts > 0
    ax.bar(centres[filled], bins.fraction_positive[filled], width=width[filled] * 0.9, color="tab:orange",
           edgecolor="black", label="observed fraction positive")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    ax.plot(bins.mean_confidence[filled], bins.fraction_positive[filled], "ko", ms=3)
    ax.set(xlabel="predicted probability", ylabel="fraction positive", title=f"Reliability (ECE = {ece:.4f})",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def _plot_map(path: Path, per_threshold: Mapping[float, float], overall: float) -> str:
    figure = _figure(5.2, 3.6)
    ax = figure.add_subplot()
    keys = list(per_threshold)
    values = [0.0 if not math.isfinite(per_threshold[k]) else per_threshold[k] for k in keys]
    ax.bar([f"{k:.2f}" for k in keys], values, color="tab:green", edgecolor="black")
    if math.isfinite(overall):
        ax.axhline(overall, color="black", ls="--", lw=1, label=f"mAP = {overall:.4f}")
        ax.legend(loc="upper right")
    ax.set(xlabel="IoU threshold", ylabel="mean TP/(TP+FP+FN)", title="RSNA score per IoU threshold",
           ylim=(0, max(1e-3, max(values) * 1.2)))
    return _save(figure, path)


# ----------------------------------------------------------------------------------------------- report


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, (float, np.floating)):
        return "—" if not math.isfinite(value) else f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    out_dir: str | Path,
    map_result: MapResult,
    probabilities: Sequence[float] | np.ndarray | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    thresholds: Mapping[str, float] | None = None,
    per_image: Sequence[Mapping[str, Any]] = (),
    thumbnails: Mapping[str, np.ndarray] | None = None,
    summary: Mapping[str, Any] | None = None,
    title: str = "pneumo evaluation",
    n_bins: int = 10,
) -> Path:
    """Write the report folder and return the path of its ``index.html``.

    map_result: the RSNA mAP. probabilities / labels: (N,) image probabilities and 0/1 labels (optional;
    ROC, precision-recall and reliability plots need both classes / any samples). thresholds: name ->
    probability threshold (e.g. ``{"operating": 0.5}``), each gets a confusion row. per_image: rows with
    ``PER_IMAGE_COLUMNS`` keys (shown worst first; at most ``MAX_TABLE_ROWS`` in the HTML, all in
    ``per_image.csv``). thumbnails: patientId -> uint8 RGB overlay of a worst miss (saved as PNGs whose names
    carry no identifier). summary: extra numbers merged into ``metrics.json`` (they win over computed ones).
    """
    from pneumo import DISCLAIMER
    from pneumo.evaluation import classification as cls
    from pneumo.files import atomic_write, to_jsonable
    from pneumo.outputs import csv_cell, save_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {
        "map": map_result.map,
        "map_per_threshold": {f"{t:.2f}": v for t, v in map_result.per_threshold.items()},
        "n_images": map_result.n_images,
        "n_scored": map_result.n_scored,
    }
    plots: dict[str, str] = {"map": _plot_map(out / "map_per_threshold.png", map_result.per_threshold, map_result.map)}
    sections: list[str] = []

    rows = [(f"{t:.2f}", _fmt(v)) for t, v in map_result.per_threshold.items()]
    rows.append(("<b>mean (mAP)</b>", f"<b>{_fmt(map_result.map)}</b>"))
    sections.append(
        "<h2>RSNA mAP per IoU threshold</h2>"
        f"<p>{map_result.n_scored} of {map_result.n_images} images scored (images with neither ground truth "
        "nor predicted boxes are skipped).</p>"
        + _table(["IoU threshold", "mean TP/(TP+FP+FN)"], rows)
        + f'<img src="{plots["map"]}" alt="mAP per IoU threshold">'
    )

    if probabilities is not None and labels is not None and len(probabilities):
        p, y = cls.check_inputs(probabilities, labels, probabilities=True)
        both = 0 < y.sum() < y.size
        auc = cls.roc_auc(p, y)
        ap = cls.average_precision(p, y)
        ece = cls.expected_calibration_error(p, y, n_bins)
        brier = cls.brier_score(p, y)
        metrics.update(auc=auc, average_precision=ap, ece=ece, brier=brier, n_classified=int(y.size),
                       n_positive=int(y.sum()), n_negative=int(y.size - y.sum()))
        images = []
        if both:
            fpr, tpr, _ = cls.roc_curve(p, y)
            precision, recall, _ = cls.precision_recall_curve(p, y)
            plots["roc"] = _plot_roc(out / "roc.png", fpr, tpr, auc)
            plots["pr"] = _plot_pr(out / "pr.png", precision, recall, ap, float(y.mean()))
            images += [f'<img src="{plots["roc"]}" alt="ROC curve">', f'<img src="{plots["pr"]}" alt="PR curve">']
        bins = cls.reliability_bins(p, y, n_bins)
        plots["reliability"] = _plot_reliability(out / "reliability.png", bins, ece)
        images.append(f'<img src="{plots["reliability"]}" alt="reliability diagram">')
        named = dict(thresholds or {"operating": 0.5})
        if both:
            named.setdefault("youden", cls.youden_threshold(p, y))
            named.setdefault("f1-optimal", cls.f1_optimal_threshold(p, y))
        confusion_rows = []
        metrics["at_thresholds"] = {}
        for name, t in named.items():
            if t is None or not math.isfinite(t):
                continue
            c = cls.confusion_at_threshold(p, y, t)
            metrics["at_thresholds"][name] = {"threshold": t, **c}
            confusion_rows.append((html.escape(name), _fmt(t), c["tp"], c["fp"], c["tn"], c["fn"],
                                   _fmt(c["sensitivity"]), _fmt(c["specificity"]), _fmt(c["ppv"]), _fmt(c["npv"])))
        sections.append(
            "<h2>Image-level classification</h2>"
            + _table(["AUC", "average precision", "ECE", "Brier", "positives", "negatives"],
                     [(_fmt(auc), _fmt(ap), _fmt(ece), _fmt(brier), int(y.sum()), int(y.size - y.sum()))])
            + "<h3>At thresholds (probability &ge; threshold is called positive)</h3>"
            + _table(["threshold", "value", "TP", "FP", "TN", "FN", "sensitivity", "specificity", "PPV", "NPV"],
                     confusion_rows)
            + '<div class="plots">' + "".join(images) + "</div>"
        )

    if summary:
        metrics.update(summary)
    metrics["note"] = DISCLAIMER
    metrics["plots"] = plots
    with atomic_write(out / "metrics.json") as handle:
        json.dump(to_jsonable(metrics), handle, indent=2, allow_nan=False)

    ordered = sort_worst_first(per_image)
    with atomic_write(out / "per_image.csv") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(PER_IMAGE_COLUMNS)
        for row in ordered:
            writer.writerow(["" if row.get(c) is None else csv_cell(row.get(c)) for c in PER_IMAGE_COLUMNS])

    thumb_files: dict[str, str] = {}
    for k, (image_id, rgb) in enumerate((thumbnails or {}).items()):
        name = f"miss_{k:03d}.png"
        save_png(out / name, rgb)
        thumb_files[image_id] = name

    table_rows = []
    for row in ordered[:MAX_TABLE_ROWS]:
        image_id = str(row.get("patientId", ""))
        thumb = thumb_files.get(image_id)
        cell = f'<a href="{thumb}"><img class="thumb" src="{thumb}" alt="overlay"></a>' if thumb else ""
        table_rows.append([_fmt(image_id)] + [_fmt(row.get(c)) for c in PER_IMAGE_COLUMNS[1:]] + [cell])
    shown = f"the {len(table_rows)} worst of {len(ordered)}" if len(ordered) > len(table_rows) else "all"
    sections.append(
        f"<h2>Per image, worst first ({shown}; every row in <a href=\"per_image.csv\">per_image.csv</a>)</h2>"
        "<p>score: the image's RSNA score (— = skipped). Thumbnails: the worst misses, predictions in "
        "orange with confidences, ground truth in green.</p>"
        + _table(list(PER_IMAGE_COLUMNS) + ["overlay"], table_rows)
    )

    headline = f"mAP {_fmt(map_result.map)}"
    if "auc" in metrics:
        headline += f" · AUC {_fmt(metrics['auc'])} · ECE {_fmt(metrics['ece'])}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #bbb; padding: 2px 8px; text-align: right; }}
th {{ background: #eee; }}
.note {{ background: #fff4d6; border-left: 4px solid #e0a000; padding: 0.5em 1em; }}
.plots img, h2 + p + table + img {{ max-width: 48%; margin: 0.3em; }}
img.thumb {{ width: 160px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note"><b>{html.escape(DISCLAIMER)}</b></p>
<p>{headline}. Numbers: <a href="metrics.json">metrics.json</a>.</p>
{''.join(sections)}
</body></html>
"""
    index = out / "index.html"
    with atomic_write(index) as handle:
        handle.write(page)
    return index
