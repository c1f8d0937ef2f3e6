"""The interactive console menu (``pneumo console``): the original seed's menu on top of ``InferenceService``.

    [1] ResNet [2] Mask R-CNN [3] CheXNet [4] Plot model metrics [5] Ensemble [q] Quit

1-3 and 5 ask for a patient id, find ``<id>.dcm`` under the images folder (recursively), print the
probability and boxes (RSNA ``x y width height`` in original pixels), the ground truth when labels are
given, and write an overlay PNG (predictions orange, ground truth green). 4 prints the figures to trust
(out-of-fold AUC / mAP and calibration of each shipped model, from ``models/cv_summary.json``; see
``pneumo.evaluation.figures``) and plots each shipped model's ``<name>.history.csv``, labelled as what it is:
training data (the shipped weights were fitted on every image of those curves). Works in a terminal and with piped input; EOF exits.
Everything printed is decision support, not a diagnosis.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pneumo import DISCLAIMER
from pneumo.errors import PneumoError
from pneumo.types import Box


@dataclass(frozen=True)
class MenuItem:
    key: str
    label: str
    model: str | None  # shipped model name, None for the non-model entries


MENU: tuple[MenuItem, ...] = (
    MenuItem("1", "ResNet", "unet"),
    MenuItem("2", "Mask R-CNN", "maskrcnn"),
    MenuItem("3", "CheXNet", "chexnet"),
    MenuItem("4", "Plot model metrics", None),
    MenuItem("5", "Ensemble", "ensemble"),
    MenuItem("q", "Quit", None),
)
MENU_LINE = " ".join(f"[{item.key}] {item.label}" for item in MENU)
HISTORY_MODELS = ("unet", "maskrcnn", "chexnet")
SUMMARY_MODELS = HISTORY_MODELS + ("ensemble",)
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DicomIndex:
    """``<stem>.dcm`` files under a folder (recursive, built on first use): patient id -> path."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._paths: dict[str, Path] | None = None

    def find(self, patient_id: str) -> Path | None:
        if self._paths is None:
            paths: dict[str, Path] = {}
            for path in sorted(self.root.rglob("*")):
                if path.suffix.lower() == ".dcm" and path.is_file():
                    paths.setdefault(path.stem, path)
            self._paths = paths
        return self._paths.get(patient_id)

    def __len__(self) -> int:
        self.find("")
        return len(self._paths or {})


