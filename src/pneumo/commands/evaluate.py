"""`pneumo evaluate --predictions FILE --labels LABELS.csv`: score saved predictions with the RSNA mAP and
image-level metrics; prints one JSON object, optionally writes the HTML report (``--report DIR``).

A ``--model`` mode (predict first, then score) reuses ``evaluate_predictions`` unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register", "run", "evaluate_predictions"]


def __getattr__(name: str) -> Any:
    """``evaluate_predictions`` is re-exported lazily so that building the CLI parser stays cheap."""
    if name == "evaluate_predictions":
        from pneumo.evaluation.scoring import evaluate_predictions

        return evaluate_predictions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score predictions (submission .csv or .jsonl) against RSNA labels",
        description="Score predictions with the RSNA mAP (IoU 0.40-0.75) and image-level metrics. "
        "Prints one JSON object. Decision support evaluation, not a diagnosis.",
    )
    parser.add_argument("--predictions", default=None, metavar="FILE",  # required unless --model (below)
                        help="Kaggle submission .csv or pneumo .jsonl (boxes in original pixels)")
    parser.add_argument("--labels", default=None, metavar="LABELS.csv",  # required unless --model
                        help="Kaggle labels CSV: patientId,x,y,width,height,Target")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability threshold for sensitivity/specificity/PPV/NPV "
                        "(default: the threshold recorded in the file, else 0.5)")
    parser.add_argument("--report", metavar="DIR", default=None, help="also write index.html + plots here")
    parser.add_argument("--images", metavar="DIR", default=None,
                        help="folder of <patientId>.dcm images, to draw the worst misses in the report")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for 95%% intervals (0 disables; seeded)")
    # --- model mode (owned by the inference code): pneumo evaluate --model MODEL --data DIR [--fold K]
    from pneumo.commands.evaluate_model import add_model_arguments

    add_model_arguments(parser)
    parser.set_defaults(func=run)


def _image_loader(folder: str):
    from pathlib import Path

    from pneumo.errors import InvalidImageError

    root = Path(folder)

    def load(image_id: str):
        from pneumo.io import read_xray

        candidates = [root / f"{image_id}{suffix}" for suffix in (".dcm", ".png", ".jpg", ".jpeg")]
        for path in candidates:
            if path.is_file():
                return read_xray(path).pixels
        raise InvalidImageError("image file not found")

    return load


def run(args: argparse.Namespace) -> int:
    from pneumo.errors import ConfigError

    if getattr(args, "model", None) is not None:  # model mode: predict first, then the same scoring
        from pneumo.commands.evaluate_model import run_model

        return run_model(args)
    if args.predictions is None or args.labels is None:
        raise ConfigError("give --predictions FILE and --labels LABELS.csv, or --model MODEL and --data DIR")
    from pneumo.data.rsna import read_rsna_labels
    from pneumo.evaluation.scoring import evaluate_predictions
    from pneumo.outputs import read_predictions

    predictions = read_predictions(args.predictions)
    labels = read_rsna_labels(args.labels)
    if args.threshold is not None:
        threshold, source = args.threshold, "argument"
    elif predictions.threshold is not None:
        threshold, source = predictions.threshold, "file"
    else:
        threshold, source = 0.5, "default"
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must lie in [0, 1], got {threshold}")
    summary = evaluate_predictions(
        predictions.boxes,
        labels,
        probs=predictions.probabilities,
        threshold=threshold,
        report_dir=args.report,
        threshold_source=source,
        image_loader=_image_loader(args.images) if args.images and args.report else None,
        model_name=", ".join(predictions.models) or None,
        n_boot=max(0, args.bootstrap),
    )
    if summary["n_unlabelled"]:
        print(f"pneumo: {summary['n_unlabelled']} predicted image(s) have no labels and were excluded",
              file=sys.stderr)
    print(json.dumps(summary, allow_nan=False))
    return 0
