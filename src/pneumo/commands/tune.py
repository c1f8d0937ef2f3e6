"""`pneumo tune`: re-choose a model's operating point on a validation fold and store it with the model.

* ``pneumo tune --model CHECKPOINT --data DIR [--fold K]``: box confidence threshold, image gate and
  probability threshold (``pneumo.training.thresholds.tune_thresholds``) are written back into the checkpoint
  (atomically; the file and so the model version change; weights do not).
* ``pneumo tune --ensemble SPEC --data DIR [--fold K]``: the ensemble's fusion values
  (``pneumo.training.ensemble_tuning.tune_ensemble``) are written back into the spec.

The fold is the same patient-level split training used (k, seed and limit recorded in the checkpoint; an
ensemble uses its first member that records one); ``--fold`` defaults to the fold training validated on.
Prints one JSON object with the choice. Exit 0, or 3 when some images could not be read (they are skipped).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="re-tune a checkpoint's thresholds or an ensemble's fusion on a validation fold",
        description="Choose operating thresholds (checkpoint) or fusion values (ensemble spec) that maximise the "
        "RSNA mAP on a validation fold, write them back (atomically) and print the choice as JSON.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", metavar="CHECKPOINT", help="checkpoint path or shipped name (unet, maskrcnn, chexnet)")
    target.add_argument("--ensemble", metavar="SPEC", help="ensemble spec (.json) path, or 'ensemble'")
    parser.add_argument("--data", required=True, metavar="DIR", help="Kaggle-layout folder (stage_2_train_*)")
    parser.add_argument("--fold", type=int, default=None, metavar="K",
                        help="validation fold (default: the one training validated on; all images if none recorded)")
    parser.add_argument("--folds", type=int, default=None, metavar="N", help="override the number of folds")
    parser.add_argument("--split-seed", type=int, default=None, metavar="S", help="override the fold seed")
    parser.add_argument("--model-dir", default=None, metavar="DIR", help="folder of shipped models")
    parser.add_argument("--tta", action="store_true", help="checkpoint: tune on flip-TTA outputs")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="decoding threads (0 = inline)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="torch threads")
    parser.add_argument("--dry-run", action="store_true", help="print the choice, change no file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _note(message: str) -> None:
    print(f"pneumo tune: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from pneumo.files import to_jsonable
    from pneumo.inference.batch import torch_threads_for
    from pneumo.service import InferenceService

    # torch backend: the checkpoint is re-saved from the loaded PyTorch model
    service = InferenceService(args.model_dir, backend="torch",
                               num_threads=torch_threads_for(args.workers, args.threads))
    if args.model is not None:
        result, failures = _tune_checkpoint(service, args)
    else:
        result, failures = _tune_ensemble(service, args)
    print(json.dumps(to_jsonable(result), allow_nan=False))
    return 3 if failures else 0


def _selection(args: argparse.Namespace, meta_sources: list[dict]):
    from pneumo.inference.selection import resolve_split, select_records, split_from_meta

    recorded = next((s for s in (split_from_meta(m) for m in meta_sources) if s is not None), None)
    split = resolve_split(recorded, args.folds, args.split_seed)
    fold = args.fold if args.fold is not None else split.val_fold
    if fold is None:
        _note("no validation fold given or recorded: tuning on every image of --data (pass --fold K to hold one out)")
    elif recorded is None and args.fold is not None:
        _note(f"the model records no split: fold {fold} of k={split.folds}, seed={split.split_seed} "
              "(pass --folds/--split-seed to match training)")
    return select_records(args.data, fold, split)


def _collect(records, infer, args: argparse.Namespace) -> tuple[list, list, int]:
    """Run ``infer`` over the records' images -> (results, ground truths, number of failed images)."""
    from pneumo.inference.batch import describe_error, run_files

    by_path = {Path(r.path): r for r in records}
    failures = 0

    def on_error(path: Path, error: BaseException) -> None:
        nonlocal failures
        failures += 1
        _note(f"skipped {path}: {describe_error(error)}")

    results, gts = [], []
    for path, _, result in run_files(list(by_path), infer, batch_size=args.batch_size, workers=args.workers,
                                     on_error=on_error, progress=False if args.no_progress else None,
                                     description="validation"):
        results.append(result)
        gts.append(by_path[path].boxes)
    if not results:
        from pneumo.errors import DataLayoutError

        raise DataLayoutError(f"no validation image of {args.data} could be read")
    return results, gts, failures


