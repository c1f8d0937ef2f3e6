"""`pneumo console`: the menu driven through a pseudo-terminal (pexpect) and through piped input, with tiny
random-init checkpoints and real rsna-mini DICOMs."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MENU = "[1] ResNet [2] Mask R-CNN [3] CheXNet [4] Plot model metrics [5] Ensemble [q] Quit"


def _helpers():
    spec = importlib.util.spec_from_file_location("frontend_helpers", REPO / "tests" / "api" / "frontend_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _helpers().make_model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def patients(rsna_mini: Path) -> dict[str, object]:
    boxes: dict[str, int] = {}
    with open(rsna_mini / "stage_2_train_labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            boxes[row["patientId"]] = boxes.get(row["patientId"], 0) + (row["Target"] == "1")
    positive = sorted(p for p, n in boxes.items() if n >= 2)[0]
    negative = sorted(p for p, n in boxes.items() if n == 0)[0]
    return {"positive": positive, "negative": negative, "n_boxes": boxes[positive]}


def _env() -> dict[str, str]:
    return {**os.environ, "PNEUMO_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _command(rsna_mini: Path, model_dir: Path, out: Path, labels: bool = True) -> list[str]:
    command = [sys.executable, "-m", "pneumo", "console", "--images", str(rsna_mini), "--model-dir", str(model_dir),
               "--out", str(out)]
    if labels:
        command += ["--labels", str(rsna_mini / "stage_2_train_labels.csv")]
    return command


def _piped(command: list[str], text: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, input=text, capture_output=True, text=True, timeout=240, env=_env())


def _service_probability(model_dir: Path, rsna_mini: Path, patient: str, model: str) -> float:
    from pneumo.io import read_xray
    from pneumo.service import InferenceService

    xray = read_xray(rsna_mini / "stage_2_train_images" / f"{patient}.dcm")
    return InferenceService(model_dir, num_threads=1).predict(xray, model).probability


@pytest.mark.subprocess
def test_piped_session(rsna_mini: Path, model_dir: Path, patients: dict, tmp_path: Path) -> None:
    positive, negative = patients["positive"], patients["negative"]
    script = f"3\n{positive}\n1\n{negative}.dcm\n4\n5\nno-such-patient\n9\n\nq\n"
    result = _piped(_command(rsna_mini, model_dir, tmp_path), script)
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert out.count(MENU) == 7 and "not a diagnosis" in out  # one menu per choice read

    # [3] CheXNet on the positive patient: the probability the service gives, boxes, ground truth, overlay
    shown = [float(p) for p in re.findall(r"Pneumonia probability: ([0-9.]+) %", out)]
    assert len(shown) == 2
    assert shown[0] == pytest.approx(100 * _service_probability(model_dir, rsna_mini, positive, "chexnet"), abs=0.051)
    assert "Ground truth: positive" in out and "Ground truth: negative (no opacity)" in out
    truth_block = out.split("Ground-truth boxes (x y width height in pixels):", 1)[1]
    assert len(re.findall(r"^\s+\d+\. x=\d+ y=\d+ width=\d+ height=\d+$", truth_block, re.M)) >= patients["n_boxes"]
    overlay = tmp_path / f"{positive}_chexnet.png"
    assert f"Overlay written to {overlay}" in out
    pixels = np.asarray(Image.open(overlay))
    assert pixels.shape == (1024, 1024, 3) and np.all(pixels == (40, 220, 60), axis=-1).sum() > 100
    assert (tmp_path / f"{negative}_unet.png").is_file()  # "<id>.dcm" typed is accepted too

    # [4] metrics: the in-sample curves labelled as training data, never as validation, and a PNG
    assert "best val" not in out and "In-sample training curves" in out
    table = out.split("best AUC (train data)", 1)[1]
    for name in ("unet", "maskrcnn", "chexnet"):
        assert re.search(rf"^{name}\s+3\s+", table, re.M), table
    assert re.search(r"^maskrcnn .* n/a\s*$", table, re.M)  # NaN AUC history (frontend_helpers offset 1)
    assert Image.open(tmp_path / "model_metrics.png").size[0] > 500

    # [5] with an unknown id, then an unknown choice, then q
    assert "No DICOM named no-such-patient.dcm" in out
    assert "Unknown choice '9'" in out and out.rstrip().endswith("Bye.")
    assert positive not in result.stderr  # nothing about the patient on the log stream


def test_end_of_input_exits_cleanly_and_missing_models_are_answered(
    rsna_mini: Path, tmp_path: Path, patients: dict
) -> None:
    """In process (no start-up cost): the same Console class the command runs, on text streams."""
    from pneumo.console import Console
    from pneumo.service import InferenceService

    only_chexnet = _helpers().make_model_dir(tmp_path / "models", families=("chexnet",), ensemble=False,
                                             histories=False)
    service = InferenceService(only_chexnet, num_threads=1)

    def session(text: str) -> tuple[int, str]:
        out = io.StringIO()
        code = Console(service, rsna_mini, tmp_path / "out", stdin=io.StringIO(text), stdout=out).run()
        return code, out.getvalue()

    code, out = session(f"2\n4\n3\n{patients['positive']}\n5\n")
    assert code == 0
    assert "Mask R-CNN (maskrcnn) is not available" in out and "available models: chexnet" in out
    assert "No training histories" in out
    assert "Pneumonia probability" in out and "Ground truth" not in out  # no labels given
    assert "Ensemble (ensemble) is not available" in out
    assert out.rstrip().endswith("End of input: bye.")

    code, out = session("3\n")  # EOF while asking for the patient id
    assert code == 0 and out.rstrip().endswith("End of input: bye.")
    code, out = session("3\n\nq\n")  # an empty id is answered, the menu goes on
    assert code == 0 and "No patient id given." in out and out.rstrip().endswith("Bye.")


@pytest.mark.subprocess
def test_interactive_terminal(rsna_mini: Path, model_dir: Path, patients: dict, tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    command = _command(rsna_mini, model_dir, tmp_path)
    child = pexpect.spawn(command[0], command[1:], env=_env(), encoding="utf-8", timeout=180, dimensions=(40, 160))
    try:
        child.expect_exact(MENU)
        child.expect_exact("Choice: ")
        child.sendline("5")
        child.expect_exact("Patient id: ")
        child.sendline(patients["positive"])
        child.expect(r"Pneumonia probability: ([0-9.]+) %")
        ensemble = float(child.match.group(1))
        child.expect_exact("Overlay written to ")
        child.expect_exact("Choice: ")
        child.sendline("3")
        child.expect_exact("Patient id: ")
        child.sendline("unknown-patient")
        child.expect_exact("No DICOM named unknown-patient.dcm")
        child.expect_exact("Choice: ")
        child.sendeof()  # Ctrl-D at the prompt
        child.expect_exact("End of input: bye.")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    expected = _service_probability(model_dir, rsna_mini, patients["positive"], "ensemble")
    assert ensemble == pytest.approx(100 * expected, abs=0.051)
    assert (tmp_path / f"{patients['positive']}_ensemble.png").is_file()


def test_summary_table_values() -> None:
    from pneumo.console import format_summary
    from pneumo.training.history import EpochRecord

    records = [EpochRecord(1, 1e-3, 1.0, 0.9, 0.10, 0.70, 1.0), EpochRecord(2, 1e-3, 0.8, 0.7, 0.08, 0.75, 1.0),
               EpochRecord(3, 1e-3, 0.7, 0.8, 0.12, float("nan"), 1.0)]
    lines = format_summary({"unet": records}).splitlines()
    assert "not validation" in lines[0] and "(train data)" in lines[1]
    assert lines[3].split() == ["unet", "3", "0.7000", "(ep", "2)", "0.1200", "0.7500"]


def test_figures_table_shows_out_of_fold_figures_not_in_sample_ones() -> None:
    from pneumo.console import format_figures

    figures = {"chexnet": {"auc": (0.8361, 0.0123), "map": (0.0019, 0.0024), "scope": "5-fold, 1247 images",
                           "ece_raw": {"estimate": 0.133, "low": 0.11, "high": 0.15},
                           "ece_calibrated": {"estimate": 0.026}},
               "unet": {"auc": (0.71, 0.02), "map": (0.06, 0.01), "scope": "5-fold, 1037 images outside rsna-mini"},
               "maskrcnn": {}}
    lines = format_figures(figures).splitlines()
    assert "Out-of-fold" in lines[0] and "never trained on it" in lines[0]
    assert lines[3].split() == ["chexnet", "0.836", "±", "0.012", "0.002", "±", "0.002", "0.133", "[0.110,", "0.150]",
                                "->", "0.026", "5-fold,", "1247", "images"]
    assert lines[4].split()[-4:] == ["1037", "images", "outside", "rsna-mini"]
    assert lines[5].split() == ["maskrcnn", "n/a", "n/a", "n/a"]


def test_plot_metrics_on_the_shipped_models_shows_their_cv_figures(rsna_mini: Path, tmp_path: Path) -> None:
    """[4] on models/: every shipped model's out-of-fold figures and calibration, training-data curves."""
    from pneumo.console import Console
    from pneumo.evaluation.figures import shipped_figures
    from pneumo.service import InferenceService

    models = Path(__file__).resolve().parents[2] / "models"
    out = io.StringIO()
    Console(InferenceService(models, num_threads=1), rsna_mini, tmp_path, stdin=io.StringIO("4\nq\n"),
            stdout=out).run()
    text = out.getvalue()
    figures = shipped_figures(models)
    shipped = json.loads((models / "cv_summary.json").read_text())["shipped_experiments"]
    assert set(figures) == set(shipped) | {"ensemble"} and "chexnet" in figures
    for name, f in figures.items():
        row = next(line for line in text.splitlines() if line.startswith(f"{name} ") and "±" in line)
        assert f"{f['auc'][0]:.3f} ± {f['auc'][1]:.3f}" in row and f["scope"] in row
        assert f"{f['ece_calibrated']['estimate']:.3f}" in row
    assert "best val" not in text and "validation AUC" not in text
    assert (tmp_path / "model_metrics.png").is_file()