class Console:
    """The menu loop. ``service`` is a ``pneumo.service.InferenceService``; ``labels`` maps patientId to
    float32 (N, 4) xyxy ground-truth boxes (empty = negative); overlays and plots go to ``out_dir``."""

    def __init__(
        self,
        service: Any,
        images_dir: Path,
        out_dir: Path,
        labels: Mapping[str, np.ndarray] | None = None,
        model_dir: Path | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.service = service
        self.images = DicomIndex(images_dir)
        self.out_dir = Path(out_dir)
        self.labels = labels
        self.model_dir = Path(model_dir) if model_dir else _service_model_dir(service)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    # ---------------------------------------------------------------- plumbing

    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def ask(self, prompt: str) -> str:
        """One line of input (EOFError at end of input). Uses ``input()`` (line editing) on a terminal."""
        if self.stdin is sys.stdin and self.stdout is sys.stdout and sys.stdin.isatty():
            return input(prompt)
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        if not self.stdin.isatty():
            self.stdout.write("\n")  # piped input is not echoed: end the prompt's line
        return line.rstrip("\r\n")

    def run(self) -> int:
        """The loop; returns the exit code (0 on ``q`` or end of input)."""
        self.say("pneumo console. " + DISCLAIMER)
        actions: dict[str, Callable[[], None]] = {"4": self.plot_metrics}
        for item in MENU:
            if item.model is not None:
                actions[item.key] = (lambda it=item: self.predict(it))
        while True:
            self.say()
            self.say(MENU_LINE)
            try:
                choice = self.ask("Choice: ").strip().lower()
            except EOFError:
                self.say("End of input: bye.")
                return 0
            if choice in ("q", "quit", "exit"):
                self.say("Bye.")
                return 0
            action = actions.get(choice)
            if action is None:
                if choice:
                    self.say(f"Unknown choice {choice!r}: type 1-5, or q to quit.")
                continue
            try:
                action()
            except EOFError:
                self.say("End of input: bye.")
                return 0
            except PneumoError as error:
                self.say(f"Error: {error}")

    # ---------------------------------------------------------------- 1-3, 5: predict

    def available(self) -> dict[str, Any]:
        return {info.name: info for info in self.service.available_models()}

    def predict(self, item: MenuItem) -> None:
        assert item.model is not None
        infos = self.available()
        if item.model not in infos:
            where = f" in {self.model_dir}" if self.model_dir else ""
            shipped = ", ".join(sorted(infos)) or "none"
            self.say(f"{item.label} ({item.model}) is not available{where}; available models: {shipped}.")
            return
        patient_id = self.ask("Patient id: ").strip()
        if patient_id.lower().endswith(".dcm"):
            patient_id = patient_id[:-4]
        if not patient_id:
            self.say("No patient id given.")
            return
        path = self.images.find(patient_id)
        if path is None:
            self.say(f"No DICOM named {patient_id}.dcm under {self.images.root}.")
            return

        xray = self.service.read(path)  # decode + the chest-radiograph content check
        prediction = self.service.predict(xray, item.model, heatmap=True)
        self.say(f"{item.label} ({prediction.model}, version {prediction.model_version}) on {patient_id}:")
        self.say(f"  Pneumonia probability: {prediction.probability * 100:.1f} %" + _verdict(prediction))
        self._print_boxes("Predicted boxes", prediction.boxes, with_confidence=True)
        truth = None
        if self.labels is not None:
            if patient_id in self.labels:
                truth = np.asarray(self.labels[patient_id], dtype=np.float32).reshape(-1, 4)
                status = "positive" if len(truth) else "negative (no opacity)"
                self.say(f"  Ground truth: {status}")
                self._print_boxes("Ground-truth boxes", [Box(*map(float, row)) for row in truth], False, skip_empty=True)
            else:
                self.say("  Ground truth: this patient is not in the labels file.")
        path_out = self._write_overlay(patient_id, item.model, xray.pixels, prediction, truth)
        self.say(f"  Overlay written to {path_out}")
        self.say(f"  ({DISCLAIMER})")

    def _print_boxes(self, title: str, boxes: Any, with_confidence: bool, skip_empty: bool = False) -> None:
        boxes = list(boxes)
        if not boxes:
            if not skip_empty:
                self.say(f"  {title}: none")
            return
        self.say(f"  {title} (x y width height in pixels):")
        for number, box in enumerate(boxes, start=1):
            xywh = box.to_xywh()
            text = f"    {number}. x={xywh['x']:.0f} y={xywh['y']:.0f} width={xywh['width']:.0f} height={xywh['height']:.0f}"
            self.say(text + (f"  confidence {box.confidence:.2f}" if with_confidence else ""))

    def _write_overlay(
        self, patient_id: str, model: str, pixels: np.ndarray, prediction: Any, truth: np.ndarray | None
    ) -> Path:
        from pneumo.outputs import boxes_from_prediction, render_overlay, save_png

        rgb = render_overlay(
            pixels,
            pred_boxes=boxes_from_prediction(prediction),
            gt_boxes=truth,
            heatmap=prediction.heatmap,
            title=f"{patient_id}: {prediction.probability:.1%}",
            model_name=prediction.model_version,  # e.g. "chexnet-0.1.0+063c0b19": names the model too
        )
        return save_png(self.out_dir / f"{_SAFE.sub('_', patient_id)}_{model}.png", rgb)

    # ---------------------------------------------------------------- 4: metrics

    def plot_metrics(self) -> None:
        from pneumo.evaluation.figures import shipped_figures
        from pneumo.training.history import read_history_csv

        if self.model_dir is None:
            self.say("No model folder known: pass --model-dir.")
            return
        figures = shipped_figures(self.model_dir)
        if figures:
            self.say(format_figures({n: figures[n] for n in SUMMARY_MODELS if n in figures}))
        histories = {}
        for name in HISTORY_MODELS:
            path = self.model_dir / f"{name}.history.csv"
            if path.is_file():
                try:
                    records = read_history_csv(path)
                except PneumoError as error:
                    self.say(f"{name}: {error}")
                    continue
                if records:
                    histories[name] = records
        if not histories:
            self.say(f"No training histories (<model>.history.csv) in {self.model_dir}.")
            return
        self.say(format_summary(histories))
        path = plot_histories(histories, self.out_dir / "model_metrics.png")
        self.say(f"Training-data curves (in-sample) written to {path}")


def _interval(entry: Any) -> str:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("estimate"), (int, float)):
        return "n/a"
    low, high = entry.get("low"), entry.get("high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and math.isfinite(low) and math.isfinite(high):
        return f"{entry['estimate']:.3f} [{low:.3f}, {high:.3f}]"
    return f"{entry['estimate']:.3f}"


def format_figures(figures: Mapping[str, Mapping[str, Any]]) -> str:
    """The figures to trust, one row per model (``pneumo.evaluation.figures.shipped_figures``): out-of-fold AUC
    and mAP (mean ± std over folds), the images they were measured on, and the calibration's cross-fitted ECE
    raw -> calibrated with 95 % patient-bootstrap intervals."""
    header = (f"{'model':<10} {'AUC':>15} {'mAP':>15} {'ECE raw -> calibrated [95% CI]':>40}  measured on")
    lines = ["Out-of-fold figures (each image scored by a model that never trained on it; from models/cv_summary.json):",
             header, "-" * len(header)]
    for name, f in figures.items():
        ece = (f"{_interval(f.get('ece_raw'))} -> {_interval(f.get('ece_calibrated'))}"
               if f.get("ece_raw") else "n/a")
        lines.append(f"{name:<10} {_pair(f.get('auc')):>15} {_pair(f.get('map')):>15} {ece:>40}  {f.get('scope', '')}")
    return "\n".join(lines)


def _pair(value: Any) -> str:
    """(mean, std) -> "0.836 ± 0.012"; "n/a" when missing."""
    if not value or value[0] is None or not math.isfinite(value[0]):
        return "n/a"
    return f"{value[0]:.3f} ± {value[1]:.3f}"


def format_summary(histories: Mapping[str, list[Any]]) -> str:
    """Training-data table: model, epochs, best loss (epoch), best mAP and AUC of the history's "val" columns,
    which for shipped weights are in-sample (fitted on those same images), so labelled training data."""
    header = (f"{'model':<10} {'epochs':>6} {'best loss (train data)':>22} {'best mAP (train data)':>22} "
              f"{'best AUC (train data)':>22}")
    lines = ["In-sample training curves (the shipped weights were fitted on these images; not validation):",
             header, "-" * len(header)]
    for name, records in histories.items():
        best_loss = min(records, key=lambda r: _or_inf(r.val_loss))
        loss = f"{best_loss.val_loss:.4f} (ep {best_loss.epoch})" if math.isfinite(best_loss.val_loss) else "n/a"
        lines.append(
            f"{name:<10} {len(records):>6} {loss:>22} {_best(r.val_map for r in records):>22} "
            f"{_best(r.val_auc for r in records):>22}"
        )
    return "\n".join(lines)


def plot_histories(histories: Mapping[str, list[Any]], path: Path) -> Path:
    """One row per model: loss by epoch (left), mAP and AUC by epoch (right), all labelled training data
    (in-sample for shipped weights)."""
    from matplotlib.figure import Figure

    from pneumo.training.history import draw_curves, save_figure_png

    figure = Figure(figsize=(10, 3.2 * len(histories)), dpi=100)
    axes = figure.subplots(len(histories), 2, squeeze=False)
    for row, (name, records) in enumerate(histories.items()):
        draw_curves(axes[row][0], axes[row][1], records, name, in_sample=True)
    save_figure_png(Path(path), figure)
    return Path(path)


def _verdict(prediction: Any) -> str:
    threshold = dict(prediction.extra or {}).get("threshold")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        return ""
    side = "at or above" if prediction.probability >= threshold else "below"
    return f" ({side} the operating threshold {threshold * 100:.1f} %)"


def _or_inf(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _best(values: Any) -> str:
    finite = [v for v in values if math.isfinite(v)]
    return f"{max(finite):.4f}" if finite else "n/a"


def _service_model_dir(service: Any) -> Path | None:
    value = getattr(service, "model_dir", None)
    return Path(value) if value else None
