"""OpenVINO as an alternative runtime for the shipped ONNX exports (issue 15, lever 4): speed and accuracy.

    .venv/bin/pip install openvino   # not a dependency of pneumo: this script measures whether it should be
    .venv/bin/python bench/openvino_runtime.py [--timed 40] [--rounds 3] [--write bench/results/openvino-DATE.json]

For each shipped family, the same ONNX file (``models/<family>.onnx``) runs in ONNX Runtime (``ORT_ENABLE_ALL``,
1 intra-op thread, no spinning) and in OpenVINO's CPU plugin (1 inference thread, one stream, latency hint) at two
inference precisions: ``f32`` and ``bf16`` (the CPU's AVX-512 BF16 units). Inputs are the serving canvases of
the patients of the shipped classifier's **held-out** CV fold (images it never saw; the rsna-mini detector and
U-Net trained on the rsna-mini ones among them: their AUCs compare the runtimes, not the models). Per
variant: model-only time per image (median over ``--rounds`` x ``--timed`` calls, wall and process CPU), the
image-level probability's AUC on those patients, |probability - ONNX Runtime's| per image, the images whose
number of output rows (detections) differs from ONNX Runtime's, and the rows each returns for a featureless
(all 0.5) image, where the detector finds nothing. A family whose graph OpenVINO cannot read gets the reason.

Keep a variant only if its AUC is within 0.005 of ONNX Runtime's fp32 (the issue's rule) and it is faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from pneumo.export.decoders import INPUT_NAME  # noqa: E402

from benchlib import FAMILIES, fold_records, machine, shipped_fold, write_json  # noqa: E402

PRECISIONS = ("f32", "bf16")
#: ({input name: array}, output names) -> the outputs, in that order
Run = Callable[[dict[str, np.ndarray], list[str]], list[np.ndarray]]


def onnxruntime_runner(path: Path) -> Run:
    """The session pneumo serves with (``pneumo.export.runtime.OnnxModel``), 1 intra-op thread."""
    from pneumo.export.runtime import OnnxModel

    session = OnnxModel(path, num_threads=1).session
    return lambda feed, names: session.run(names, feed)


def openvino_runner(path: Path, precision: str) -> Run:
    """OpenVINO's CPU plugin on the same ONNX file: 1 thread, 1 stream, latency hint, ``precision`` inference,
    threads not pinned; outputs copied (OpenVINO reuses its output buffers)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision, "ENABLE_CPU_PINNING": False})
    request = compiled.create_infer_request()
    ports = {name: port for port in compiled.outputs for name in port.get_names()}

    def run(feed: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        result = request.infer(feed)
        return [np.array(result[ports[name]], copy=True) for name in names]

    return run


def image_score(names: list[str], outputs: list[np.ndarray]) -> float:
    """The image-level score: ``probability`` (classifier, U-Net) or the highest box ``scores`` (detector; 0 if none)."""
    if "probability" in names:
        return float(outputs[names.index("probability")].reshape(-1)[0])
    scores = outputs[names.index("scores")].reshape(-1)
    return float(scores.max()) if scores.size else 0.0


def measure(run: Run, images: list[np.ndarray], names: list[str], timed: int, rounds: int) -> dict[str, Any]:
    """Image-level score and output rows per image (``image_score``), model-only wall/CPU ms per call."""
    outputs = [run({INPUT_NAME: x}, names) for x in images]
    probabilities = np.array([image_score(names, out) for out in outputs])
    rows = np.array([len(out[0]) for out in outputs])  # detections per image (detector); the batch size otherwise
    walls, cpus = [], []
    for _ in range(rounds):
        for x in images[:timed]:
            w0, c0 = time.perf_counter(), time.process_time()
            run({INPUT_NAME: x}, names)
            walls.append((time.perf_counter() - w0) * 1e3)
            cpus.append((time.process_time() - c0) * 1e3)
    return {"probabilities": probabilities, "rows": rows, "wall_ms": round(statistics.median(walls), 2),
            "cpu_ms": round(statistics.median(cpus), 2), "calls": len(walls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timed", type=int, default=40, help="held-out images timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    import openvino

    from pneumo.evaluation.classification import roc_auc
    from pneumo.export.decoders import decoder
    from pneumo.export.metadata import read_metadata
    from pneumo.io import read_xray
    from pneumo.preprocess import Preprocessor

    fold = shipped_fold("chexnet")
    _, held_out = fold_records(fold)
    labels = np.array([int(r.target) for r in held_out])
    pixels = [read_xray(r.path).pixels for r in held_out]
    families: dict[str, Any] = {}
    for family in FAMILIES:
        path = REPO / "models" / f"{family}.onnx"
        reference_run = onnxruntime_runner(path)
        size = read_metadata(path).size
        preprocess = Preprocessor(size)
        images = [np.ascontiguousarray(preprocess(p)[0][None, None].astype(np.float32)) for p in pixels]
        names = list(decoder(family).outputs)
        reference = measure(reference_run, images, names, args.timed, args.rounds)
        blank = np.full_like(images[0], 0.5)  # a featureless image: the detector finds nothing here
        blank_rows = int(len(reference_run({INPUT_NAME: blank}, names)[0]))
        rows = [{"runtime": "onnxruntime fp32 (served)", "wall_ms": reference["wall_ms"], "cpu_ms": reference["cpu_ms"],
                 "auc": round(float(roc_auc(reference["probabilities"], labels)), 4),
                 "median_abs_dp": 0.0, "max_abs_dp": 0.0}]
        for precision in PRECISIONS:
            row: dict[str, Any] = {"runtime": f"openvino {precision}"}
            try:
                run = openvino_runner(path, precision)
            except RuntimeError as error:  # the ONNX frontend cannot convert an operator of the graph
                row["error"] = " ".join(str(error).split())[:400]
                rows.append(row)
                break
            result = measure(run, images, names, args.timed, args.rounds)
            diff = np.abs(result["probabilities"] - reference["probabilities"])
            row["blank_image_rows"] = {"onnxruntime": blank_rows, "this": int(len(run({INPUT_NAME: blank}, names)[0]))}
            row.update({"images_with_other_row_count": int((result["rows"] != reference["rows"]).sum()),
                        "wall_ms": result["wall_ms"], "cpu_ms": result["cpu_ms"],
                        "auc": round(float(roc_auc(result["probabilities"], labels)), 4),
                        "median_abs_dp": round(float(np.median(diff)), 5), "max_abs_dp": round(float(diff.max()), 5)})
            rows.append(row)
        for row in rows:
            print(family, row, flush=True)
        families[family] = {"size": size, "rows": rows}
    write_json(args.write, {"machine": machine(), "openvino": openvino.__version__, "fold": fold,
                            "held_out_images": len(held_out), "positives": int(labels.sum()), "families": families})


if __name__ == "__main__":
    main()
