"""`pneumo console`: the interactive menu (ResNet / Mask R-CNN / CheXNet / metrics / ensemble)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("console", help="interactive menu: predict for a patient id, plot model metrics")
    parser.add_argument("--images", type=Path, required=True, help="folder searched (recursively) for <patientId>.dcm")
    parser.add_argument("--labels", type=Path, default=None, help="RSNA stage_2_train_labels.csv (prints ground truth)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="checkpoints folder (default: $PNEUMO_MODEL_DIR or the repository's models/)")
    parser.add_argument("--out", type=Path, default=Path("out/console"), help="where overlays and plots are written")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.console import Console
    from pneumo.errors import DataLayoutError
    from pneumo.service import InferenceService

    if not args.images.is_dir():
        raise DataLayoutError(f"--images {args.images} is not a folder")
    labels = None
    if args.labels is not None:
        from pneumo.data.rsna import read_rsna_labels

        labels = read_rsna_labels(args.labels)
    service = InferenceService(model_dir=args.model_dir)
    return Console(service, args.images, args.out, labels=labels, model_dir=args.model_dir).run()
