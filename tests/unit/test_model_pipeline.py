"""The model pipeline's pure parts (``pneumo models``): experiment files, folds, OOF storage, experiment choice and
model cards that quote exactly the recorded numbers. The end-to-end run is in tests/integration/test_models_pipeline.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pneumo.evaluation.classification import roc_auc
from pneumo.errors import CheckpointError, ConfigError, DataLayoutError
from pneumo.types import ImageOutput
from pneumo.preprocess import GeometryRecord
from pneumo.pipeline.cards import write_cards
from pneumo.pipeline.cv import Pipeline, PipelineSettings, read_rsna_folders
from pneumo.training.experiments import experiment_from_dict, load_experiment, load_experiments
from pneumo.pipeline.oof import OOF_JSON, OOF_NPZ, OOFOutputs, load_oof, save_oof
from pneumo.pipeline.report import choose_experiment, mean_std

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "configs" / "experiments"


def _plain(map_mean: float, auc_mean: float) -> dict:
    return {"map_mean_std": [map_mean, 0.01], "auc_mean_std": [auc_mean, 0.02], "map_folds": [map_mean] * 3,
            "auc_folds": [auc_mean] * 3, "oof_auc": auc_mean}


def _experiment(family: str, map_mean: float, auc_mean: float, init: str | None = None) -> dict:
    return {"family": family, "overrides": ["image_size=224", "epochs=5"], "nih": False, "init": init,
            "plain": _plain(map_mean, auc_mean), "train_seconds_folds": [60.0, 60.0, 60.0]}


def test_choose_experiment_takes_the_best_finished_candidate():
    experiments = {"a": _experiment("chexnet", 0.01, 0.70), "b": _experiment("chexnet", 0.00, 0.75),
                   "c": _experiment("unet", 0.10, 0.60), "d": _experiment("unet", 0.05, 0.80)}
    assert choose_experiment(experiments, ("a", "b", "missing"), "auc") == "b"
    assert choose_experiment(experiments, ("c", "d"), "map") == "c"
    assert choose_experiment(experiments, ("missing",), "map") is None


def test_mean_std_ignores_missing_values():
    assert mean_std([0.1, None, float("nan"), 0.3]) == pytest.approx((0.2, np.std([0.1, 0.3], ddof=1)))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(np.isnan(mean_std([None])))


# ---- experiment files ---------------------------------------------------------------------------------------
def test_every_shipped_experiment_file_loads_and_resolves():
    experiments = load_experiments(EXPERIMENTS)
    assert len(experiments) == 19 and {e.kind for e in experiments.values()} == {"cv", "pretrain", "fixed"}
    assert {e.ships_as for e in experiments.values() if e.kind == "cv"} == {"unet", "maskrcnn", "chexnet"}
    for fixed in ("unet-rsna-mini", "maskrcnn-rsna-mini"):  # pinned to the shipped file (until it is re-shipped)
        experiment = experiments[fixed]
        assert experiment.kind == "fixed" and experiment.trained_on == ("rsna-mini",)
        assert experiment.settings() == [f"checkpoint={experiment.checkpoint}", "trained_on=rsna-mini"]
    nih = experiments["chexnet-lite0-224-nih"]
    assert nih.init_from == "chexnet-nih" and experiments["chexnet-nih"].kind == "pretrain"
    config = experiments["unet-lite0"].train_config(REPO, folds=3, val_fold=2, split_seed=0, seed=42)
    assert (config.epochs, config.image_size, config.folds, config.val_fold, config.device) == (8, 256, 3, 2, "cpu")
    assert config.model.encoder == "efficientnet-lite0" and config.model.lung_prior == "filter"
    assert config.weight_decay == pytest.approx(1e-4)  # from configs/unet.yaml, under the experiment's values
    scaled = experiments["unet-lite0"].train_config(REPO, folds=3, val_fold=0, split_seed=0, seed=42, epochs_scale=0.1)
    assert scaled.epochs == 1
    # --experiments NAME also loads the pretraining it starts from
    assert set(load_experiments(EXPERIMENTS, ["chexnet-lite0-224-nih"])) == {"chexnet-lite0-224-nih", "chexnet-nih"}
    with pytest.raises(ConfigError, match="unknown experiment"):
        load_experiments(EXPERIMENTS, ["no-such-experiment"])


@pytest.mark.parametrize("values, message", [
    ({"family": "unet", "epochs": 1, "image_size": 64, "learning_rate": 0.1}, "unknown experiment key.*learning_rate"),
    ({"family": "unet", "epochs": 1, "image_size": 64, "config": {"model": {"encoderr": "x"}}}, "encoderr"),
    ({"family": "unet", "epochs": 1, "image_size": 64, "config": {"lrr": 0.1}}, "lrr"),
    ({"family": "unet", "epochs": 1, "image_size": 64, "config": {"epochs": 3}}, "may not set epochs"),
    ({"family": "unet", "epochs": 1, "image_size": 64, "config": {"split_seed": 3}}, "may not set split_seed"),
    ({"family": "unet", "image_size": 64}, "missing required key.*epochs"),
    ({"family": "unet", "epochs": "3", "image_size": 64}, "epochs must be int"),
    ({"family": "unet", "epochs": True, "image_size": 64}, "epochs must be int"),
    ({"family": "unet", "epochs": 1, "image_size": 64, "kind": "finetune"}, "kind must be one of"),
    ({"family": "no-such-family", "epochs": 1, "image_size": 64}, "no-such-family"),
    ({"family": "unet", "kind": "fixed", "checkpoint": "m.pt"}, "missing required key.*checkpoint_sha256"),
    ({"family": "unet", "kind": "fixed", "checkpoint": "m.pt", "checkpoint_sha256": "ab"}, "64 lower-case hex"),
    ({"family": "unet", "kind": "fixed", "checkpoint": "m.pt", "checkpoint_sha256": "a" * 64, "epochs": 3},
     "not a recipe: remove epochs"),
    ({"family": "unet", "epochs": 1, "image_size": 64, "trained_on": ["rsna-mini"]}, "belong to kind: fixed"),
])
def test_the_experiment_loader_refuses_bad_files(values, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict("bad", values)


def test_an_experiment_file_with_an_unknown_key_names_the_file(tmp_path):
    (tmp_path / "x.yaml").write_text("family: chexnet\nepochs: 1\nimage_size: 64\ntta: true\nttaa: false\n")
    with pytest.raises(ConfigError, match=r"x\.yaml.*ttaa"):
        load_experiment(tmp_path / "x.yaml")
    (tmp_path / "x.yaml").write_text("family: chexnet\nepochs: 1\nimage_size: 64\ninit_from: missing-run\n")
    with pytest.raises(ConfigError, match="missing-run"):
        load_experiments(tmp_path)


def test_the_models_command_refuses_unknown_stages_and_disagreeing_experiments(tmp_path, capsys):
    from pneumo.cli import main

    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "a.yaml").write_text("family: chexnet\nepochs: 1\nimage_size: 64\ndata: [one]\n")
    (folder / "b.yaml").write_text("family: chexnet\nepochs: 1\nimage_size: 64\ndata: [two]\n")
    work = tmp_path / "work"
    assert main(["models", "cv", "--experiments-dir", str(folder), "--out", str(work)]) == 2
    assert "different `data`" in capsys.readouterr().err
    assert main(["models", "cv", "train", "--experiments-dir", str(folder), "--experiments", "a", "--out", str(work)]) == 2
    assert "unknown stage(s) train" in capsys.readouterr().err
    assert not work.exists()  # refused before anything was written


# ---- data and folds -----------------------------------------------------------------------------------------
def _pipeline(data: tuple[Path, ...], work: Path, folds: int = 3) -> Pipeline:
    return Pipeline(PipelineSettings(root=REPO, work=work, data=data, folds=folds), {}, echo=lambda _: None)


@pytest.mark.parametrize("k", [3, 5])
def test_the_cv_folds_equal_the_split_pneumo_train_makes(rsna_mini, tmp_path, k):
    from pneumo.data.rsna import read_rsna
    from pneumo.training.config import resolve_train_config
    from pneumo.training.data_setup import split

    records = list(read_rsna(rsna_mini))
    pipeline = _pipeline((rsna_mini,), tmp_path, folds=k)
    seen = []
    for fold in range(k):
        config = resolve_train_config("chexnet", REPO / "configs" / "chexnet.yaml", [f"folds={k}", f"val_fold={fold}"])
        old_train, old_val = split(records, config)
        new_train, new_val = pipeline.fold_split(fold)
        assert [r.image_id for r in new_train] == [r.image_id for r in old_train]
        assert [r.image_id for r in new_val] == [r.image_id for r in old_val]
        seen += [r.image_id for r in new_val]
    assert sorted(seen) == sorted(r.image_id for r in records)  # every patient validates exactly once


@pytest.mark.slow  # reads 1,247 DICOM headers: about 10 s
def test_several_data_folders_merge_patient_disjoint(rsna_mini, shared_data, tmp_path):
    plus = shared_data / "rsna-plus"
    if not plus.is_dir():
        pytest.skip(f"rsna-plus not found at {plus}")
    merged = read_rsna_folders([rsna_mini, plus])
    assert len(merged) == 1247 and len({r.image_id for r in merged}) == 1247
    assert sum(int(r.target) for r in merged) == 327
    pipeline = _pipeline((rsna_mini, plus), tmp_path, folds=5)
    for fold in range(5):
        train, val = pipeline.fold_split(fold)
        assert not {r.patient_id for r in train} & {r.patient_id for r in val}
        assert len(train) + len(val) == 1247 and abs(len(val) - 1247 / 5) <= 1
    assert read_rsna_folders([plus, rsna_mini])[0].image_id == merged[0].image_id  # folder order does not matter
    with pytest.raises(DataLayoutError, match="210 image.*two data folders") as error:
        read_rsna_folders([rsna_mini, rsna_mini])
    assert not any(r.image_id in str(error.value) for r in merged)  # no patient identifier in the message
    with pytest.raises(DataLayoutError, match="not a Kaggle RSNA layout"):
        read_rsna_folders([shared_data / "nih-weak"])


# ---- OOF storage ----------------------------------------------------------------------------------------------
def _oof(rng: np.random.Generator, n: int = 5, views: int = 2) -> OOFOutputs:
    def output(i: int) -> ImageOutput:
        def view() -> np.ndarray:
            corner, size = rng.uniform(0, 500, (i % 3, 2)), rng.uniform(10, 400, (i % 3, 2))
            return np.hstack([corner, corner + size, rng.uniform(0, 1, (i % 3, 1))]).astype(np.float32)

        boxes = tuple(view() for _ in range(views))
        return ImageOutput(float(rng.uniform()), boxes, None, (1024 - i, 1000 + i))

    return OOFOutputs(ids=[f"id-{i}" for i in range(n)], checkpoint="last.pt",
                      variants={"plain": [output(i) for i in range(n)], "tta": [output(i) for i in range(n)]},
                      prior=rng.uniform(size=(16, 16)).astype(np.float32), size=16,
                      geometry=[GeometryRecord.for_image(1024 - i, 1000 + i, 16) for i in range(n)])


def test_the_oof_round_trip_is_exact(tmp_path):
    oof = _oof(np.random.default_rng(0))
    save_oof(tmp_path, oof)
    back = load_oof(tmp_path)
    assert back.ids == oof.ids and back.checkpoint == oof.checkpoint and back.size == oof.size
    assert back.geometry == oof.geometry and np.array_equal(back.prior, oof.prior)
    assert list(back.variants) == list(oof.variants)
    for name, outputs in oof.variants.items():
        for a, b in zip(outputs, back.variants[name], strict=True):
            assert a.probability == b.probability and a.image_size == b.image_size
            assert len(a.views) == len(b.views) and all(np.array_equal(x, y) for x, y in zip(a.views, b.views))
            assert all(y.dtype == np.float32 and y.shape[1] == 5 for y in b.views)
            assert np.array_equal(a.boxes(), b.boxes())
    with np.load(tmp_path / OOF_NPZ, allow_pickle=False) as data:  # plain arrays: loadable without pickle
        assert data["plain.probability"].dtype == np.float64


def test_a_half_written_or_foreign_oof_pair_is_not_trusted(tmp_path):
    assert load_oof(tmp_path) is None
    save_oof(tmp_path, _oof(np.random.default_rng(1)))
    first = (tmp_path / OOF_JSON).read_text()
    save_oof(tmp_path, _oof(np.random.default_rng(2)))
    (tmp_path / OOF_JSON).write_text(first)  # an npz newer than its json (interrupted between the two writes)
    assert load_oof(tmp_path) is None
    (tmp_path / OOF_JSON).write_text(json.dumps({**json.loads(first), "format": 99}))
    with pytest.raises(CheckpointError, match="format"):
        load_oof(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic writes left no temporary files
    with pytest.raises(ValueError, match="outputs for"):
        save_oof(tmp_path / "bad", OOFOutputs(["a", "b"], "last.pt", {"plain": []}))
    assert not (tmp_path / "bad").exists()


def _synthetic_oof(rng: np.random.Generator, gts: list[list[np.ndarray]], noise: float) -> list[OOFOutputs]:
    """Per fold, outputs whose boxes are the ground truth moved by ``noise`` px (a fixed box for negatives)."""
    folds = []
    for k, fold in enumerate(gts):
        outputs = []
        for g in fold:
            boxes = g + rng.normal(0, noise, g.shape) if len(g) else np.array([[300.0, 300.0, 500.0, 600.0]])
            view = np.hstack([boxes, rng.uniform(0.3, 0.9, (len(boxes), 1))]).astype(np.float32)
            probability = rng.uniform(0.5, 0.9) if len(g) else rng.uniform(0.1, 0.6)
            outputs.append(ImageOutput(float(probability), (view,), None, (1024, 1024)))
        folds.append(OOFOutputs([f"{k}-{i}" for i in range(len(fold))], "last.pt", {"plain": outputs}))
    return folds


@pytest.mark.slow  # five runs of the ensemble tuning grid: about 15 s
def test_the_ensemble_is_cross_fitted_then_tuned_on_every_oof_output(tmp_path):
    from pneumo.ensemble import EnsembleMember, EnsembleSpec, FusionParams
    from pneumo.training.ensemble_tuning import COMPACT_GRIDS, evaluate_spec, tune_ensemble
    from pneumo.pipeline.report import ensemble_figures

    rng = np.random.default_rng(0)
    box = np.array([[200.0, 250.0, 420.0, 700.0]], dtype=np.float32)
    gts = [[box + 40 * i if i % 2 else np.zeros((0, 4), np.float32) for i in range(4)] for _ in range(3)]
    labels = [[int(len(g) > 0) for g in fold] for fold in gts]
    oof = {"ux": _synthetic_oof(rng, gts, 25.0), "cx": _synthetic_oof(rng, gts, 0.0)}
    summary = {"shipped_experiments": {"unet": "ux", "chexnet": "cx"}, "split_seed": 0, "data": {"dirs": ["x"]}}
    truth = {f"{k}-{i}": SimpleNamespace(boxes=g, target=int(len(g) > 0)) for k, fold in enumerate(gts)
             for i, g in enumerate(fold)}
    result = ensemble_figures(_pipeline((), tmp_path), summary, oof, truth)
    assert result["ensemble_scored_on"]["images"] == result["ensemble_scored_on"]["of"] == 12
    assert result["ensemble_variant"] == "plain" and set(result["ensemble"]) == {"plain"}  # no TTA outputs given
    figures = result["ensemble"]["plain"]
    assert len(figures["map_folds"]) == len(figures["auc_folds"]) == 3

    def outputs(folds: list[int]) -> dict[str, list]:
        return {"unet": [o for j in folds for o in oof["ux"][j].variants["plain"]],
                "chexnet": [o for j in folds for o in oof["cx"][j].variants["plain"]]}

    spec = EnsembleSpec.from_dict(figures["spec"])
    assert [m.model for m in spec.members] == ["unet"] and spec.classifier.model == "chexnet"
    everything = [g for fold in gts for g in fold]
    assert evaluate_spec(spec, outputs([0, 1, 2]), everything) == pytest.approx(figures["tuned_on_all_oof_map"])
    base = EnsembleSpec(members=(EnsembleMember("unet"),), classifier=EnsembleMember("chexnet"),
                        fusion=FusionParams(tta_flip=False))
    tuned = tune_ensemble(base, outputs([1, 2]), gts[1] + gts[2], **COMPACT_GRIDS)  # fold 0: a spec tuned on 1 and 2
    assert evaluate_spec(tuned, outputs([0]), gts[0]) == pytest.approx(figures["map_folds"][0])
    from pneumo.ensemble import ensemble_probability  # the cross-fitted probabilities kept for the calibration
    mine = outputs([0])
    assert figures["crossfit_probability_folds"][0] == pytest.approx(
        [ensemble_probability(tuned, {k: mine[k][i] for k in tuned.model_keys}) for i in range(4)])
    assert figures["crossfit_ids_folds"] == [f.ids for f in oof["ux"]]
    assert ensemble_figures(_pipeline((), tmp_path), {**summary, "shipped_experiments": {"chexnet": "cx"}},
                            oof, truth) == {}  # no box model: no ensemble
    # a member with outputs for part of the patients only (a fixed checkpoint): every model on the shared images
    part = {"ux": [OOFOutputs(f.ids[1:], f.checkpoint, {"plain": f.variants["plain"][1:]}) for f in oof["ux"]],
            "cx": oof["cx"]}
    shared = ensemble_figures(_pipeline((), tmp_path), summary, part, truth)
    assert shared["ensemble_scored_on"]["images"] == 9 and shared["ensemble_scored_on"]["of"] == 12
    alone = shared["ensemble_scored_on"]["members_same_images"]["chexnet"]
    probabilities = [[o.probability for o in f.variants["plain"][1:]] for f in oof["cx"]]
    assert alone["auc_folds"] == pytest.approx([roc_auc(np.array(p), np.array(y[1:]))
                                                 for p, y in zip(probabilities, labels)])


# ---- model cards -------------------------------------------------------------------------------------------------
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
    write_cards(summary, shipped, tmp_path)  # no docs page given: docs/models.md is left alone
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


def test_cards_describe_the_data_the_cv_ran_on(tmp_path):
    summary = {**_summary(), "folds": 5,
               "data": {"dirs": ["rsna-mini", "rsna-plus"], "patients": 1247, "positive_patients": 327}}
    shipped = {name: _info(experiment, summary["experiments"][experiment]["plain"])
               for name, experiment in summary["shipped_experiments"].items()}
    docs = tmp_path / "docs" / "models.md"
    docs.parent.mkdir()
    write_cards(summary, shipped, tmp_path, docs)
    chexnet = (tmp_path / "chexnet.md").read_text()
    assert "rsna-mini + rsna-plus: 1247 RSNA Pneumonia Detection Challenge patients (327 with" in chexnet
    assert "retrained on all 1247 patients" in chexnet and "about 998 RSNA patients per CV training fold" in chexnet
    training_part = chexnet.split("## Input check")[0]  # the input check counts every real radiograph, 210 among them
    assert "210" not in training_part and "## Input check" in chexnet
    page = docs.read_text()
    assert "## Cross-validation on rsna-mini + rsna-plus (5-fold" in page and "pneumo models" in page


def test_cards_state_the_out_of_fold_calibration_with_intervals_and_link_the_diagram(tmp_path):
    from pneumo.pipeline.calibration import figure_name, oof_calibration

    rng = np.random.default_rng(0)
    p = [rng.uniform(0.02, 0.98, 300) for _ in range(3)]
    y = [(rng.random(300) < q ** 2).astype(int).tolist() for q in p]
    figures = tmp_path / "docs" / "figures"
    figures.mkdir(parents=True)
    fitted = oof_calibration([q.tolist() for q in p], y, [[f"{k}-{i}" for i in range(300)] for k in range(3)], "chexnet",
                             figures / figure_name("chexnet"), n_boot=50)
    summary = {**_summary(), "calibration": {"chexnet": fitted, "unet": {"status": "skipped", "reason": "too little data"}}}
    shipped = {name: _info(experiment, summary["experiments"][experiment]["plain"])
               for name, experiment in summary["shipped_experiments"].items()}
    models, docs = tmp_path / "models", tmp_path / "docs" / "models.md"
    models.mkdir()
    write_cards(summary, shipped, models, docs)
    chexnet = (models / "chexnet.md").read_text()
    section = chexnet.split("## Calibration (out-of-fold)")[1].split("## Known limits")[0]
    cal, raw = fitted["calibrated"], fitted["raw"]
    assert f"Method **{fitted['chosen']}**" in section and "Decision support, not diagnosis" in section
    ci = cal["sensitivity_at_90_specificity"]
    assert f"| sensitivity at 90 % specificity | " in section and f"{ci['estimate']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]" in section
    assert f"{raw['ece_width']['estimate']:.3f} [" in section and "`models/chexnet.calibration.json`" in section
    assert "(../docs/figures/reliability-oof-chexnet.png)" in section
    assert "Not fitted: too little data" in (models / "unet.md").read_text()
    page = docs.read_text()
    table = page.split("## Calibration (out-of-fold, cross-fitted)")[1].split("## Shipped files")[0]
    assert f"| chexnet ([diagram](figures/reliability-oof-chexnet.png)) | {fitted['chosen']} |" in table
    assert "| unet | not fitted (too little data)" in table


def test_the_ablation_table_quotes_both_sides_of_each_comparison():
    from pneumo.pipeline.cards import ablation_text

    summary = _summary()
    summary["experiments"]["chexnet-a"]["tta"] = _plain(0.0, 0.73)
    summary["experiments"]["chexnet-a"]["kind"] = "cv"
    summary["experiments"]["chexnet-old"] = {**_experiment("chexnet", 0.0, 0.61), "kind": "fixed", "scored_images": 90,
                                             "trained_on": ["rsna-mini"],
                                             "shipped_same_images": {"experiment": "chexnet-a", **_plain(0.0, 0.66)}}
    summary["partial_experiments"] = {"chexnet-long": {"overrides": ["image_size=256", "epochs=6"], "folds_done": [0],
                                                       "auc_folds": [0.787], "reference_auc_same_folds": {"chexnet-a": [0.836]}}}
    text = ablation_text(summary)
    assert "| chexnet-long (image_size=256, epochs=6) instead of chexnet-a | AUC, fold(s) 0 | 0.836 | 0.787 |" in text
    assert "| chexnet-a: flip TTA | AUC / mAP, 3 folds | 0.700 ± 0.020 / 0.000 ± 0.010 | 0.730 ± 0.020 / 0.000 ± 0.010 |" in text
    assert ("| training data: rsna-mini (chexnet-old) -> this run's folds (chexnet-a) | AUC / mAP on the same 90 images | "
            "0.610 ± 0.020 / 0.000 ± 0.010 | 0.660 ± 0.020 / 0.000 ± 0.010 |") in text
    assert ablation_text({"experiments": {}, "folds": 3}) == ""
