"""The model-training driver (``scripts/train_models.py``) and its cards (``scripts/model_cards.py``): the pure
parts - experiment choice, run settings, and cards that quote exactly the recorded numbers."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import model_cards  # noqa: E402
import train_models  # noqa: E402


def _plain(map_mean: float, auc_mean: float) -> dict:
    return {"map_mean_std": [map_mean, 0.01], "auc_mean_std": [auc_mean, 0.02], "map_folds": [map_mean] * 3,
            "auc_folds": [auc_mean] * 3, "oof_auc": auc_mean}


def _experiment(family: str, map_mean: float, auc_mean: float, init: str | None = None) -> dict:
    return {"family": family, "overrides": ["image_size=224", "epochs=5"], "nih": False, "init": init,
            "plain": _plain(map_mean, auc_mean), "train_seconds_folds": [60.0, 60.0, 60.0]}


def test_choose_experiment_takes_the_best_finished_candidate():
    experiments = {"a": _experiment("chexnet", 0.01, 0.70), "b": _experiment("chexnet", 0.00, 0.75),
                   "c": _experiment("unet", 0.10, 0.60), "d": _experiment("unet", 0.05, 0.80)}
    assert train_models.choose_experiment(experiments, ("a", "b", "missing"), "auc") == "b"
    assert train_models.choose_experiment(experiments, ("c", "d"), "map") == "c"
    assert train_models.choose_experiment(experiments, ("missing",), "map") is None


def test_run_overrides_add_the_split_the_cache_and_the_pretrained_start(tmp_path):
    args = argparse.Namespace(folds=3, split_seed=0, seed=42, cache_dir="/cache", epochs_scale=0.5, work=tmp_path)
    spec = {"set": ["epochs=6", "lr=0.001"], "init": "chexnet-nih"}
    with pytest.raises(SystemExit, match="pretrain"):
        train_models.run_overrides(spec, args, 2)  # the pretraining has not run
    checkpoint = tmp_path / "pretrain" / "chexnet-nih" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    overrides = train_models.run_overrides(spec, args, 2)
    assert {"folds=3", "val_fold=2", "split_seed=0", "seed=42", "cache_dir=/cache",
            f"init_from={checkpoint}"} <= set(overrides)
    assert overrides[-1] == "epochs=3"  # --epochs-scale wins over the experiment's epochs (applied last)
    assert "init_from" not in " ".join(train_models.run_overrides({"set": ["epochs=6"]}, args, 0))


def _summary() -> dict:
    experiments = {"chexnet-a": _experiment("chexnet", 0.0, 0.70), "chexnet-nih": _experiment("chexnet", 0.0, 0.78, "nih-run"),
                   "unet-a": _experiment("unet", 0.12, 0.74)}
    return {"folds": 3, "split_seed": 0, "seed": 42, "experiments": experiments,
            "shipped_experiments": {"chexnet": "chexnet-nih", "unet": "unet-a"},
            "baseline": {"map_mean_std": [0.03, 0.01], "map_folds": [0.03] * 3},
            "pretrain": {"nih-run": {"family": "chexnet", "epochs": 8, "best_epoch": 6, "wall_seconds": 400.0,
                                     "nih_val": {"val_auc": 0.812, "val_loss": 0.5, "val_images": 122.0}}}}


def _info(experiment: str, cv: dict) -> dict:
    metrics = {"cv_map_mean": cv["map_mean_std"][0], "cv_map_std": cv["map_mean_std"][1], "cv_auc_mean":
               cv["auc_mean_std"][0], "cv_auc_std": cv["auc_mean_std"][1], "oof_auc": cv["oof_auc"], "cv_folds": 3.0}
    return {"experiment": experiment, "fold": -1, "metrics": metrics, "params": 3.4e6, "bytes": 7_000_000,
            "train_seconds": 300.0, "epochs": 5, "best_epoch": 5,
            "thresholds": {"box_threshold": 0.3, "gate_threshold": 0.1, "probability_threshold": 0.45},
            "config": {"image_size": 224, "lr": 1e-4, "batch_size": 16, "seed": 42,
                       "model": {"backbone": "efficientnet-lite0", "encoder": "efficientnet-lite0",
                                 "decoder_channels": [128, 64], "mask_threshold": 0.5, "lung_prior": "filter"}}}


def test_cards_quote_the_stored_metrics_and_say_how_nih_was_used(tmp_path):
    summary = _summary()
    shipped = {name: _info(experiment, summary["experiments"][experiment]["plain"])
               for name, experiment in summary["shipped_experiments"].items()}
    model_cards.write_cards(summary, shipped, tmp_path)  # not the repo's models/: docs/models.md is left alone
    chexnet = (tmp_path / "chexnet.md").read_text()
    block = json.loads(re.search(r"```json metrics\n(.*?)\n```", chexnet, flags=re.S).group(1))
    assert block == shipped["chexnet"]["metrics"]
    assert "0.000 ± 0.010" in chexnet and "0.780 ± 0.020" in chexnet
    assert "Not a diagnosis" in chexnet and "retrained on all 210 patients" in chexnet
    assert "best NIH-validation AUC 0.812" in chexnet and "other films of a few validation patients" in chexnet
    assert "| chexnet-nih **(shipped)** |" in chexnet and "| chexnet-a |" in chexnet and "unet-a" not in chexnet
    unet = (tmp_path / "unet.md").read_text()
    assert "EfficientNet-Lite0 (ImageNet init" in unet and "not used by this model" in unet
    assert "at 224 px for 5 epochs" in unet
