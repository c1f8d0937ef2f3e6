"""`pneumo train FAMILY --data DIR --out RUN_DIR`: train a model family on a Kaggle-layout RSNA folder.

Runs single-process, or data-parallel when launched with ``torchrun --nproc_per_node N -m pneumo train ...``.
Ctrl-C saves a resumable state; the same command with ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model family (unet, maskrcnn, chexnet) on an RSNA Kaggle-layout (or NIH weak-label) folder",
        description=(
            "Train FAMILY on the RSNA Pneumonia Detection Challenge layout in --data (patient-level split: "
            "train on folds != val_fold, validate on val_fold). Writes RUN_DIR/config.yaml, best.pt, last.pt, "
            "last.state.pt, history.csv, loss_curve.png, train_summary.json. Settings: dataclass defaults <- "
            "--config FILE (e.g. configs/unet.yaml) <- --set key=value <- --epochs/--image-size/--limit."
        ),
    )
    parser.add_argument("family", help="model family: unet, maskrcnn or chexnet")
    parser.add_argument("--data", required=True, metavar="DIR", help="Kaggle RSNA layout (stage_2_train_images/, stage_2_train_labels.csv) or NIH layout (images/, labels.csv)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create (or to resume)")
    parser.add_argument("--epochs", type=int, default=None, metavar="N", help="number of epochs")
    parser.add_argument("--image-size", type=int, default=None, metavar="PX", help="square model-input size in pixels")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N patients (smoke runs)")
    parser.add_argument("--init-from", default=None, metavar="CKPT",
                        help="start from this checkpoint's weights (same family; e.g. pretrained on nih-weak)")
    parser.add_argument("--config", default=None, metavar="FILE", help="YAML file of TrainConfig values")
    parser.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
        help="override a setting, dotted for nested ones (e.g. lr=1e-4 model.encoder=resnet34 early_stopping.patience=3)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in RUN_DIR with its saved config")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress bars")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.data.sources import read_records
    from pneumo.errors import ConfigError
    from pneumo.training import distributed
    from pneumo.training.config import resolve_train_config
    from pneumo.training.data_setup import split
    from pneumo.training.loop import fit, load_run_config

    if args.resume:
        changed = [flag for flag, value in (("--config", args.config), ("--set", args.overrides), ("--epochs", args.epochs),
                   ("--image-size", args.image_size), ("--limit", args.limit)) if value]
        if changed:
            raise ConfigError(
                f"--resume continues with RUN_DIR/config.yaml; drop {', '.join(changed)} (settings cannot change mid-run)"
            )
        config = load_run_config(args.out, args.family)
    else:
        flags = {"epochs": args.epochs, "image_size": args.image_size, "limit": args.limit, "init_from": args.init_from}
        config = resolve_train_config(args.family, args.config, args.overrides, flags)
    main_rank = distributed.detect().is_main
    records = read_records(args.data, limit=config.limit)
    train, val = split(records, config)  # patient-level: folds != val_fold train, val_fold validates
    result = fit(
        args.family,
        None if args.resume else config,
        train,
        val,
        args.out,
        data_dir=args.data,
        resume=args.resume,
        progress=args.progress,
    )
    if not main_rank:
        return 130 if result.interrupted else 0
    if result.interrupted:
        command = ["pneumo", "train", args.family, "--data", str(args.data), "--out", str(args.out), "--resume"]
        world = distributed.detect().world_size
        prefix = f"torchrun --nproc_per_node {world} -m " if world > 1 else ""
        print(f"pneumo: training interrupted; resume with:\n  {prefix}{shlex.join(command)}", file=sys.stderr)
        return 130
    best = result.best_metrics
    print(
        f"trained {args.family}: best epoch {result.best_epoch} of {result.epoch}"
        + (" (stopped early)" if result.stopped_early else "")
        + f"; val mAP {best.get('val_map', float('nan')):.4f}, AUC {best.get('val_auc', float('nan')):.4f}; "
        f"thresholds {result.thresholds}; checkpoints in {args.out}"
    )
    return 0
