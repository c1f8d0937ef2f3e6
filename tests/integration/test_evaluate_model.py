"""`pneumo evaluate --model` and `pneumo tune` on rsna-mini with tiny random-init checkpoints (plumbing only):
the fold is the training split recorded in the checkpoint, the score equals a recomputation from the saved
predictions, tuned values are written back and reproduce their validation mAP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pneumo.cli import main
from pneumo.data.folds import assign_folds
from pneumo.data.rsna import read_rsna
from pneumo.evaluation.rsna_map import mean_average_precision
from pneumo.models import create_model
from pneumo.models.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from pneumo.ensemble import EnsembleMember, EnsembleSpec, FusionParams
from pneumo.outputs import read_predictions
from pneumo.preprocess import Preprocessor

SIZE = 64
SPLIT = {"folds": 5, "split_seed": 3, "val_fold": 1, "limit": None}
CONFIGS = {
    "chexnet": {"backbone": "efficientnet-lite0", "cam_threshold": 0.3},
    "maskrcnn": {"image_size": SIZE, "box_score_thresh": 0.0},
}


def _save(folder: Path, family: str) -> Path:
    torch.manual_seed(0)
    model = create_model(family, CONFIGS[family])
    return save_checkpoint(
        folder / f"{family}.pt", model, config=model.config, preprocess=Preprocessor(SIZE).to_dict(),
        thresholds={"box_threshold": 0.1, "gate_threshold": 0.0, "probability_threshold": 0.45},
        metrics={"val_map": 0.0}, data_fingerprint="test",
        extra={"role": "best", "train_config": {**SPLIT, "seed": 42, "epochs": 1}}, half=True,
    )


@pytest.fixture(scope="module")
def fold_ids(rsna_mini) -> dict[int, set[str]]:
    records = read_rsna(rsna_mini)
    folds = assign_folds(records, k=SPLIT["folds"], seed=SPLIT["split_seed"])
    return {k: {p for p, f in folds.items() if f == k} for k in range(SPLIT["folds"])}


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_evaluate_model_scores_the_recorded_validation_fold(capsys, tmp_path, rsna_mini, fold_ids):
    _save(tmp_path / "models", "chexnet")
    report = tmp_path / "report"
    code = main(["evaluate", "--model", "chexnet", "--model-dir", str(tmp_path / "models"), "--data", str(rsna_mini),
                 "--fold", "1", "--report", str(report), "--bootstrap", "0", "--no-progress", "--batch-size", "8"])
    summary = _json(capsys)
    assert code == 0 and summary["n_failed"] == 0
    assert summary["fold"] == 1 and summary["folds"] == 5 and summary["split_seed"] == 3
    assert summary["split_source"] == "checkpoint"
    assert summary["n_images"] == len(fold_ids[1])
    assert summary["threshold"] == 0.45 and summary["threshold_source"] == "model"
    assert summary["model"] == "chexnet" and summary["model_version"].startswith("chexnet-0.1.0+")
    assert (report / "index.html").is_file() and (report / "roc.png").is_file()

    saved = read_predictions(report / "predictions.jsonl")
    assert set(saved.boxes) == fold_ids[1] and saved.threshold == 0.45
    labels = {r.image_id: r.boxes for r in read_rsna(rsna_mini) if r.image_id in fold_ids[1]}
    assert summary["map"] == pytest.approx(mean_average_precision(saved.boxes, labels).map)
    assert summary["n_positive"] == sum(1 for b in labels.values() if len(b))


def test_baseline_is_fitted_on_the_other_folds_and_scored_the_same_way(capsys, tmp_path, rsna_mini, fold_ids):
    report = tmp_path / "report"
    code = main(["evaluate", "--model", "baseline", "--model-dir", str(tmp_path / "empty"), "--data", str(rsna_mini),
                 "--fold", "0", "--folds", "5", "--split-seed", "3", "--report", str(report), "--bootstrap", "0",
                 "--no-progress"])
    summary = _json(capsys)
    assert code == 0 and summary["model"] == "baseline" and summary["n_images"] == len(fold_ids[0])
    spec = json.loads((report / "baseline.json").read_text())
    assert spec["n_train_images"] == 210 - len(fold_ids[0]) and len(spec["boxes_normalised_xyxy"]) == 2
    saved = read_predictions(report / "predictions.jsonl")
    assert all(len(boxes) == 2 for boxes in saved.boxes.values())
    labels = {r.image_id: r.boxes for r in read_rsna(rsna_mini) if r.image_id in fold_ids[0]}
    assert summary["map"] == pytest.approx(mean_average_precision(saved.boxes, labels).map)
    assert summary["auc"] == pytest.approx(0.5)  # a constant probability ranks nothing


def test_tune_writes_thresholds_back_into_the_checkpoint(capsys, tmp_path, rsna_mini, fold_ids):
    path = _save(tmp_path, "chexnet")
    before = read_checkpoint_meta(path)
    code = main(["tune", "--model", str(path), "--data", str(rsna_mini), "--no-progress", "--batch-size", "8"])
    result = _json(capsys)
    assert code == 0 and result["written"] is True
    assert result["fold"] == 1 and result["n_images"] == len(fold_ids[1])  # the recorded validation fold
    assert result["sha256"] != result["sha256_before"]
    loaded = load_checkpoint(path)
    for key in ("box_threshold", "gate_threshold", "probability_threshold"):
        assert loaded.thresholds[key] == pytest.approx(result["thresholds"][key])
    assert loaded.metrics["threshold_tuning"]["fold"] == 1 and loaded.metrics["val_map"] == 0.0
    after = read_checkpoint_meta(path)
    assert after["state_dict_sha256"] == before["state_dict_sha256"], "weights unchanged"
    assert after["extra"] == before["extra"] and after["dtype"] == "float16"
    assert result["validation"]["map"] >= result["validation"]["map_all_boxes"] - 1e-12

    dry = main(["tune", "--model", str(path), "--data", str(rsna_mini), "--fold", "2", "--dry-run", "--no-progress"])
    assert dry == 0 and _json(capsys)["written"] is False
    assert read_checkpoint_meta(path)["created_utc"] == after["created_utc"]


@pytest.mark.slow
def test_tuned_ensemble_reproduces_its_validation_map_through_evaluate(capsys, tmp_path, rsna_mini, fold_ids):
    for family in CONFIGS:
        _save(tmp_path, family)
    spec_path = EnsembleSpec(
        members=(EnsembleMember("maskrcnn"),), classifier=EnsembleMember("chexnet"), fusion=FusionParams(),
    ).save(tmp_path / "ensemble.json")
    code = main(["tune", "--ensemble", str(spec_path), "--data", str(rsna_mini), "--no-progress", "--batch-size", "8"])
    result = _json(capsys)
    assert code == 0 and result["fold"] == 1
    tuned = EnsembleSpec.load(spec_path)
    assert tuned.tuning["fold"] == 1 and tuned.tuning["n_images"] == len(fold_ids[1])
    assert tuned.fusion.shrink in (1.0, 0.95, 0.9, 0.875, 0.85)
    assert result["fusion"] == tuned.to_dict()["fusion"]

    code = main(["evaluate", "--model", "ensemble", "--model-dir", str(tmp_path), "--data", str(rsna_mini),
                 "--fold", "1", "--bootstrap", "0", "--no-progress", "--batch-size", "8"])
    summary = _json(capsys)
    assert code == 0 and summary["n_images"] == len(fold_ids[1])
    assert summary["map"] == pytest.approx(tuned.tuning["map"], abs=1e-9)
