"""`pneumo export --model MODEL [MODEL...] --format onnx [--output PATH]`: checkpoints -> ONNX files.

MODEL is a shipped name (``unet``, ``maskrcnn``, ``chexnet``: ``<model dir>/<name>.pt``; ``ensemble``: every
checkpoint member of ``ensemble.json``) or a checkpoint path. Each export is written beside its checkpoint as
``<stem>.onnx`` (or at ``--output`` for a single checkpoint), carries the checkpoint's settings and sha256
(``pneumo.export.metadata``) and is checked against PyTorch before it is kept.

Exit codes: 0 all exported; 2 an error (nothing written for the model that failed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FORMATS = ("onnx",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export checkpoints to ONNX for the faster ONNX Runtime backend",
        description="Export checkpoints to ONNX (self-describing: preprocessing, thresholds, family and the source "
        "checkpoint's sha256 are embedded; the service refuses an export whose checkpoint changed since).",
    )
    parser.add_argument("--model", nargs="+", required=True, metavar="MODEL",
                        help="unet, maskrcnn, chexnet, ensemble (its checkpoint members) or checkpoint paths")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="export format (default: onnx)")
    parser.add_argument("--output", "-o", default=None, metavar="PATH",
                        help="output file for a single checkpoint (default: <checkpoint stem>.onnx beside it)")
    parser.add_argument("--model-dir", default=None, metavar="DIR",
                        help="folder of shipped models (default: $PNEUMO_MODEL_DIR, else the repo's models/)")
    parser.add_argument("--no-verify", action="store_true", help="skip the torch-vs-ONNX check after export")
    parser.set_defaults(func=run)


def checkpoints_for(models: list[str], model_dir: str | None) -> list[Path]:
    """Model names/paths -> checkpoint paths (an ensemble spec expands to its checkpoint members), deduplicated."""
    from pneumo.errors import ConfigError
    from pneumo.service import InferenceService

    service = InferenceService(model_dir, backend="torch")
    found: list[Path] = []
    for model in models:
        _, path = service.resolve(model)
        if path.suffix.lower() == ".json":
            from pneumo.ensemble import EnsembleSpec

            try:
                spec = EnsembleSpec.load(path)
            except ConfigError as error:
                raise ConfigError(f"{path} is not an ensemble spec of checkpoints, nothing to export ({error})") from None
            members = [service.resolve(key, spec.base_dir)[1] for key in spec.model_keys]
            found.extend(p for p in members if p.suffix.lower() != ".json")
        else:
            found.append(path)
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def run(args: argparse.Namespace) -> int:
    from pneumo.errors import ConfigError
    from pneumo.export.exporter import export_checkpoint

    paths = checkpoints_for(args.model, args.model_dir)
    if args.output is not None and len(paths) != 1:
        raise ConfigError(f"--output names one file, but {len(paths)} checkpoints were selected; leave it out")
    for path in paths:
        report = export_checkpoint(path, args.output, verify=not args.no_verify)
        check = ", ".join(f"{k} {v:.1e}" for k, v in report.max_abs_diff.items()) or "not verified"
        print(f"pneumo export: {path.name} ({report.family}) -> {report.path} "
              f"({report.size_bytes / 1e6:.1f} MB, {report.seconds:.1f} s; max |torch - onnx|: {check})", file=sys.stderr)
    return 0
