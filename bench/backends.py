"""PyTorch eager vs ONNX Runtime per family, model only (the measurement behind ``PREFERRED_BACKENDS``).

    .venv/bin/python bench/backends.py --model-dir DIR [--families chexnet unet maskrcnn] [--n 20]

For each family: the checkpoint's torch model (``infer`` under ``no_grad``/``inference_mode`` as the service
runs it) and its ONNX export (``OnnxModel.infer``), on real rsna-mini images preprocessed to the checkpoint's
size, batch 1 and (dense families) batch 8; the same threads for both. ``infer`` includes the family's shared
post-processing, so the difference is the network alone. Torch and ONNX calls alternate (torch, onnx, torch,
...) so that both see the same load from whatever else runs on the machine. Prints JSON (ms per image).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchlib import FAMILIES, rsna_dicoms, summary, write_json


def _images(size: int, count: int) -> np.ndarray:
    from pneumo.io import read_xray
    from pneumo.preprocess import Preprocessor

    prep = Preprocessor(size)
    return np.stack([prep(read_xray(path).pixels)[0] for path in rsna_dicoms()[:count]])[:, None]


def _time_pair(fns, batch: np.ndarray, n: int, warmup: int = 2) -> list[list[float]]:
    """Per function, n timings in ms per image; calls interleaved (a, b, a, b, ...) after warm-up."""
    for _ in range(warmup):
        for fn in fns:
            fn(batch)
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn(batch)
            out[k].append((time.perf_counter() - start) * 1000 / batch.shape[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from pneumo.export.runtime import OnnxModel, default_threads
    from pneumo.inference.predictors import AUTOGRAD_FAMILIES
    from pneumo.models.checkpoint import load_checkpoint

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    results = {"threads": threads, "families": {}}
    for family in args.families:
        checkpoint = args.model_dir / f"{family}.pt"
        loaded = load_checkpoint(checkpoint)
        model = loaded.model
        onnx_model = OnnxModel(checkpoint.with_suffix(".onnx"), checkpoint=checkpoint, num_threads=threads)
        size = onnx_model.size
        context = torch.no_grad if family in AUTOGRAD_FAMILIES else torch.inference_mode

        def torch_infer(batch: np.ndarray) -> None:
            with context():
                model.infer(torch.from_numpy(batch))

        row = {"size": size}
        batches = (1, 8) if onnx_model.adapter.dynamic_batch else (1,)
        images = _images(size, max(batches))
        n = args.n if family != "maskrcnn" else max(5, args.n // 2)
        for b in batches:
            torch_ms, onnx_ms = _time_pair((torch_infer, onnx_model.infer), images[:b], n if b == 1 else max(3, n // 4))
            row[f"torch_b{b}"], row[f"onnx_b{b}"] = summary(torch_ms), summary(onnx_ms)
        row["speedup_b1"] = round(row["torch_b1"]["median"] / row["onnx_b1"]["median"], 2)
        row["faster_b1"] = "onnx" if row["speedup_b1"] > 1.0 else "torch"
        results["families"][family] = row
        del model, onnx_model
    write_json(args.json, results)


if __name__ == "__main__":
    main()
