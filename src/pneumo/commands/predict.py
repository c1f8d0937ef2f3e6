"""`pneumo predict --model MODEL INPUT... --output FILE`: run a model over DICOM/PNG/JPEG files and folders.

Output by extension: ``.csv`` = Kaggle submission (``patientId,PredictionString``; one row per image,
patientId = file stem, ``conf x y width height`` repeated in original pixels, empty for no box) or ``.jsonl``
(one object per image: patientId, probability, boxes [{x, y, width, height, confidence}], model,
model_version, threshold, image size, disclaimer). ``--dicom-out DIR`` also writes, per DICOM input, a TID 1500
SR, a secondary capture and a presentation state (``pneumo.dicom_out``) as ``DIR/<SOPInstanceUID>.dcm``; a
PNG/JPEG input gets a message that DICOM output needs a DICOM input (and counts as a failure, exit 3). The file is written atomically at the end: an interrupted
run leaves no partial file (and an existing file untouched).

Exit codes: 0 every input predicted; 3 some inputs failed (each reported on stderr, skipped, the rest
written); 2 nothing usable (no readable input, or a model/argument error; no file written).
Outputs are decision support, not a diagnosis.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pneumo.commands.backendopts import add_backend_arguments

EXIT_OK, EXIT_NOTHING, EXIT_PARTIAL = 0, 2, 3
OUTPUT_SUFFIXES = (".csv", ".jsonl")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict pneumonia probability and opacity boxes for images (decision support)",
        description="Run a model over DICOM/PNG/JPEG files and folders (searched recursively) and write a Kaggle "
        "submission .csv or a .jsonl file. Exit 0 = all predicted, 3 = some inputs failed and were skipped "
        "(see stderr), 2 = nothing usable. Decision support, not a diagnosis.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    parser.add_argument("--model", default="ensemble",
                        help="unet, maskrcnn, chexnet, ensemble, baseline, or a checkpoint/spec path (default: ensemble)")
    parser.add_argument("--output", "-o", required=True, metavar="FILE", help="output file: .csv or .jsonl")
    parser.add_argument("--model-dir", default=None, metavar="DIR",
                        help="folder of shipped models (default: $PNEUMO_MODEL_DIR, else the repo's models/)")
    add_backend_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="images per model call (default 1)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="threads decoding images ahead of the model (0 = decode inline; default 1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads (default: $PNEUMO_TORCH_THREADS, else the CPUs not used by --workers)")
    parser.add_argument("--tta", action="store_true", default=None,
                        help="horizontal-flip test-time augmentation (ensembles: default from their spec)")
    parser.add_argument("--overlays", default=None, metavar="DIR", help="also write one overlay PNG per image here")
    parser.add_argument("--dicom-out", default=None, metavar="DIR",
                        help="also write DICOM results per DICOM input here: SR (TID 1500), secondary capture and "
                        "presentation state, each as <SOPInstanceUID>.dcm")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _error(message: str) -> None:
    print(f"pneumo predict: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from pneumo.errors import ConfigError
    from pneumo.inference.batch import describe_error, run_files, write_predictions
    from pneumo.inference.sources import discover_inputs
    from pneumo.inference.batch import torch_threads_for
    from pneumo.service import InferenceService

    output = Path(args.output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output must end in .csv (Kaggle submission) or .jsonl, got {output.name!r}")
    if args.batch_size < 1 or args.workers < 0:
        raise ConfigError("--batch-size must be >= 1 and --workers >= 0")

    files, problems = discover_inputs(args.inputs)
    failures = len(problems)
    for problem in problems:
        _error(f"skipped {problem.path}: {problem.reason}")
    ids: dict[Path, str] = {}
    seen: set[str] = set()
    unique = []
    for path in files:
        if path.stem in seen:
            failures += 1
            _error(f"skipped {path}: another input has the same file name stem (patientId {path.stem!r} twice)")
            continue
        seen.add(path.stem)
        ids[path] = path.stem
        unique.append(path)
    if not unique:
        _error("no readable input images; nothing written")
        return EXIT_NOTHING

    service = InferenceService(args.model_dir, backend=args.backend,
                               num_threads=torch_threads_for(args.workers, args.threads))
    info = service.load(args.model)  # model errors surface now, before any decoding
    want_heatmap = args.overlays is not None

    def on_error(path: Path, error: BaseException) -> None:
        nonlocal failures
        failures += 1
        _error(f"skipped {path}: {describe_error(error)}")

    results = []
    for path, xray, prediction in run_files(
        unique, lambda xs: service.predict_batch(xs, args.model, heatmap=want_heatmap, tta=args.tta),
        batch_size=args.batch_size, workers=args.workers, on_error=on_error,
        progress=False if args.no_progress else None, description=f"predict {info.name}",
        decode=service.read,  # decode + the chest-radiograph content check, once per input
    ):
        if args.dicom_out is not None and not _write_dicom(Path(args.dicom_out), path, xray, prediction):
            failures += 1
        if args.overlays is not None:
            _write_overlay(Path(args.overlays) / f"{ids[path]}.png", xray, prediction)
            prediction = dataclasses.replace(prediction, heatmap=None)  # keep memory flat on large runs
        results.append((ids[path], prediction))

    if not results:
        _error("no input could be predicted; nothing written")
        return EXIT_NOTHING
    write_predictions(output, results)
    print(f"pneumo predict: {len(results)} image(s) -> {output} ({info.name} {info.version})"
          + (f"; {failures} input(s) failed, see above" if failures else ""), file=sys.stderr)
    return EXIT_PARTIAL if failures else EXIT_OK


def _write_dicom(folder: Path, path: Path, xray, prediction) -> bool:
    """Write the SR, secondary capture and presentation state of one input; False (reported) when impossible."""
    from pneumo.dicom_out import build_results, read_source_header, write_results
    from pneumo.errors import PneumoError

    if xray.source_format != "dicom":
        _error(f"no DICOM output for {path}: DICOM output needs a DICOM input (this is {xray.source_format.upper()})")
        return False
    try:
        write_results(folder, build_results(read_source_header(path), xray.pixels, prediction))
    except PneumoError as error:
        _error(f"no DICOM output for {path}: {error}")
        return False
    return True


def _write_overlay(path: Path, xray, prediction) -> None:
    from pneumo.display import boxes_to_display, display_copy
    from pneumo.outputs import boxes_from_prediction, render_overlay, save_png

    shown = display_copy(xray.pixels)  # bounded: a huge input renders at most DISPLAY_MAX_PIXELS
    boxes = boxes_to_display(boxes_from_prediction(prediction), prediction.image_size, shown.shape)
    rgb = render_overlay(
        shown.astype("float32") / 255.0, pred_boxes=boxes, heatmap=prediction.heatmap,
        title=f"p = {prediction.probability:.2f}", model_name=f"{prediction.model} {prediction.model_version}",
    )
    save_png(path, rgb)
