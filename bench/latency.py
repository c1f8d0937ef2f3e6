"""End-to-end latency per image, DICOM bytes -> Prediction, for one model and one backend (one process).

    .venv/bin/python bench/latency.py --model-dir DIR --model chexnet --backend onnx [--n 30] [--warmup 3]

Each call is ``pneumo.io.read_xray(bytes)`` + ``InferenceService.predict(xray, model)`` (heatmap included, the
API's path); DICOM files are read into memory first so disk is not timed. Images cycle through rsna-mini.
Prints JSON: median/p95 of the total, of the process CPU time per call, and of each part (decode, preprocess,
inference, postprocess), the load time and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchlib import peak_rss_mib, rsna_dicoms, summary, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--model", default="chexnet")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"))
    parser.add_argument("--n", type=int, default=30, help="timed images")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all usable CPUs)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from pneumo.io import read_xray
    from pneumo.service import InferenceService

    files = rsna_dicoms()
    blobs = [files[i % len(files)].read_bytes() for i in range(args.warmup + args.n)]
    t0 = time.perf_counter()
    service = InferenceService(args.model_dir, backend=args.backend, num_threads=args.threads)
    service.load(args.model)
    load_s = time.perf_counter() - t0
    predictor = service.predictor(args.model)
    members = getattr(predictor, "members", {args.model: predictor})
    backends = {k: type(v).__name__ for k, v in members.items()}

    totals, cpu, decode, parts = [], [], [], {"preprocess": [], "inference": [], "postprocess": []}
    for i, blob in enumerate(blobs):
        cpu_start = time.process_time()
        start = time.perf_counter()
        xray = read_xray(blob)
        decoded = time.perf_counter()
        prediction = service.predict(xray, args.model)
        end = time.perf_counter()
        cpu_end = time.process_time()
        if i < args.warmup:
            continue
        totals.append((end - start) * 1000)
        cpu.append((cpu_end - cpu_start) * 1000)
        decode.append((decoded - start) * 1000)
        for key in parts:
            parts[key].append(float(prediction.timing_ms.get(key, 0.0)))
    write_json(args.json, {
        "model": args.model, "backend": args.backend, "predictors": backends, "threads": service.num_threads,
        "load_s": round(load_s, 2), "total_ms": summary(totals), "cpu_ms": summary(cpu), "decode_ms": summary(decode),
        **{f"{k}_ms": summary(v) for k, v in parts.items()}, "peak_rss_mib": peak_rss_mib(),
    })


if __name__ == "__main__":
    main()
