"""Experiments as data: ``configs/experiments/<name>.yaml`` -> a typed ``Experiment`` (unknown keys refused).

Schema (see ``configs/experiments/README.md``)::

    family: unet                 # required: a registered family
    kind: cv                     # cv (k-fold CV on the RSNA data, default) | pretrain (NIH weak labels alone)
                                 #   | fixed (an already trained checkpoint, scored where it never trained)
    ships_as: unet               # candidate for the shipped model of that name (omit: compared only)
    epochs: 8                    # required
    image_size: 256              # required: square model input, px
    init_from: null              # a pretrain experiment's name, or a checkpoint path
    nih_in_training: false       # add the NIH records to every training fold (never to a validation fold)
    tta: true                    # also flip-TTA out-of-fold outputs
    base_config: null            # TrainConfig YAML under the values below (default configs/<family>.yaml)
    data: []                     # default RSNA folders (the CLI's --data wins); pretrain: the NIH folder
    folds: null                  # default k (the CLI's --folds wins); pretrain: the NIH split's k
    config:                      # TrainConfig values, nested as in configs/<family>.yaml
      lr: 0.0005
      model: {encoder: efficientnet-lite0}

A ``kind: fixed`` experiment names a trained checkpoint instead of a recipe (no ``epochs``, ``image_size``,
``config``; nothing is trained)::

    family: maskrcnn
    kind: fixed
    ships_as: maskrcnn
    checkpoint: models/maskrcnn.pt   # relative: from the repository root
    checkpoint_sha256: 0123...       # the file it was written for: a changed file is refused
    trained_on: [rsna-mini]          # data folders (names) whose patients it trained on: never scored there

``epochs``, ``image_size`` and ``init_from`` have one home (the top level); the split (``folds``, ``val_fold``,
``split_seed``), ``seed`` and ``cache_dir`` belong to the run (``pneumo models`` flags), so ``config`` refuses them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pneumo.errors import ConfigError
from pneumo.training.config import TrainConfig

KINDS: tuple[str, ...] = ("cv", "pretrain", "fixed")
#: TrainConfig keys an experiment's ``config`` may not set (they live at the top level or belong to the run)
RESERVED_CONFIG_KEYS: frozenset[str] = frozenset(
    {"epochs", "image_size", "init_from", "folds", "val_fold", "split_seed", "seed", "cache_dir", "device", "limit"}
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Experiment:
    """One experiment file; ``name`` is the file's stem. See the module docstring for each field."""

    name: str
    family: str
    epochs: int = 0
    image_size: int = 0
    kind: str = "cv"
    ships_as: str | None = None
    init_from: str | None = None
    nih_in_training: bool = False
    tta: bool = True
    base_config: str | None = None
    data: tuple[str, ...] = ()
    folds: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    trained_on: tuple[str, ...] = ()

    def checkpoint_path(self, root: Path) -> Path:
        """A fixed experiment's checkpoint (relative paths: from ``root``); ``ConfigError`` when it is missing
        or is not the file the experiment was written for (its sha256 differs)."""
        from pneumo.files import file_sha256

        path = Path(self.checkpoint or "")
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise ConfigError(f"experiment {self.name}: checkpoint {path} not found")
        if file_sha256(path) != self.checkpoint_sha256:
            raise ConfigError(f"experiment {self.name}: {path} is not the checkpoint it names (sha256 differs: "
                              "was it re-shipped?); point it at the file it was written for")
        return path

    def base_config_path(self, root: Path) -> Path:
        """The TrainConfig YAML under this experiment (relative paths: from ``root``, the repository root)."""
        path = Path(self.base_config) if self.base_config else Path("configs") / f"{self.family}.yaml"
        return path if path.is_absolute() else root / path

    def train_config(
        self, root: Path, *, folds: int, val_fold: int, split_seed: int, seed: int,
        cache_dir: str | None = None, init_from: str | None = None, epochs_scale: float = 1.0,
    ) -> TrainConfig:
        """Defaults <- base config <- ``config`` <- epochs / image_size / the run's split, seeds, cache, start.

        init_from: the resolved checkpoint path (``Experiment.init_from`` may name a pretrain experiment).
        epochs_scale: multiplies ``epochs`` (at least 1; smoke runs)."""
        from pneumo.config import apply_file, apply_values
        from pneumo.training.config import default_config, sync_family

        config = apply_file(default_config(self.family), self.base_config_path(root))
        config = apply_values(config, dict(self.config))
        run = {"epochs": max(1, round(self.epochs * epochs_scale)), "image_size": self.image_size, "folds": folds,
               "val_fold": val_fold, "split_seed": split_seed, "seed": seed, "device": "cpu", "cache_dir": cache_dir,
               "init_from": init_from}
        return sync_family(apply_values(config, run)).validate()

    def settings(self) -> list[str]:
        """``key=value`` strings of what this experiment sets (for reports and model cards)."""
        if self.kind == "fixed":
            return [f"checkpoint={self.checkpoint}", f"trained_on={','.join(self.trained_on) or 'none'}"]
        flat = [f"image_size={self.image_size}", f"epochs={self.epochs}"]
        flat += [f"{k}={_text(v)}" for k, v in _flatten(self.config)]
        return flat


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate one experiment file; ``ConfigError`` (naming the file) for anything wrong."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read experiment file {path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"experiment file {path} must hold a mapping of key: value")
    return experiment_from_dict(path.stem, values, source=str(path))


