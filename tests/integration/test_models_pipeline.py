"""`pneumo models` end to end on 4 real rsna-mini patients: one cheap family (chexnet, EfficientNet-Lite0 at
64 px, 1 epoch), 2 folds -> OOF files -> report -> ship; a re-run skips finished work, a run interrupted by
Ctrl-C is trained again (to the same weights), a finished run with other settings is refused."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.cli import main
from pneumo.evaluation.classification import roc_auc
from pneumo.models.checkpoint import load_checkpoint, read_checkpoint_meta
from pneumo.pipeline.cv import Pipeline, PipelineSettings
from pneumo.training import loop
from pneumo.pipeline.oof import OOF_JSON, OOF_NPZ, load_oof
from pneumo.training.state import STATE_FILE

pytestmark = pytest.mark.slow

EXPERIMENT = """family: chexnet
ships_as: chexnet
epochs: 1
image_size: 64
tta: true
config:
  batch_size: 2
  lr: {lr}
  warmup_epochs: 0.5
  early_stopping: {{patience: 0}}
  model: {{backbone: efficientnet-lite0, pretrained: false}}
  num_workers: 0
"""


def _tiny_rsna(source: Path, target: Path, per_class: int = 2) -> Path:
    """A Kaggle-layout folder with the first ``per_class`` positive and negative patients of ``source``."""
    with open(source / "stage_2_train_labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keep = set(sorted({r["patientId"] for r in rows if r["Target"] == "1"})[:per_class])
    keep |= set(sorted({r["patientId"] for r in rows if r["Target"] == "0"})[:per_class])
    (target / "stage_2_train_images").mkdir(parents=True)
    with open(target / "stage_2_train_labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["patientId"] in keep)
    for patient in keep:
        shutil.copyfile(source / "stage_2_train_images" / f"{patient}.dcm",
                        target / "stage_2_train_images" / f"{patient}.dcm")
    return target


def _weights(path: Path) -> dict:
    return load_checkpoint(path).model.state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_models_pipeline_end_to_end(rsna_mini, tmp_path, capsys, monkeypatch):
    data = _tiny_rsna(rsna_mini, tmp_path / "tiny")
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "cx.yaml").write_text(EXPERIMENT.format(lr=0.0005))
    work, models = tmp_path / "work", tmp_path / "models"
    argv = ["models", "cv", "report", "ship", "--data", str(data), "--folds", "2", "--out", str(work),
            "--models", str(models), "--experiments-dir", str(experiments), "--root", str(Path.cwd()),
            "--cache-dir", str(tmp_path / "cache"), "--threads", "2"]
    assert main(argv) == 0

    # ---- OOF files: each fold's validation patients, predicted by its last epoch, plain and flip TTA
    pipeline = Pipeline(PipelineSettings(root=Path.cwd(), work=work, data=(data,), folds=2), {}, echo=lambda _: None)
    labels, probabilities, seen = [], [], []
    for fold in range(2):
        run = work / "cv" / "cx" / f"fold{fold}"
        assert (run / OOF_NPZ).is_file() and (run / OOF_JSON).is_file() and not list(run.glob("*.pkl"))
        oof = load_oof(run)
        train, val = pipeline.fold_split(fold)
        assert oof.ids == [r.image_id for r in val] and oof.checkpoint == "last.pt"
        assert set(oof.variants) == {"plain", "tta"}
        assert all(len(o.views) == 2 for o in oof.variants["tta"]) and all(len(o.views) == 1 for o in oof.variants["plain"])
        split = read_checkpoint_meta(run / "last.pt")["extra"]["split"]
        assert (split["n_train"], split["n_val"], split["val_fold"]) == (len(train), len(val), fold)
        labels.append([int(r.target) for r in val])
        probabilities.append([o.probability for o in oof.variants["plain"]])
        seen += oof.ids
    assert sorted(seen) == sorted(r.image_id for r in pipeline.records)  # every patient predicted exactly once

    # ---- report: the figures are those of the stored OOF outputs; ship: card metrics = checkpoint metrics
    summary = json.loads((work / "summary.json").read_text())
    entry = summary["experiments"]["cx"]
    expected = [roc_auc(np.array(p), np.array(y)) for p, y in zip(probabilities, labels)]
    assert entry["plain"]["auc_folds"] == pytest.approx(expected)
    assert summary["shipped_experiments"] == {"chexnet": "cx"} and summary["data"]["patients"] == 4
    shipped = load_checkpoint(models / "chexnet.pt", expected_family="chexnet")
    assert shipped.metrics["cv_auc_mean"] == pytest.approx(float(np.mean(expected)))
    card = (models / "chexnet.md").read_text()
    block = json.loads(re.search(r"```json metrics\n(.*?)\n```", card, flags=re.S).group(1))
    assert block == pytest.approx(shipped.metrics) and "Not a diagnosis" in card
    assert "EfficientNet-Lite0 (random init)" in card and "4 RSNA Pneumonia Detection Challenge patients" in card
    # ---- calibration: 4 patients are too few to fit one, so report records why and ship writes no sidecar ...
    from pneumo.files import file_sha256
    from pneumo.inference.calibrated import checkpoint_calibrator, sidecar_path
    from pneumo.pipeline import calibration

    assert summary["calibration"]["chexnet"]["status"] == "skipped"
    assert "too little data" in summary["calibration"]["chexnet"]["reason"]
    assert not sidecar_path(models / "chexnet.pt").exists() and "Not fitted: too little data" in card
    # ... and with the minimum lowered to one image per class, the OOF calibrator ships bound to the shipped weights
    default = calibration.MIN_PER_CLASS
    monkeypatch.setattr(calibration, "MIN_PER_CLASS", 1)
    assert main(["models", "report", "ship"] + argv[4:]) == 0
    entry = json.loads((work / "summary.json").read_text())["calibration"]["chexnet"]
    assert entry["status"] == "fitted" and (work / "figures" / entry["figure"]).is_file()
    sidecar = json.loads(sidecar_path(models / "chexnet.pt").read_text())
    assert sidecar["checkpoint_sha256"] == file_sha256(models / "chexnet.pt")
    loaded = checkpoint_calibrator(models / "chexnet.pt", file_sha256(models / "chexnet.pt"))
    assert loaded is not None and loaded.to_dict() == entry["calibrator"]
    assert f"Method **{entry['chosen']}**" in (models / "chexnet.md").read_text()
    monkeypatch.setattr(calibration, "MIN_PER_CLASS", default)
    assert main(["models", "report", "ship"] + argv[4:]) == 0  # skipped again: the stale sidecar goes
    assert not sidecar_path(models / "chexnet.pt").exists()

    log = (work / "models.log").read_text()
    assert "cv 2/2 cx fold 1" in log and not any(pid in log for pid in seen)  # no patient identifiers logged

    # ---- re-run: finished runs are skipped (weights and OOF files untouched)
    fold0, fold1 = work / "cv" / "cx" / "fold0", work / "cv" / "cx" / "fold1"
    stamps = {p: p.stat().st_mtime_ns for p in (fold0 / "last.pt", fold0 / OOF_NPZ, fold1 / "last.pt")}
    before = _weights(fold1 / "last.pt")
    capsys.readouterr()
    assert main(argv[:2] + argv[4:]) == 0  # `models cv ...` again
    out = capsys.readouterr().out
    assert out.count("already trained") == 2 and "training chexnet" not in out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # ---- an interrupted run (Ctrl-C inside fit: a resumable state, no summary) is removed and trained again
    shutil.rmtree(fold1)
    original = loop._Trainer._train_epoch

    def ctrl_c_now(trainer, progress):
        trainer.stop.request("test")  # what the SIGINT handler does
        return original(trainer, progress)

    monkeypatch.setattr(loop._Trainer, "_train_epoch", ctrl_c_now)
    assert main(argv[:2] + argv[4:]) == 130
    assert (fold1 / STATE_FILE).is_file() and not (fold1 / "run.json").exists()
    monkeypatch.setattr(loop._Trainer, "_train_epoch", original)
    capsys.readouterr()
    assert main(argv[:2] + argv[4:]) == 0
    out = capsys.readouterr().out
    assert "cx fold 1: removing an unfinished run" in out and out.count("already trained") == 1
    assert (fold1 / "run.json").is_file()
    assert load_oof(fold1).ids == [r.image_id for r in pipeline.fold_split(1)[1]]
    assert _same(_weights(fold1 / "last.pt"), before)  # deterministic: the redone run equals the first one
    assert (fold0 / "last.pt").stat().st_mtime_ns == stamps[fold0 / "last.pt"]  # the finished fold was kept

    # ---- a finished run trained with other settings is refused, not silently reused
    (experiments / "cx.yaml").write_text(EXPERIMENT.format(lr=0.001))
    assert main(argv[:2] + argv[4:]) == 2
    assert "other data or settings" in capsys.readouterr().err


def _fixed_experiment(name: str, checkpoint: Path, trained_on: str, sha256: str | None = None) -> str:
    from pneumo.files import file_sha256

    return (f"family: {name}\nkind: fixed\nships_as: {name}\ncheckpoint: {checkpoint}\n"
            f"checkpoint_sha256: '{sha256 or file_sha256(checkpoint)}'\ntrained_on: [{trained_on}]\ntta: true\n")


def test_a_fixed_checkpoint_is_scored_only_on_patients_it_never_saw(rsna_mini, shared_data, tmp_path, capsys):
    """The shipped unet (trained on the 210 rsna-mini patients) as a ``kind: fixed`` experiment of a run on
    rsna-mini + 4 rsna-plus patients: only the 4 are predicted and scored, the file ships unchanged, and a claim
    its checkpoint contradicts, or a changed file, is refused."""
    from pneumo.files import file_sha256

    shipped = Path.cwd() / "models" / "unet.pt"
    plus = _tiny_rsna(shared_data / "rsna-plus", tmp_path / "plus")
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "ufix.yaml").write_text(_fixed_experiment("unet", shipped, "rsna-mini"))
    work, models = tmp_path / "work", tmp_path / "models"
    argv = ["models", "cv", "report", "ship", "--data", str(rsna_mini), str(plus), "--folds", "2", "--out", str(work),
            "--models", str(models), "--experiments-dir", str(experiments), "--root", str(Path.cwd()),
            "--cache-dir", str(tmp_path / "cache"), "--threads", "2"]
    assert main(argv) == 0

    pipeline = Pipeline(PipelineSettings(root=Path.cwd(), work=work, data=(rsna_mini, plus), folds=2), {},
                        echo=lambda _: None)
    plus_ids = {p.stem for p in (plus / "stage_2_train_images").glob("*.dcm")}
    scored = []
    for fold in range(2):
        oof = load_oof(work / "cv" / "ufix" / f"fold{fold}")
        val = [r.image_id for r in pipeline.fold_split(fold)[1]]
        assert oof.ids == [i for i in val if i in plus_ids]  # the fold's rsna-plus patients, in fold order
        assert oof.checkpoint == f"sha256:{file_sha256(shipped)}" and set(oof.variants) >= {"plain", "tta"}
        scored += oof.ids
    assert sorted(scored) == sorted(plus_ids)
    summary = json.loads((work / "summary.json").read_text())
    entry = summary["experiments"]["ufix"]
    assert entry["kind"] == "fixed" and entry["scored_images"] == 4 and entry["trained_on"] == ["rsna-mini"]
    assert summary["ensemble_scored_on"]["images"] == 4 and summary["ensemble_scored_on"]["of"] == 214
    assert (models / "unet.pt").read_bytes() == shipped.read_bytes()  # shipped as trained
    card = (models / "unet.md").read_text()
    assert "Not retrained" in card and "4 images" in card and "Not a diagnosis" in card

    # a trained_on claim the checkpoint contradicts (it trained on 210 images, not on the 4 of plus)
    capsys.readouterr()
    (experiments / "ufix.yaml").write_text(_fixed_experiment("unet", shipped, "plus"))
    assert main(argv[:2] + argv[4:] + ["--out", str(tmp_path / "work2")]) == 2
    assert "trained on 210 images" in capsys.readouterr().err
    # a file that is not the one the experiment was written for (re-shipped since): left out, never scored
    (experiments / "ufix.yaml").write_text(_fixed_experiment("unet", shipped, "rsna-mini", sha256="f" * 64))
    assert main(["models", "cv"] + argv[4:] + ["--out", str(tmp_path / "work3")]) == 0
    assert "left out" in capsys.readouterr().out and not (tmp_path / "work3" / "cv" / "ufix").exists()
    # the pinned file re-shipped after its outputs were made: they are still reported (as evidence), the
    # experiment is marked retired and is neither shipped nor an ensemble member
    copy = tmp_path / "unet-reshipped.pt"
    copy.write_bytes(shipped.read_bytes() + b"\0")
    (experiments / "ufix.yaml").write_text(_fixed_experiment("unet", copy, "rsna-mini", sha256=file_sha256(shipped)))
    capsys.readouterr()
    assert main(["models", "report"] + argv[4:]) == 0
    assert "neither shipped nor an ensemble member" in capsys.readouterr().out
    summary = json.loads((work / "summary.json").read_text())
    assert summary["experiments"]["ufix"]["retired"].startswith(f"sha256 {file_sha256(shipped)[:12]}")
    assert summary["experiments"]["ufix"]["scored_images"] == 4 and "unet" not in summary["shipped_experiments"]
    assert "ensemble" not in summary
