"""Evaluation report, scoring of prediction sets and `pneumo evaluate --predictions`."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from pneumo import DISCLAIMER
from pneumo.errors import DataLayoutError
from pneumo.cli import COMMAND_MODULES
from pneumo.commands import evaluate as evaluate_command
from pneumo.data.rsna import read_rsna_labels
from pneumo.evaluation.report import write_report
from pneumo.evaluation.rsna_map import mean_average_precision
from pneumo.evaluation.scoring import evaluate_predictions
from pneumo.outputs import write_jsonl, write_submission_csv

LABELS_CSV = (
    "patientId,x,y,width,height,Target\n"
    "pos1,0,0,10,10,1\n"
    "pos2,0,0,10,10,1\n"
    "pos2,100,100,20,20,1\n"
    "neg1,,,,,0\n"
    "neg2,,,,,0\n"
)


def _labels(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(LABELS_CSV)
    return path


def main(argv):
    """Run `pneumo evaluate ...` through its own parser (independent of other commands' registration)."""
    parser = argparse.ArgumentParser(prog="pneumo")
    evaluate_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_evaluate_is_registered():
    assert "evaluate" in COMMAND_MODULES
    assert evaluate_command.evaluate_predictions is evaluate_predictions


def _synthetic():
    """Predictions with hand-known RSNA scores: pos1 1.0, pos2 0.375 (TP at IoU 1, missed box), neg1 0
    (false positive), neg2 skipped, plus an unlabelled image."""
    preds = {
        "pos1": np.array([[0, 0, 10, 10, 0.9]], np.float32),
        "pos2": np.array([[0, 0, 10, 5, 0.8]], np.float32),  # IoU 0.5 with its first box, misses the second
        "neg1": np.array([[50, 50, 60, 60, 0.6]], np.float32),
        "stranger": np.array([[0, 0, 5, 5, 0.5]], np.float32),
    }
    probs = {"pos1": 0.9, "pos2": 0.4, "neg1": 0.7, "neg2": 0.1, "stranger": 0.5}
    return preds, probs


def test_evaluate_predictions_hand_computed(tmp_path):
    preds, probs = _synthetic()
    labels = read_rsna_labels(_labels(tmp_path))
    out = evaluate_predictions(preds, labels, probs=probs, threshold=0.5, n_boot=50)
    # pos2 at IoU 0.5 with one of two GT boxes: t <= 0.50 -> 1/2, above -> 0/3 ... mean 3/16
    pos2 = (3 * 0.5) / 8
    assert out["map"] == pytest.approx((1.0 + pos2 + 0.0) / 3)
    assert out["n_images"] == 4 and out["n_scored"] == 3 and out["n_unlabelled"] == 1
    assert out["n_missing_predictions"] == 1  # neg2: counted as an image with no boxes
    assert out["map_per_threshold"]["0.40"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert out["map_per_threshold"]["0.75"] == pytest.approx(1 / 3)
    # probabilities pos 0.9, 0.4; neg 0.7, 0.1 -> AUC 3/4; at 0.5: TP 1, FN 1, FP 1, TN 1
    assert out["auc"] == pytest.approx(0.75)
    assert out["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert out["sensitivity"] == out["specificity"] == out["ppv"] == out["npv"] == 0.5
    # ECE with 10 bins: |1-0.9|, |1-0.4|, |0-0.7|, |0-0.1| each weight 1/4
    assert out["ece"] == pytest.approx((0.1 + 0.6 + 0.7 + 0.1) / 4)
    assert out["score_source"] == "probability" and out["note"] == DISCLAIMER
    json.dumps(out, allow_nan=False)


def test_evaluate_without_probabilities_uses_top_box_confidence(tmp_path):
    preds, _ = _synthetic()
    out = evaluate_predictions(preds, read_rsna_labels(_labels(tmp_path)), threshold=0.7, n_boot=0)
    # top confidences pos1 0.9, pos2 0.8, neg1 0.6, neg2 0 -> at 0.7 both positives called, no negative
    assert out["score_source"] == "max_box_confidence"
    assert out["confusion"] == {"tp": 2, "fp": 0, "tn": 2, "fn": 0}
    assert out["auc"] is None and out["ece"] is None and out["map_ci95"] is None


def test_report_files_and_numbers(tmp_path):
    preds, probs = _synthetic()
    labels = read_rsna_labels(_labels(tmp_path))
    pixels = {i: np.full((128, 128), 0.4, np.float32) for i in labels}
    out = evaluate_predictions(
        preds, labels, probs=probs, threshold=0.5, report_dir=tmp_path / "report",
        image_loader=pixels.__getitem__, model_name="unet", n_worst=2, n_boot=50,
    )
    report = tmp_path / "report"
    index = report / "index.html"
    assert out["report"] == str(index)
    for name in ("index.html", "metrics.json", "per_image.csv", "roc.png", "pr.png", "reliability.png",
                 "map_per_threshold.png", "miss_000.png", "miss_001.png"):
        assert (report / name).stat().st_size > 0, name
    assert not (report / "miss_002.png").exists()
    page = index.read_text()
    for plot in ("roc.png", "pr.png", "reliability.png", "map_per_threshold.png", "miss_000.png"):
        assert f'src="{plot}"' in page
    assert f"{out['map']:.4f}" in page and "0.7500" in page and f"{out['ece']:.4f}" in page
    assert DISCLAIMER in page
    # worst first: neg1 (0) before pos2 (0.1875) before pos1 (1.0); skipped neg2 last
    positions = [page.index(f"<td>{i}</td>") for i in ("neg1", "pos2", "pos1", "neg2")]
    assert positions == sorted(positions)
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["map"] == pytest.approx(out["map"]) and metrics["auc"] == pytest.approx(0.75)
    assert metrics["at_thresholds"]["operating"]["tp"] == 1
    assert (report / "per_image.csv").read_text().splitlines()[1].startswith("neg1,0.0,")


def test_report_without_probabilities_has_only_the_map_plot(tmp_path):
    result = mean_average_precision({"a": np.array([[0, 0, 4, 4, 0.5]], np.float32)},
                                    {"a": np.array([[0, 0, 4, 4]], np.float32)})
    index = write_report(tmp_path, result, per_image=[{"patientId": "a", "score": 1.0}])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["map_per_threshold.png"]
    assert "1.0000" in index.read_text()


def test_importing_the_report_loads_no_matplotlib():
    code = "import sys, pneumo.evaluation.report, pneumo.commands.evaluate; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_cli_evaluate_jsonl_uses_threshold_recorded_in_file(tmp_path, capsys):
    preds, probs = _synthetic()
    path = tmp_path / "p.jsonl"
    write_jsonl(path, [
        {"patientId": i, "probability": probs[i], "threshold": 0.35, "model": "unet", "model_version": "1",
         "boxes": [{"x": float(b[0]), "y": float(b[1]), "width": float(b[2] - b[0]),
                    "height": float(b[3] - b[1]), "confidence": float(b[4])} for b in preds[i]]}
        for i in preds
    ])
    assert main(["evaluate", "--predictions", str(path), "--labels", str(_labels(tmp_path)),
                 "--bootstrap", "0"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)  # exactly one JSON object on stdout
    assert out["threshold"] == 0.35 and out["threshold_source"] == "file"
    # neg2 has no record, so no probability: left out of the classification metrics (not called negative)
    assert out["n_missing_probability"] == 1 and out["n_missing_predictions"] == 1
    # at 0.35: pos 0.9, 0.4 and neg 0.7 called positive; AUC over (0.9, 0.4) vs (0.7) = 1/2
    assert out["confusion"] == {"tp": 2, "fp": 1, "tn": 0, "fn": 0}
    assert out["auc"] == pytest.approx(0.5) and "1 predicted image" in captured.err
    assert main(["evaluate", "--predictions", str(path), "--labels", str(_labels(tmp_path)),
                 "--threshold", "0.8", "--bootstrap", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold_source"] == "argument"


def test_cli_evaluate_csv_and_errors(tmp_path, capsys):
    preds, _ = _synthetic()
    path = tmp_path / "s.csv"
    write_submission_csv(path, list(preds.items()))
    assert main(["evaluate", "--predictions", str(path), "--labels", str(_labels(tmp_path)),
                 "--bootstrap", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threshold"] == 0.5 and out["threshold_source"] == "default" and out["auc"] is None
    assert out["map"] == pytest.approx((1.0 + 3 / 16) / 3)
    with pytest.raises(DataLayoutError):  # the CLI turns this into exit code 2
        main(["evaluate", "--predictions", str(tmp_path / "none.csv"), "--labels", str(_labels(tmp_path))])


def test_ground_truth_as_predictions_scores_one_on_real_labels(rsna_mini, tmp_path, capsys):
    labels_csv = rsna_mini / "stage_2_train_labels.csv"
    labels = read_rsna_labels(labels_csv)
    assert len(labels) == 210 and sum(len(b) > 0 for b in labels.values()) == 79
    assert sum(len(b) for b in labels.values()) == 128
    rows = [(i, np.hstack([b, np.ones((len(b), 1), np.float32)])) for i, b in labels.items()]
    path = tmp_path / "gt.csv"
    write_submission_csv(path, rows)  # RSNA labels are whole pixels: rounding changes nothing
    assert main(["evaluate", "--predictions", str(path), "--labels", str(labels_csv), "--bootstrap", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["map"] == 1.0 and out["n_scored"] == 79 and out["n_images"] == 210
    assert out["sensitivity"] == 1.0 and out["specificity"] == 1.0
