"""`pneumo models STAGE... --data DIR...`: cross-validate, compare, retrain and ship the model families.

Stages: pretrain, cv, report, final, ship (``pneumo.pipeline.stages``); experiments are the files of
``configs/experiments/`` (``pneumo.training.experiments``). Every stage is resumable: run the same command again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumo.pipeline.stages import STAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="cross-validate the experiments, choose, retrain on all data and ship models/ (make models)",
        description=(
            "Patient-level k-fold CV of every experiment in --experiments-dir over the merged RSNA --data folders, "
            "out-of-fold outputs from each fold's last epoch, cross-fitted figures and ensemble tuning (report), "
            "the chosen experiments retrained on all patients (final) and shipped as fp16 checkpoints with model "
            "cards (ship). Finished runs are skipped; an interrupted one is trained again. Decision support, "
            "not diagnosis."
        ),
    )
    parser.add_argument("stages", nargs="*", default=list(STAGES), metavar="STAGE",
                        help=f"stages to run, in order (default: {' '.join(STAGES)})")
    parser.add_argument("--data", nargs="+", type=Path, default=None, metavar="DIR",
                        help="RSNA Kaggle-layout folder(s), merged (default: the experiments' `data`)")
    parser.add_argument("--nih", type=Path, default=None, metavar="DIR", help="NIH weak-label folder (pretraining)")
    parser.add_argument("--folds", type=int, default=None, metavar="K", help="k of the patient-level CV (default: "
                        "the experiments' `folds`, else 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/models"), metavar="WORK", help="work folder")
    parser.add_argument("--models", type=Path, default=Path("models"), metavar="DIR", help="where ship writes")
    parser.add_argument("--docs", type=Path, default=None, metavar="FILE",
                        help="docs page to rewrite on ship (e.g. docs/models.md; default: none)")
    parser.add_argument("--experiments", nargs="+", default=None, metavar="NAME", help="only these experiments")
    parser.add_argument("--experiments-dir", type=Path, default=Path("configs/experiments"), metavar="DIR")
    parser.add_argument("--root", type=Path, default=Path("."), metavar="DIR",
                        help="folder that relative base configs (configs/<family>.yaml) are read from")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache (default: $PNEUMO_CACHE_DIR or ~/.cache)")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every experiment's epochs (smoke runs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.pipeline.cv import Pipeline, PipelineSettings
    from pneumo.pipeline.stages import run_stages
    from pneumo.training.experiments import load_experiments

    experiments = load_experiments(args.experiments_dir, args.experiments)
    cv = [e for e in experiments.values() if e.kind == "cv"]
    pretrain_data = _shared([e for e in experiments.values() if e.kind == "pretrain"], "data", ())
    settings = PipelineSettings(
        root=args.root, work=args.out, data=tuple(args.data or _shared(cv, "data", ())),
        folds=args.folds or _shared(cv, "folds", None) or 3, nih=args.nih or (pretrain_data[0] if pretrain_data else None), models=args.models, docs=args.docs,
        split_seed=args.split_seed, seed=args.seed, threads=args.threads, cache_dir=args.cache_dir,
        epochs_scale=args.epochs_scale)
    run_stages(Pipeline(settings, experiments), args.stages)
    return 0


def _shared(experiments: list, key: str, default: object) -> object:
    """The one value of ``key`` the experiments that set it agree on (``ConfigError`` if they differ)."""
    from pneumo.errors import ConfigError

    values = {tuple(v) if isinstance(v, (list, tuple)) else v for e in experiments if (v := getattr(e, key))}
    if len(values) > 1:
        raise ConfigError(f"the experiments set different `{key}` ({sorted(map(str, values))}); "
                          f"pass --{key} or run them separately (--experiments)")
    value = values.pop() if values else default
    return tuple(Path(p) for p in value) if key == "data" and value else value