def _tune_checkpoint(service, args: argparse.Namespace) -> tuple[dict, int]:
    from pneumo.errors import ConfigError
    from pneumo.files import file_sha256
    from pneumo.inference.predictors import CheckpointPredictor
    from pneumo.models.checkpoint import save_checkpoint
    from pneumo.training.thresholds import operating_thresholds, tune_thresholds
    from pneumo.types import THRESHOLD_ALIASES

    predictor = service.predictor(args.model)
    if not isinstance(predictor, CheckpointPredictor):
        raise ConfigError(f"--model {args.model} is not a checkpoint; use --ensemble for an ensemble spec")
    selection = _selection(args, [predictor.meta])
    outputs, gts, failures = _collect(
        selection.selected, lambda xs: predictor.outputs(xs, tta=args.tta, heatmap=False)[0], args)
    tuned = tune_thresholds([(o.probability, o.boxes()) for o in outputs], gts)
    chosen = operating_thresholds(tuned).to_dict()
    path = predictor.info.path
    before_sha = predictor.sha256
    result = {
        "model": predictor.info.name, "path": str(path), **selection.describe(), "n_failed": failures,
        "tta": bool(args.tta), "thresholds_before": predictor.thresholds.to_dict(), "thresholds": chosen,
        "validation": {k: v for k, v in tuned.items() if k not in chosen}, "sha256_before": before_sha,
        "written": not args.dry_run,
    }
    if not args.dry_run:
        thresholds = {k: v for k, v in predictor.raw_thresholds.items() if k not in THRESHOLD_ALIASES}
        thresholds.update(chosen)
        metrics = dict(predictor.info.metrics)
        metrics["threshold_tuning"] = {**selection.describe(), "tta": bool(args.tta), **tuned}
        meta = predictor.meta
        save_checkpoint(
            path, predictor.model, config=predictor.config, preprocess=predictor.preprocessor.to_dict(),
            thresholds=thresholds, metrics=metrics, data_fingerprint=str(meta.get("data_fingerprint", "")),
            extra=meta.get("extra") or {}, half=meta.get("dtype") == "float16",
        )
        result["sha256"] = file_sha256(path)
        _note(f"wrote thresholds {chosen} into {path}")
    return result, failures


def _tune_ensemble(service, args: argparse.Namespace) -> tuple[dict, int]:
    from pneumo.errors import ConfigError
    from pneumo.inference.predictors import CheckpointPredictor, EnsemblePredictor
    from pneumo.training.ensemble_tuning import tune_ensemble

    predictor = service.predictor(args.ensemble)
    if not isinstance(predictor, EnsemblePredictor):
        raise ConfigError(f"--ensemble {args.ensemble} is not an ensemble spec")
    metas = [m.meta for m in predictor.members.values() if isinstance(m, CheckpointPredictor)]
    selection = _selection(args, metas)
    spec = predictor.spec

    def infer(xrays):
        outputs, _ = predictor.member_outputs(xrays, tta=spec.fusion.tta_flip, heatmap=False)
        return [{key: values[i] for key, values in outputs.items()} for i in range(len(xrays))]

    per_image, gts, failures = _collect(selection.selected, infer, args)
    member_outputs = {key: [o[key] for o in per_image] for key in spec.model_keys}
    tuned = tune_ensemble(spec, member_outputs, gts, context={**selection.describe(), "n_failed": failures})
    result = {
        "model": predictor.info.name, "path": str(predictor.info.path), **selection.describe(),
        "n_failed": failures, "fusion_before": spec.to_dict()["fusion"], "fusion": tuned.to_dict()["fusion"],
        "tuning": tuned.tuning, "written": not args.dry_run,
    }
    if not args.dry_run:
        tuned.save(predictor.info.path)
        _note(f"wrote the tuned fusion into {predictor.info.path}")
    return result, failures
