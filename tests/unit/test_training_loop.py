"""Engine tests with a tiny registered family on synthetic PNGs (CPU, 64 px, a few steps per run)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from pneumo.data.records import ImageRecord, frozen_boxes
from pneumo.errors import CheckpointError, ConfigError
from pneumo.models.base import PneumoModel, RawOutput, Target
from pneumo.models.checkpoint import load_checkpoint, read_checkpoint_meta
from pneumo.models.common import union_masks
from pneumo.models.registry import register_family, unregister_family
from pneumo.training.config import EarlyStoppingConfig, TrainConfig, load_config_yaml
from pneumo.training.data_setup import split
from pneumo.training.history import read_history_csv
from pneumo.training.loop import fit, load_run_config
from pneumo.training.run_setup import init_weights_from
from pneumo.training.state import STATE_FILE, load_state

# ---- a tiny registered family and synthetic records ----------------------------------------------------------
TINY = "tiny-engine-test"
TINY_OTHER = "tiny-engine-test-other"
#: set ``calls`` to N to make the N-th training ``compute_loss`` call send ``signal`` to this process
INTERRUPT = {"calls": None, "seen": 0, "signal": signal.SIGINT}


@dataclass
class TinyConfig:
    channels: int = 4
    dropout: float = 0.2
    pos_weight: float | None = None  # BCE pos_weight of the image label


class TinyModel(PneumoModel):
    """conv-BN-ReLU x2 -> per-pixel opacity logit (stride 4) + image logit; dropout exercises the RNG."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
        )
        self.drop = nn.Dropout2d(config.dropout)
        self.seg = nn.Conv2d(c, 1, 1)
        self.cls = nn.Linear(c, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.drop(self.body(images - 0.5))
        return self.seg(features), self.cls(features.mean(dim=(2, 3)))[:, 0]

    def compute_loss(self, images: torch.Tensor, targets: list[Target]) -> dict[str, torch.Tensor]:
        if torch.is_grad_enabled() and INTERRUPT["calls"] is not None:
            INTERRUPT["seen"] += 1
            if INTERRUPT["seen"] == INTERRUPT["calls"]:
                os.kill(os.getpid(), INTERRUPT["signal"])
        seg, logit = self(images)
        masks = union_masks(targets, images.shape[-2], images.shape[-1], images.device)
        masks = F.avg_pool2d(masks, 4)
        labels = torch.tensor([float(t.label) for t in targets], device=images.device)
        seg_loss = F.binary_cross_entropy_with_logits(seg, masks)
        pos_weight = None if self.config.pos_weight is None else torch.tensor(self.config.pos_weight)
        cls_loss = F.binary_cross_entropy_with_logits(logit, labels, pos_weight=pos_weight)
        return {"loss": seg_loss + cls_loss, "seg": seg_loss.detach(), "cls": cls_loss.detach()}

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> list[RawOutput]:
        from pneumo.postprocess import mask_to_boxes

        was = self.training
        self.eval()
        seg, logit = self(images)
        self.train(was)
        outputs = []
        for prob_map, p in zip(torch.sigmoid(seg[:, 0]).numpy(), torch.sigmoid(logit).tolist()):
            boxes = mask_to_boxes(prob_map, threshold=0.3)
            boxes[:, :4] *= 4.0  # stride-4 map -> input pixels
            outputs.append(RawOutput(probability=float(p), boxes=boxes, heatmap=None))
        return outputs


def register_tiny() -> None:
    unregister_family(TINY)
    unregister_family(TINY_OTHER)
    register_family(TINY, TinyConfig)(TinyModel)
    register_family(TINY_OTHER, TinyConfig)(type("TinyOther", (TinyModel,), {}))


def unregister_tiny() -> None:
    unregister_family(TINY)
    unregister_family(TINY_OTHER)


def make_records(folder: Path, n: int = 20, seed: int = 0) -> list[ImageRecord]:
    """``n`` synthetic 8-bit PNG "radiographs" (96 x 80): positives (every second image) hold one bright
    rectangle, which is their box (original pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        pixels = (rng.random((96, 80)) * 60 + 40).astype(np.uint8)
        boxes = None
        target = i % 2
        if target:
            x1, y1 = int(rng.integers(5, 40)), int(rng.integers(5, 50))
            w, h = int(rng.integers(15, 30)), int(rng.integers(20, 40))
            pixels[y1 : y1 + h, x1 : x1 + w] = 230
            boxes = [[x1, y1, x1 + w, y1 + h]]
        path = folder / f"img{i:03d}.png"
        Image.fromarray(pixels).save(path)
        records.append(ImageRecord(image_id=f"img{i:03d}", patient_id=f"p{i:03d}", path=path,
                                   boxes=frozen_boxes(boxes), target=target))
    return records


# ---- tests ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def tiny_family():
    register_tiny()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    unregister_tiny()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return make_records(tmp_path_factory.mktemp("images") / "png", n=20)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@dataclasses.dataclass
class _NoPosWeight:
    channels: int = 4


def _config(cache_dir: str, **changes) -> TrainConfig:
    base = TrainConfig(
        epochs=2, batch_size=4, lr=3e-3, warmup_epochs=0.5, image_size=64, folds=4, val_fold=1,
        cache_dir=cache_dir, model=TinyConfig(), early_stopping=EarlyStoppingConfig(monitor="val_loss", patience=0),
    )
    return dataclasses.replace(base, **changes)


def _split(records) -> tuple[list, list]:
    """The (train, validation) records of every ``_config`` run (4 folds, validation fold 1)."""
    return split(records, _config(""))


def _weights(path):
    return load_checkpoint(path).model.state_dict()


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_dir_holds_every_artefact(records, cache_dir, tmp_path):
    run = tmp_path / "run"
    result = fit(TINY, _config(cache_dir), *_split(records), run, progress=False, log=lambda _: None)
    assert not result.interrupted and result.epoch == 2
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "best.pt", "last.pt", STATE_FILE, "history.csv", "loss_curve.png", "train_summary.json"} <= names
    history = read_history_csv(run / "history.csv")
    assert [r.epoch for r in history] == [1, 2]
    assert all(math.isfinite(r.train_loss) and math.isfinite(r.val_loss) and r.seconds > 0 for r in history)
    assert all(0.0 <= r.val_auc <= 1.0 for r in history)  # the validation fold holds both classes
    family, saved = load_config_yaml(run / "config.yaml")
    assert family == TINY and saved == _config(cache_dir)
    # best.pt: the right family, preprocessing, thresholds tuned on validation, metrics, fingerprint
    loaded = load_checkpoint(run / "best.pt", expected_family=TINY)
    assert loaded.preprocess == {"size": 64}
    assert set(loaded.thresholds) == {"box_threshold", "gate_threshold", "probability_threshold"}
    assert loaded.metrics["epoch"] == result.best_epoch
    best_row = history[result.best_epoch - 1]
    assert loaded.metrics["val_loss"] == pytest.approx(best_row.val_loss, rel=1e-5)
    assert best_row.val_loss == min(r.val_loss for r in history)  # monitor val_loss picks the lowest
    meta = read_checkpoint_meta(run / "best.pt")
    assert len(meta["data_fingerprint"]) == 64 and meta["extra"]["train_config"]["folds"] == 4
    outputs = loaded.model.infer(torch.rand(2, 1, 64, 64))
    assert all(math.isfinite(o.probability) and np.isfinite(o.boxes).all() for o in outputs)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["best_epoch"] == result.best_epoch and summary["ranks_identical"] is True
    # the training patients and the validation patients are disjoint, and together all the records
    split = meta["extra"]["split"]
    assert split["n_train"] + split["n_val"] == len(records) and split["n_val"] == len(records) // 4


def test_same_seed_gives_identical_runs_on_cpu(records, cache_dir, tmp_path):
    config = _config(cache_dir, epochs=1)
    a = fit(TINY, config, *_split(records), tmp_path / "a", progress=False, log=lambda _: None)
    b = fit(TINY, config, *_split(records), tmp_path / "b", progress=False, log=lambda _: None)
    assert _same(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt"))
    assert a.history[0].train_loss == b.history[0].train_loss
    assert a.history[0].val_loss == b.history[0].val_loss
    c = fit(TINY, dataclasses.replace(config, seed=7), *_split(records), tmp_path / "c", progress=False, log=lambda _: None)
    assert not _same(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "c" / "last.pt"))
    assert c.history[0].train_loss != a.history[0].train_loss
    # fit leaves the global switches as it found them
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_then_resume_continues_exactly(records, cache_dir, tmp_path, signum):
    config = _config(cache_dir)
    straight = fit(TINY, config, *_split(records), tmp_path / "straight", progress=False, log=lambda _: None)

    INTERRUPT.update(calls=5, seen=0, signal=signum)  # a signal during step 5 of 6 (3 per epoch): inside epoch 2
    handler_before = signal.getsignal(signum)
    try:
        stopped = fit(TINY, config, *_split(records), tmp_path / "stopped", progress=False, log=lambda _: None)
    finally:
        INTERRUPT.update(calls=None, seen=0, signal=signal.SIGINT)
    assert signal.getsignal(signum) is handler_before  # fit restored the process's handler
    assert stopped.interrupted and stopped.epoch == 1
    state = load_state(tmp_path / "stopped" / STATE_FILE)
    assert (state["progress"].epoch, state["progress"].batch) == (1, 2)  # the interrupted step was finished

    resumed = fit(TINY, None, *_split(records), tmp_path / "stopped", resume=True, progress=False, log=lambda _: None)
    assert not resumed.interrupted and resumed.epoch == 2
    assert _same(_weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "stopped" / "last.pt"))
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]
    assert [r.val_map for r in resumed.history] == [r.val_map for r in straight.history]


def test_resume_refuses_another_family_and_fresh_runs_refuse_to_overwrite(records, cache_dir, tmp_path):
    run = tmp_path / "run"
    fit(TINY, _config(cache_dir, epochs=1), *_split(records), run, progress=False, log=lambda _: None)
    with pytest.raises(CheckpointError, match="tiny-engine-test"):
        load_run_config(run, TINY_OTHER)
    with pytest.raises(CheckpointError):
        fit(TINY_OTHER, None, *_split(records), run, resume=True, progress=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="--resume"):
        fit(TINY, _config(cache_dir, epochs=1), *_split(records), run, progress=False, log=lambda _: None)
    with pytest.raises(CheckpointError):
        load_run_config(tmp_path / "nothing-here", TINY)


def test_init_from_fine_tunes_from_a_checkpoint_of_the_same_family(records, cache_dir, tmp_path):
    fit(TINY, _config(cache_dir, epochs=1), *_split(records), tmp_path / "source", progress=False, log=lambda _: None)
    source = tmp_path / "source" / "last.pt"
    model = TinyModel(TinyConfig())
    loaded, total = init_weights_from(model, TINY, source)
    assert loaded == total == len(model.state_dict())
    assert _same(model.state_dict(), _weights(source))
    with pytest.raises(CheckpointError, match="tiny-engine-test"):
        init_weights_from(TinyModel(TinyConfig()), TINY_OTHER, source)
    with pytest.raises(CheckpointError, match="matches only"):
        init_weights_from(TinyModel(TinyConfig(channels=8)), TINY, source)
    # through fit: the run starts from the source weights, so its first epoch begins where the source ended
    lines: list[str] = []
    tuned = fit(TINY, _config(cache_dir, epochs=1, init_from=str(source)), *_split(records), tmp_path / "tuned",
                progress=False, log=lines.append)
    fresh = fit(TINY, _config(cache_dir, epochs=1), *_split(records), tmp_path / "fresh", progress=False, log=lambda _: None)
    assert any(f"initialised {total} of {total} weight tensors" in line for line in lines)
    assert tuned.history[0].train_loss < fresh.history[0].train_loss


def test_early_stopping_stops_when_the_monitor_stalls(records, cache_dir, tmp_path):
    stalled = EarlyStoppingConfig(monitor="val_loss", patience=1, min_delta=1e9)  # nothing can improve by 1e9
    result = fit(TINY, _config(cache_dir, epochs=5, early_stopping=stalled), *_split(records), tmp_path / "run",
                 progress=False, log=lambda _: None)
    assert result.stopped_early and result.epoch == 2 and result.best_epoch == 1
    assert len(read_history_csv(tmp_path / "run" / "history.csv")) == 2
    assert read_checkpoint_meta(tmp_path / "run" / "best.pt")["metrics"]["epoch"] == 1


def test_fit_refuses_overlapping_patients_but_allows_an_in_sample_validation(records, cache_dir, tmp_path):
    from pneumo.errors import DataLayoutError

    train, val = _split(records)
    with pytest.raises(DataLayoutError, match="both the training and the validation"):
        fit(TINY, _config(cache_dir, epochs=1), train, val + train[:1], tmp_path / "leak", progress=False)
    with pytest.raises(DataLayoutError, match="0 validation"):
        fit(TINY, _config(cache_dir, epochs=1), train, [], tmp_path / "empty", progress=False)
    assert not (tmp_path / "leak").exists() and not (tmp_path / "empty").exists()  # refused before writing
    result = fit(TINY, _config(cache_dir, epochs=1), records, records, tmp_path / "all", progress=False, log=lambda _: None)
    split_info = read_checkpoint_meta(tmp_path / "all" / "last.pt")["extra"]["split"]
    assert result.epoch == 1 and split_info["n_train"] == split_info["n_val"] == len(records)


def test_pos_weight_balancing_sets_the_family_weight(records, cache_dir, tmp_path):
    config = _config(cache_dir, epochs=1, balance="pos_weight")
    fit(TINY, config, *_split(records), tmp_path / "run", progress=False, log=lambda _: None)
    _, saved = load_config_yaml(tmp_path / "run" / "config.yaml")
    train, val = split(records, config)
    positives = sum(r.target for r in train)
    assert 0 < positives < len(train) and len(val) == 5
    assert saved.model.pos_weight == pytest.approx((len(train) - positives) / positives)
    with pytest.raises(ConfigError, match="pos_weight"):  # a family without such a setting is refused
        fit(TINY, dataclasses.replace(config, model=_NoPosWeight()), *_split(records), tmp_path / "other", progress=False)


def test_class_balanced_sampling_draws_both_classes_equally(records):
    from pneumo.data.datasets import balanced_sampler_weights
    from pneumo.training.sampling import EpochSampler

    skewed = records[:3] + [r for r in records if r.target == 0]  # 1 positive, 12 negatives
    sampler = EpochSampler(len(skewed), seed=0, weights=balanced_sampler_weights(skewed), num_samples=4000)
    drawn = np.array([skewed[i].target for i in sampler])
    assert abs(drawn.mean() - 0.5) < 0.05
    # a pure function of (seed, epoch); a later start skips exactly that many indices
    sampler.set_epoch(3)
    order = list(sampler)
    sampler.set_start(10)
    assert list(sampler) == order[10:] and len(sampler) == len(order) - 10
    # DDP shares: equal lengths, together the global order
    shares = [EpochSampler(13, seed=1, world_size=2, rank=r) for r in (0, 1)]
    assert len(list(shares[0])) == len(list(shares[1])) == 7
    assert sorted(set(list(shares[0]) + list(shares[1]))) == list(range(13))


def test_config_yaml_values_and_nested_overrides(tmp_path):
    from pneumo.training.config import resolve_train_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"epochs": 3, "augment": {"hflip_p": 0.0}, "model": {"channels": 2}}))
    register_tiny()
    config = resolve_train_config(TINY, path, ["model.dropout=0.5", "early_stopping.monitor=val_auc", "lr=1e-4"],
                                  {"epochs": 4, "image_size": None})
    assert config.epochs == 4 and config.lr == 1e-4 and config.augment.hflip_p == 0.0
    assert config.model == TinyConfig(channels=2, dropout=0.5) and config.early_stopping.monitor == "val_auc"
    for bad in (["model.nope=1"], ["early_stopping.monitor=accuracy"], ["val_fold=5"]):
        with pytest.raises(ConfigError):
            resolve_train_config(TINY, None, bad)
