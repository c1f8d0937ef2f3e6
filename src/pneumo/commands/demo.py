"""`pneumo demo` (what `make run` runs): the best thing pneumo can do with what is installed.

With trained models in the model folder it serves the web page and API (``pneumo serve`` with defaults,
plus the bundled samples' labels so their ground truth shows) and prints the URL. Without models it decodes the bundled sample radiographs, says what it read, and
explains how to get models; ``--once`` predicts on the samples with the available models and exits.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pneumo.commands.serve import add_server_arguments, settings_from_args

SAMPLE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="serve the shipped models (or, without any, decode the bundled samples)")
    add_server_arguments(parser)
    parser.add_argument("--once", action="store_true", help="predict on the bundled samples and exit, never serve")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.service import InferenceService

    service = InferenceService(model_dir=args.model_dir, backend=args.backend)
    models = list(service.available_models())
    where = args.model_dir or getattr(service, "model_dir", None) or "the model folder"
    if models and not args.once:
        from pneumo.api.server import run_server, url_for

        if args.labels is None:
            args.labels = sample_labels()  # ground truth for the bundled samples, shown in green
        print(f"pneumo demo: {len(models)} model(s) in {where}: {', '.join(m.name for m in models)}")
        print(f"pneumo demo: open {url_for(args.host, args.port)} in a browser. Decision support, not a diagnosis.")
        run_server(settings_from_args(args), host=args.host, port=args.port, log_level=args.log_level)
        return 0
    return predict_samples(service, models, where)


def sample_labels() -> Path | None:
    """The bundled samples' labels (Kaggle ``stage_2_train_labels.csv`` format), or None."""
    try:
        from pneumo.samples import sample_dir
    except ImportError:
        return None
    path = Path(sample_dir()) / "labels.csv"
    return path if path.is_file() else None


def sample_files() -> list[Path]:
    """The radiographs bundled with the package (``pneumo.samples.sample_dir()``), or [] if none ship."""
    try:
        from pneumo.samples import sample_dir
    except ImportError:
        return []
    folder = Path(sample_dir())
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)


def predict_samples(service: Any, models: list[Any], where: object) -> int:
    """Decode each bundled sample and, when a model is available, predict with the default one."""
    from pneumo import DISCLAIMER
    from pneumo.errors import PneumoError

    names = [m.name for m in models]
    model = "ensemble" if "ensemble" in names else (names[0] if names else None)
    if model is None:
        print(f"pneumo demo: no trained models in {where} yet, so nothing to serve.")
        print("  Train them with `pneumo train ...` (or copy shipped checkpoints into models/), then `make run`")
        print("  starts the web page. Meanwhile, here is what pneumo reads from the bundled samples:")
    files = sample_files()
    if not files:
        print("pneumo demo: no bundled sample images found in this installation.")
        return 0 if model is None else 1
    failures = 0
    for path in files:
        try:
            xray = service.read(path)  # decode + the chest-radiograph content check
        except PneumoError as error:
            failures += 1
            print(f"  {path.name}: {type(error).__name__}: {error}")
            continue
        line = (
            f"  {path.name}: {xray.source_format}, {xray.width}x{xray.height} px, "
            f"{xray.bits_stored}-bit {xray.photometric_interpretation}"
        )
        if xray.warnings:
            line += f"; warnings: {'; '.join(xray.warnings)}"
        print(line)
        if model is not None:
            try:
                prediction = service.predict(xray, model)
            except PneumoError as error:
                failures += 1
                print(f"    {model}: {type(error).__name__}: {error}")
                continue
            print(
                f"    {prediction.model} {prediction.model_version}: pneumonia probability "
                f"{prediction.probability * 100:.1f} %, {len(prediction.boxes)} box(es)"
            )
    if model is not None:
        print(f"  {DISCLAIMER}")
    return 1 if failures else 0