def experiment_from_dict(name: str, values: Mapping[str, Any], source: str = "<dict>") -> Experiment:
    """Validate ``values`` (an experiment file's mapping) -> ``Experiment``; ``ConfigError`` otherwise."""
    known = {f.name for f in dataclasses.fields(Experiment)} - {"name"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown experiment key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if not _NAME.match(name):
        raise ConfigError(f"{source}: experiment name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
    kind = values.get("kind", "cv")
    required = ("family", "checkpoint", "checkpoint_sha256") if kind == "fixed" else ("family", "epochs", "image_size")
    missing = sorted(k for k in required if values.get(k) is None)
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {', '.join(missing)}")
    config = values.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: 'config' must be a mapping of TrainConfig values")
    reserved = sorted(RESERVED_CONFIG_KEYS & set(config))
    if reserved:
        raise ConfigError(f"{source}: config may not set {', '.join(reserved)} (top-level keys or pneumo models flags)")
    if kind == "fixed":
        recipe = sorted(k for k in ("epochs", "image_size", "init_from", "nih_in_training", "config", "base_config")
                        if k in values)
        if recipe:
            raise ConfigError(f"{source}: a fixed experiment is a trained checkpoint, not a recipe: remove "
                              f"{', '.join(recipe)}")
    data = values.get("data") or []
    data = [data] if isinstance(data, str) else data
    trained_on = values.get("trained_on") or []
    trained_on = [trained_on] if isinstance(trained_on, str) else trained_on
    try:
        experiment = Experiment(
            name=name, family=_typed(values["family"], str, "family", source),
            epochs=_typed(values.get("epochs", 0), int, "epochs", source),
            image_size=_typed(values.get("image_size", 0), int, "image_size", source),
            kind=_typed(kind, str, "kind", source),
            ships_as=_optional(values.get("ships_as"), str, "ships_as", source),
            init_from=_optional(values.get("init_from"), str, "init_from", source),
            nih_in_training=_typed(values.get("nih_in_training", False), bool, "nih_in_training", source),
            tta=_typed(values.get("tta", True), bool, "tta", source),
            base_config=_optional(values.get("base_config"), str, "base_config", source),
            data=tuple(_typed(d, str, "data", source) for d in data),
            folds=_optional(values.get("folds"), int, "folds", source),
            config=config,
            checkpoint=_optional(values.get("checkpoint"), str, "checkpoint", source),
            checkpoint_sha256=_optional(values.get("checkpoint_sha256"), str, "checkpoint_sha256", source),
            trained_on=tuple(_typed(d, str, "trained_on", source) for d in trained_on),
        )
    except TypeError as error:
        raise ConfigError(f"{source}: {error}") from error
    if experiment.kind not in KINDS:
        raise ConfigError(f"{source}: kind must be one of {', '.join(KINDS)}, got {experiment.kind!r}")
    if experiment.kind == "fixed":
        if not re.fullmatch(r"[0-9a-f]{64}", experiment.checkpoint_sha256 or ""):
            raise ConfigError(f"{source}: checkpoint_sha256 must be the file's 64 lower-case hex digits")
        _check_config(experiment, source)  # a registered family
        return experiment
    if experiment.checkpoint or experiment.checkpoint_sha256 or experiment.trained_on:
        raise ConfigError(f"{source}: checkpoint, checkpoint_sha256 and trained_on belong to kind: fixed")
    if experiment.epochs < 1 or experiment.image_size < 32:
        raise ConfigError(f"{source}: epochs must be >= 1 and image_size >= 32 px")
    if experiment.folds is not None and experiment.folds < 2:
        raise ConfigError(f"{source}: folds must be >= 2")
    _check_config(experiment, source)
    return experiment


def load_experiments(directory: str | Path, names: Sequence[str] | None = None) -> dict[str, Experiment]:
    """Every ``*.yaml`` of ``directory`` (sorted by name), or only ``names``; ``ConfigError`` for an unknown
    name, a bad file, or an ``init_from`` naming no pretrain experiment of the folder."""
    directory = Path(directory)
    every = {p.stem: p for p in sorted(directory.glob("*.yaml"))}
    if not every:
        raise ConfigError(f"no experiment files (*.yaml) in {directory}")
    missing = [n for n in names or () if n not in every]
    if missing:
        raise ConfigError(f"unknown experiment(s) {', '.join(missing)}; known: {', '.join(every)}")
    experiments = {name: load_experiment(path) for name, path in every.items()}
    for experiment in experiments.values():
        start = experiment.init_from
        if start and not _looks_like_path(start):
            target = experiments.get(start)
            if target is None or target.kind != "pretrain" or target.family != experiment.family:
                raise ConfigError(
                    f"{every[experiment.name]}: init_from {start!r} is neither a checkpoint path nor a pretrain "
                    f"experiment of family {experiment.family!r} in {directory}"
                )
    if names:
        wanted = set(names) | {experiments[n].init_from for n in names if experiments[n].init_from in experiments}
        experiments = {n: e for n, e in experiments.items() if n in wanted}
    return experiments


def _looks_like_path(value: str) -> bool:
    return "/" in value or value.endswith(".pt")


def _check_config(experiment: Experiment, source: str) -> None:
    """Resolve the config once without a base file, so unknown or ill-typed nested keys fail at load time."""
    from pneumo.config import apply_values
    from pneumo.training.config import default_config

    try:
        apply_values(default_config(experiment.family), dict(experiment.config))
    except (ConfigError, KeyError, ValueError, TypeError) as error:
        raise ConfigError(f"{source}: {error}") from error


def _typed(value: Any, kind: type, key: str, source: str) -> Any:
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
    return value


def _optional(value: Any, kind: type, key: str, source: str) -> Any:
    return None if value is None else _typed(value, kind, key, source)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
