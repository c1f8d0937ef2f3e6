"""`pneumo data summary|cache --data DIR`: describe a training folder; build its image cache."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="summarise a training data folder or build its image cache")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    summary = actions.add_parser("summary", help="patients, positives, boxes, views, classes, fold sizes")
    _common(summary)
    summary.add_argument("--folds", type=int, default=5, help="number of patient-level folds (default 5)")
    summary.add_argument("--seed", type=int, default=0, help="fold seed (default 0)")
    summary.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    summary.set_defaults(func=run_summary)

    cache = actions.add_parser("cache", help="decode + letterbox every image once into a memory-mapped cache")
    _common(cache)
    cache.add_argument("--image-size", type=int, default=256, help="square input size in px (default 256)")
    cache.add_argument("--cache-dir", help="cache root (default: $PNEUMO_CACHE_DIR, else ~/.cache/pneumo)")
    cache.add_argument("--workers", type=int, default=1, help="decoding processes (default 1)")
    cache.add_argument("--no-progress", action="store_true", help="no progress bar")
    cache.set_defaults(func=run_cache)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="Kaggle RSNA folder or NIH weak-label folder")
    parser.add_argument("--limit", type=int, help="only the first N images (sorted)")


def summarise(records: list, folds: int, seed: int) -> dict:
    """Counts for ``pneumo data summary`` (no patient identifiers)."""
    from pneumo.data.folds import assign_folds, fold_summary

    patients = {r.patient_id for r in records}
    result = {
        "images": len(records),
        "patients": len(patients),
        "positive_images": sum(int(r.target) for r in records),
        "boxes": sum(r.num_boxes for r in records),
        "positives_without_boxes": sum(1 for r in records if r.target and not r.num_boxes),
        "views": dict(sorted(Counter(r.view or "unknown" for r in records).items())),
        "classes": dict(sorted(Counter(r.klass or "unknown" for r in records).items())),
        "sexes": dict(sorted(Counter(r.sex or "unknown" for r in records).items())),
    }
    if folds and len(patients) >= folds:
        rows = fold_summary(records, assign_folds(records, folds, seed))
        result["folds"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
    return result


def run_summary(args: argparse.Namespace) -> int:
    from pneumo.data.sources import detect_layout, read_records

    layout = detect_layout(args.data)
    records = read_records(args.data, limit=args.limit)
    result = {"layout": layout, **summarise(records, args.folds, args.seed)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"layout: {layout}")
    for key in ("images", "patients", "positive_images", "boxes", "positives_without_boxes"):
        print(f"{key}: {result[key]}")
    for key in ("views", "classes", "sexes"):
        print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in result[key].items()))
    for row in result.get("folds", []):
        print(
            f"fold {row['fold']}: {row['patients']} patients, {row['images']} images, "
            f"{row['positives']} positive ({100 * row['positive_rate']:.1f}%)"
        )
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from pneumo.data.cache import IMAGES_FILE, ensure_cache
    from pneumo.data.sources import read_records

    records = read_records(args.data, limit=args.limit)
    start = time.perf_counter()
    cache = ensure_cache(
        records,
        args.image_size,
        data_dir=args.data,
        cache_dir=args.cache_dir,
        workers=args.workers,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    megabytes = (cache.directory / IMAGES_FILE).stat().st_size / 1e6
    print(f"cache: {cache.directory}")
    print(f"{len(cache)} images at {cache.size}px, {megabytes:.1f} MB, ready in {seconds:.1f} s")
    return 0
