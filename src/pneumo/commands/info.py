"""`pneumo info FILE...`: decode images and print what pneumo reads from them (no patient identifiers)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="decode DICOM/PNG/JPEG files and describe them")
    parser.add_argument("files", nargs="+", help="image files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.errors import PneumoError
    from pneumo.io import read_xray

    failures = 0
    for path in args.files:
        try:
            xray = read_xray(path)
        except PneumoError as error:
            failures += 1
            print(f"{path}: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        summary = {
            "file": path,
            "format": xray.source_format,
            "size_hw": list(xray.stored_size),  # as stored (very large images are reduced on read)
            "photometric_interpretation": xray.photometric_interpretation,
            "bits_stored": xray.bits_stored,
            "modality": xray.modality,
            "view_position": xray.view_position,
            "pixel_spacing_mm": xray.pixel_spacing_mm,
            "transfer_syntax": xray.transfer_syntax,
            "pixel_mean": round(float(xray.pixels.mean()), 4),
            "warnings": list(xray.warnings),
        }
        print(json.dumps(summary))
    return 1 if failures else 0
