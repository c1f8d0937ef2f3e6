"""Refusal rates of the chest-radiograph content check (``pneumo.io.content``), written to stdout as JSON.

false refusals: every real radiograph in the shared data (rsna-mini, rsna-plus, nih-weak, dicom-samples);
true refusals: the generated corpus of ``pneumo.io.nonradiographs``. Also the check's time per image.
Usage: ``python bench/ood_rates.py [--data ../shared/data] [--per-category 30]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from pathlib import Path

from pneumo.errors import NotChestRadiographError
from pneumo.io import read_xray
from pneumo.io.content import check_radiograph_content
from pneumo.io.nonradiographs import corpus

REAL_SETS = {
    "rsna-mini": "rsna-mini/stage_2_train_images/*.dcm",
    "rsna-plus": "rsna-plus/stage_2_train_images/*.dcm",
    "nih-weak": "nih-weak/images/*.png",
    "dicom-samples": "dicom-samples/*.dcm",
}


def refused(xray) -> str | None:
    try:
        check_radiograph_content(xray)
    except NotChestRadiographError as error:
        return str(error)
    return None


def real_rates(data: Path) -> dict:
    out, seconds, n = {}, 0.0, 0
    for name, pattern in REAL_SETS.items():
        paths = sorted(data.glob(pattern))
        wrong = []
        for path in paths:
            xray = read_xray(path)
            start = time.perf_counter()
            reason = refused(xray)
            seconds += time.perf_counter() - start
            n += 1
            if reason:
                wrong.append({"file": path.name, "reason": reason})
        out[name] = {"images": len(paths), "refused": len(wrong), "examples": wrong[:5]}
    return {"sets": out, "check_ms_per_image": 1000 * seconds / max(n, 1)}


def corpus_rates(per_category: int) -> dict:
    total, caught = collections.Counter(), collections.Counter()
    missed = []
    for sample in corpus(per_category):
        total[sample.category] += 1
        try:
            xray = read_xray(sample.data)
        except Exception as error:  # noqa: BLE001 - a reader refusal counts as refused, with its type
            caught[sample.category] += 1
            continue
        if refused(xray):
            caught[sample.category] += 1
        else:
            missed.append(sample.name)
    return {"categories": {c: {"images": total[c], "refused": caught[c]} for c in total},
            "images": sum(total.values()), "refused": sum(caught.values()), "missed": missed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--per-category", type=int, default=30)
    args = parser.parse_args(argv)
    real = real_rates(args.data)
    fake = corpus_rates(args.per_category)
    n_real = sum(s["images"] for s in real["sets"].values())
    false = sum(s["refused"] for s in real["sets"].values())
    print(json.dumps({
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "false_refusal_rate": false / max(n_real, 1), "real_images": n_real,
        "true_refusal_rate": fake["refused"] / max(fake["images"], 1), "non_radiographs": fake["images"],
        "real": real, "corpus": fake,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
