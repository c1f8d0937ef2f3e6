"""Run the shipped models on an RSNA-layout folder they never saw and save their raw outputs (npz, no pickle).

    python scripts/heldout_outputs.py --data ../shared/data/rsna-plus --out runs/heldout/rsna-plus.npz

Patients are taken in a fixed random order (seed 0), so any prefix is a random sample. The classifier runs on
every image first; then the box members (the ensemble's) chunk by chunk, the file rewritten atomically after
each chunk (``done`` marks the images every member has answered). Every member runs with flip TTA so one pass
gives the plain-view probability (what a single model shows) and the TTA mean (what the ensemble fuses).
Mask R-CNN is run with ``min_box_side=0`` (no size taper) so its raw boxes are kept and both the old and the
tapered probability can be recomputed (``pneumo.evaluation.heldout``). Boxes: xyxy + confidence, original px.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pneumo.evaluation.heldout import HeldoutOutputs, member_keys
from pneumo.io import read_xray
from pneumo.ensemble import EnsembleSpec
from pneumo.data.rsna import read_rsna_labels
from pneumo.service import InferenceService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="at most this many patients")
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--backend", default="onnx")
    args = parser.parse_args(argv)

    service = InferenceService(args.model_dir, backend=args.backend, num_threads=1)
    ensemble = service.predictor("ensemble")
    spec: EnsembleSpec = ensemble.spec
    labels = read_rsna_labels(args.data / "stage_2_train_labels.csv")
    ids = sorted(labels)
    order = np.random.default_rng(0).permutation(len(ids))
    ids = [ids[i] for i in order][: args.limit]
    images = args.data / "stage_2_train_images"
    keys = member_keys(spec)
    store = HeldoutOutputs.empty(ids, [labels[p] for p in ids], keys)
    members = ensemble.members
    for key in keys:
        config = getattr(members[key].model, "config", None)
        if hasattr(config, "min_box_side"):
            config.min_box_side = 0.0  # raw boxes; the taper is re-applied offline
    classifier = spec.classifier.model if spec.classifier is not None else None
    t0 = time.perf_counter()
    xrays = {}
    if classifier is not None:
        for i, pid in enumerate(ids):
            xray = read_xray(images / f"{pid}.dcm")
            (out,), _ = members[classifier].outputs([xray], tta=True, heatmap=False)
            store.set(classifier, i, out)
        store.save(args.out)
        print(f"classifier done: {len(ids)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    box_keys = [k for k in keys if k != classifier]
    for start in range(0, len(ids), args.chunk):
        for i in range(start, min(start + args.chunk, len(ids))):
            xray = read_xray(images / f"{ids[i]}.dcm")
            for key in box_keys:
                (out,), _ = members[key].outputs([xray], tta=True, heatmap=False)
                store.set(key, i, out)
            store.done[i] = True
        store.save(args.out)
        print(f"{int(store.done.sum())}/{len(ids)} images, {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
