"""Folder throughput of `pneumo predict` over the rsna-mini DICOMs (the batch path), per backend and setting.

    .venv/bin/python bench/throughput.py --model-dir DIR [--model chexnet] [--settings 1x1 16x2] [--limit N]

Each run is the real command in a fresh interpreter (``pneumo predict FOLDER --model M --output X.jsonl
--batch-size B --workers W --threads T``) with ``PNEUMO_BACKEND`` choosing the backend. Reported per run:
wall time, images/s over the whole command (start-up and model load included), images/s in steady state
(the wall time of the same command on one image subtracted), and the command's peak RSS. Then, in this
process, the same batch loop the command runs (``pneumo.inference.batch.run_files`` over
``service.predict_batch``) with the model already loaded: the steady-state figure without start-up noise.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchlib import rsna_dicoms, run_cli, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--model", default="chexnet")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"])
    parser.add_argument("--settings", nargs="+", default=["1x1", "16x2"], help="BATCHxWORKERS")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (smoke runs)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    files = rsna_dicoms()[: args.limit] if args.limit else rsna_dicoms()
    results = {"model": args.model, "images": len(files), "runs": []}
    with tempfile.TemporaryDirectory(prefix="pneumo-bench-") as scratch:
        folder = Path(scratch) / "images"
        folder.mkdir()
        for path in files:  # a folder of exactly these files (symlinks: nothing copied)
            (folder / path.name).symlink_to(path)
        one = Path(scratch) / "one"
        one.mkdir()
        (one / files[0].name).symlink_to(files[0])
        for backend in args.backends:
            env = {"PNEUMO_BACKEND": backend}
            for setting in args.settings:
                batch, workers = (int(v) for v in setting.split("x"))
                common = ["predict", "--model", args.model, "--model-dir", str(args.model_dir), "--batch-size",
                          str(batch), "--workers", str(workers), "--no-progress"]
                if args.threads:
                    common += ["--threads", str(args.threads)]
                start_up = run_cli([*common, str(one), "--output", str(Path(scratch) / "one.jsonl")], env)
                run = run_cli([*common, str(folder), "--output", str(Path(scratch) / "all.jsonl")], env)
                lines = (Path(scratch) / "all.jsonl").read_text().splitlines() if run["returncode"] == 0 else []
                steady = run["wall_s"] - start_up["wall_s"]
                results["runs"].append({
                    "backend": backend, "batch_size": batch, "workers": workers, "returncode": run["returncode"],
                    "predicted": len(lines), "wall_s": run["wall_s"], "one_image_wall_s": start_up["wall_s"],
                    "images_per_s": round(len(files) / run["wall_s"], 2),
                    "steady_images_per_s": round((len(files) - 1) / steady, 2) if steady > 0 else None,
                    "peak_rss_mib": run["peak_rss_mib"], "stderr_tail": run["stderr_tail"],
                    "model_version": json.loads(lines[0])["model_version"] if lines else None,
                })
        results["in_process"] = [in_process(files, args, backend, setting) for backend in args.backends
                                 for setting in args.settings]
    write_json(args.json, results)


def in_process(files: list[Path], args: argparse.Namespace, backend: str, setting: str) -> dict:
    """images/s of predict's batch loop with the model loaded (start-up excluded)."""
    import time

    from pneumo.inference.batch import run_files, torch_threads_for
    from pneumo.service import InferenceService

    batch, workers = (int(v) for v in setting.split("x"))
    service = InferenceService(args.model_dir, backend=backend, num_threads=torch_threads_for(workers, args.threads))
    service.load(args.model)
    failures: list[Path] = []
    start = time.perf_counter()
    done = sum(1 for _ in run_files(files, lambda xs: service.predict_batch(xs, args.model, heatmap=False),
                                    batch_size=batch, workers=workers, on_error=lambda p, e: failures.append(p),
                                    progress=False))
    elapsed = time.perf_counter() - start
    return {"backend": backend, "batch_size": batch, "workers": workers, "threads": service.num_threads,
            "predicted": done, "failed": len(failures), "elapsed_s": round(elapsed, 2),
            "images_per_s": round(done / elapsed, 2)}


if __name__ == "__main__":
    main()
