"""int8 static quantisation of the shipped classifier's ONNX graph (issue 15, lever 3): speed and accuracy.

    .venv/bin/python bench/quantize_int8.py [--calibration 64] [--rounds 3] [--write bench/results/int8-DATE.json]

The shipped classifier (``models/chexnet.onnx``, fp32 graph of ``models/chexnet.pt``) is quantised with ONNX
Runtime's ``quantize_static`` (QDQ format, per-channel int8 weights, uint8 activations), calibrated on
``--calibration`` images of the patients it **trained** on (its CV fold's training side, read from
``models/cv_summary.json``), and scored on the patients of its **held-out** fold (images it never saw):
AUC of fp32 vs each int8 variant, |probability difference| per image, and model-only ``session.run`` time per
image (batch 1, 2 intra-op threads, median over rounds). Two variants: every supported operator quantised with
min-max calibration, and only the convolutions with 99.99th-percentile calibration.

Keep a variant only if its AUC is within 0.005 of fp32 (the issue's rule) and it is faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from benchlib import fold_records, machine, shipped_fold, write_json  # noqa: E402


def session(path: Path, threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timed", type=int, default=40, help="held-out images timed per round")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from pneumo.evaluation.classification import roc_auc
    from pneumo.io import read_xray
    from pneumo.preprocess import Preprocessor

    fold = shipped_fold("chexnet")
    train, held_out = fold_records(fold)
    preprocess = Preprocessor(256)

    def image(record) -> np.ndarray:
        return preprocess(read_xray(record.path).pixels)[0][None, None]

    rng = np.random.default_rng(0)
    calibration = [image(train[i]) for i in rng.choice(len(train), args.calibration, replace=False)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"images": item}

    work = Path(tempfile.mkdtemp())
    fp32 = REPO / "models" / "chexnet.onnx"
    quant_pre_process(str(fp32), str(work / "pre.onnx"))
    variants = {
        "int8, every operator, min-max": dict(),
        "int8, convolutions only, 99.99th percentile": dict(
            op_types_to_quantize=["Conv"], calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": 99.99}),
    }
    paths = {"fp32 (shipped)": fp32}
    for name, options in variants.items():
        out = work / f"{len(paths)}.onnx"
        quantize_static(str(work / "pre.onnx"), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, **options)
        paths[name] = out

    images = [image(r) for r in held_out]
    labels = np.array([int(r.target) for r in held_out])
    rows, reference = [], None
    for name, path in paths.items():
        run = session(path)
        probs = np.array([float(run.run(["probability"], {"images": x})[0].reshape(-1)[0]) for x in images])
        reference = probs if reference is None else reference
        times = []
        for _ in range(args.rounds):
            for x in images[: args.timed]:
                start = time.perf_counter()
                run.run(None, {"images": x})
                times.append(1000 * (time.perf_counter() - start))
        diff = np.abs(probs - reference)
        rows.append({"variant": name, "auc": round(float(roc_auc(probs, labels)), 4),
                     "median_ms": round(statistics.median(times), 1), "median_abs_dp": round(float(np.median(diff)), 4),
                     "max_abs_dp": round(float(diff.max()), 4), "bytes": path.stat().st_size})
        print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine(), "fold": fold, "held_out_images": len(held_out), "positives": int(labels.sum()),
              "calibration_images": args.calibration, "rows": rows}
    write_json(args.write, result)


if __name__ == "__main__":
    main()
