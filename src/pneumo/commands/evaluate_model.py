"""The ``--model`` mode of ``pneumo evaluate``: run a model over a Kaggle-layout folder (optionally one fold of
the training split), then score it with ``pneumo.evaluation.scoring.evaluate_predictions`` - the same scoring
and HTML report as ``pneumo evaluate --predictions``.

``--model baseline`` with no fitted ``baseline.json`` in the model folder fits the trivial baseline
(``pneumo.inference.baseline``) on the other folds (on every image without ``--fold``: in-sample, said so on
stderr) and evaluates it through the same service path. Importing this module is cheap (argparse only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pneumo.commands.backendopts import add_backend_arguments


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the model mode (``--report``, ``--threshold`` and ``--bootstrap`` are shared)."""
    group = parser.add_argument_group("model mode (predict, then score): --model MODEL --data DIR")
    group.add_argument("--model", default=None, metavar="MODEL",
                       help="unet, maskrcnn, chexnet, ensemble, baseline or a checkpoint/spec path")
    group.add_argument("--data", default=None, metavar="DIR", help="Kaggle-layout folder (stage_2_train_*)")
    group.add_argument("--fold", type=int, default=None, metavar="K",
                       help="only fold K of the training split (k, seed from the checkpoint); default: all images")
    group.add_argument("--folds", type=int, default=None, metavar="N", help="override the number of folds")
    group.add_argument("--split-seed", type=int, default=None, metavar="S", help="override the fold seed")
    group.add_argument("--model-dir", default=None, metavar="DIR", help="folder of shipped models")
    add_backend_arguments(group)
    group.add_argument("--output", default=None, metavar="FILE.jsonl",
                       help="also save the predictions (.jsonl or .csv; default with --report: DIR/predictions.jsonl)")
    group.add_argument("--tta", action="store_true", default=None, help="horizontal-flip test-time augmentation")
    group.add_argument("--batch-size", type=int, default=4, metavar="N")
    group.add_argument("--workers", type=int, default=1, metavar="N", help="decoding threads (0 = inline)")
    group.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def _note(message: str) -> None:
    print(f"pneumo evaluate: {message}", file=sys.stderr)


def _fit_baseline(selection, out_dir: Path) -> Path:
    from pneumo.inference.baseline import fit_baseline
    from pneumo.io.header import image_size

    train = selection.others or selection.selected
    if not selection.others:
        _note("baseline fitted on the evaluated images themselves (no --fold): an optimistic, in-sample baseline")
    spec = fit_baseline([r.boxes for r in train], [image_size(Path(r.path)) for r in train])
    return spec.save(out_dir / "baseline.json")


def run_model(args: argparse.Namespace) -> int:
    """``pneumo evaluate --model MODEL --data DIR [--fold K] [--report DIR]`` -> exit code (0, or 3 when some
    images failed to read and were scored as having no prediction)."""
    import tempfile

    from pneumo.errors import ConfigError
    from pneumo.files import to_jsonable
    from pneumo.evaluation.scoring import evaluate_predictions
    from pneumo.inference.batch import describe_error, run_files, write_predictions
    from pneumo.inference.predictors import EnsemblePredictor
    from pneumo.inference.selection import resolve_split, select_records, split_from_meta
    from pneumo.outputs import boxes_from_prediction
    from pneumo.inference.batch import torch_threads_for
    from pneumo.service import InferenceService

    if args.data is None:
        raise ConfigError("--model needs --data DIR (a Kaggle-layout folder with labels)")
    if args.predictions is not None or args.labels is not None:
        raise ConfigError("use either --predictions/--labels or --model/--data, not both")
    if args.batch_size < 1 or args.workers < 0:
        raise ConfigError("--batch-size must be >= 1 and --workers >= 0")
    service = InferenceService(args.model_dir, backend=args.backend,
                               num_threads=torch_threads_for(args.workers, args.threads))

    model: str | Path = args.model
    fit_baseline_here = model == "baseline" and "baseline" not in service.installed_names()
    metas: list[dict] = []
    if not fit_baseline_here:
        predictor = service.predictor(model)
        if isinstance(predictor, EnsemblePredictor):
            metas = [m.meta for m in predictor.members.values() if isinstance(getattr(m, "meta", None), dict)]
        elif isinstance(getattr(predictor, "meta", None), dict):
            metas = [predictor.meta]
    split = resolve_split(next((s for s in map(split_from_meta, metas) if s is not None), None),
                          args.folds, args.split_seed)
    if args.fold is not None and split.source == "defaults":
        _note(f"the model records no split: fold {args.fold} of k={split.folds}, seed={split.split_seed}")
    if args.fold is None and split.source != "defaults":
        _note("no --fold: scoring every image, including those the model was trained on (optimistic)")
    selection = select_records(args.data, args.fold, split)
    if not selection.selected:
        raise ConfigError(f"no images selected from {args.data}")

    with tempfile.TemporaryDirectory(prefix="pneumo-baseline-") as scratch:
        if fit_baseline_here:
            model = _fit_baseline(selection, Path(args.report) if args.report else Path(scratch))
        predictor = service.predictor(model)
        info = predictor.info
        by_path = {Path(r.path): r for r in selection.selected}
        failures = 0

        def on_error(path: Path, error: BaseException) -> None:
            nonlocal failures
            failures += 1
            _note(f"skipped {path}: {describe_error(error)}")

        predictions = {}
        for path, _, prediction in run_files(
            list(by_path), lambda xs: service.predict_batch(xs, model, heatmap=False, tta=args.tta),
            batch_size=args.batch_size, workers=args.workers, on_error=on_error,
            progress=False if args.no_progress else None, description=f"evaluate {info.name}",
        ):
            predictions[by_path[path].image_id] = prediction

    output = args.output or (str(Path(args.report) / "predictions.jsonl") if args.report else None)
    if output and predictions:
        write_predictions(Path(output), sorted(predictions.items()))
    threshold = args.threshold if args.threshold is not None else predictor.thresholds.probability
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must lie in [0, 1], got {threshold}")
    paths = {r.image_id: Path(r.path) for r in selection.selected}

    def load_pixels(image_id: str):
        from pneumo.io import read_xray

        return read_xray(paths[image_id]).pixels

    summary = evaluate_predictions(
        {k: boxes_from_prediction(p) for k, p in predictions.items()},
        {r.image_id: r.boxes for r in selection.selected},
        probs={k: p.probability for k, p in predictions.items()},
        threshold=threshold,
        report_dir=args.report,
        threshold_source="argument" if args.threshold is not None else "model",
        image_loader=load_pixels if args.report else None,
        model_name=f"{info.name} ({info.version})",
        n_boot=max(0, args.bootstrap),
    )
    summary = {"model": info.name, "model_version": info.version, **selection.describe(), "n_failed": failures,
               "predictions_file": output, **summary}
    print(json.dumps(to_jsonable(summary), allow_nan=False))
    return 3 if failures else 0
