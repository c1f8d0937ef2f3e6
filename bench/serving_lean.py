"""Serving lean (issue 15): torch-free ONNX serving, latency per model, the ONNX Runtime levers, memory, CLI start-up.

    .venv/bin/python bench/serving_lean.py [--model-dir models] [--n 8] [--rounds 3] [--before-src DIR]
                                           [--write bench/RESULTS.md]

Parts (every timing is a median over rounds x images after a warm-up; wall and process CPU time):

* ``latency``: ``InferenceService(backend="onnx").predict`` per image (decoded rsna-mini DICOMs, heatmap
  included) for chexnet, maskrcnn, unet and the ensemble (its default flip TTA), in a child process that never
  imports torch.
* ``levers``: model-only ``session.run`` per exported family on a real preprocessed image: both TTA views in one
  batch-2 run vs two batch-1 runs; ONNX Runtime graph optimisation level; intra-op threads (and spin-waiting).
  Every variant's outputs are compared with the default session's (max |difference|).
* ``memory``: resident memory of a served process with every shipped model loaded and one prediction each:
  with torch imported (the state before issue 15: every serving process imported it) and without.
* ``cli``: start-to-exit wall/CPU time and peak RSS of ``pneumo predict --model chexnet`` on one DICOM, with this
  tree's code and (``--before-src``, e.g. ``git archive <commit> src | tar -x -C DIR``) the code before.

The machine is recorded with its load average and busiest other processes (a shared 2-core box: absolute
figures move with the load; compare the rows of one run). This script imports no torch itself.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODELS = ("chexnet", "maskrcnn", "unet", "ensemble")
FAMILIES = ("chexnet", "unet", "maskrcnn")
sys.path.insert(0, str(REPO / "bench"))
from benchlib import cpu_info  # noqa: E402

START, END = "<!-- serving-lean:start -->", "<!-- serving-lean:end -->"


# ---------------------------------------------------------------- machine and statistics

def machine() -> dict[str, Any]:
    """Like ``benchlib.machine`` without importing torch (versions from package metadata)."""
    cpu, features = cpu_info()
    ram = next((int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), 0)
    versions = {}
    for package in ("onnxruntime", "numpy", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cpu_features": features, "cores": len(os.sched_getaffinity(0)), "ram_gib": round(ram / 2**20, 1),
            "python": platform.python_version(), **versions,
            "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def load() -> dict[str, Any]:
    busiest = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    rows = [" ".join(line.split()[:1] + [" ".join(line.split()[1:])[:70]]) for line in busiest.splitlines()[1:6]]
    return {"loadavg_1m": round(os.getloadavg()[0], 2), "busiest": rows}


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1) if values else float("nan")


def rss_mib() -> tuple[float, float]:
    """(current VmRSS, peak VmHWM) of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return round(int(fields["VmRSS"].split()[0]) / 1024, 1), round(int(fields["VmHWM"].split()[0]) / 1024, 1)


def dicoms(n: int) -> list[Path]:
    folder = Path(os.environ.get("PNEUMO_SHARED_DATA", REPO.parent / "shared" / "data")) / "rsna-mini" / "stage_2_train_images"
    files = sorted(folder.glob("*.dcm"))
    if len(files) < n:
        raise SystemExit(f"need {n} DICOMs under {folder} (set PNEUMO_SHARED_DATA)")
    return files[:n]


def child(part: str, args: argparse.Namespace, src: Path = REPO / "src", timeout: int = 1800) -> dict[str, Any]:
    """Run ``part`` of this script in a fresh process with ``src`` first on the path -> its JSON answer."""
    env = {**os.environ, "PYTHONPATH": str(src), "PNEUMO_BACKEND": ""}
    command = [sys.executable, __file__, "--child", part, "--model-dir", str(args.model_dir), "--n", str(args.n),
               "--rounds", str(args.rounds), "--threads", str(args.threads)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if run.returncode != 0:
        raise SystemExit(f"{part} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- parts run in children

def part_latency(args: argparse.Namespace) -> dict[str, Any]:
    from pneumo.io import read_xray
    from pneumo.service import InferenceService

    xrays = [read_xray(path) for path in dicoms(args.n)]
    service = InferenceService(args.model_dir, backend="onnx", num_threads=args.threads)
    for model in MODELS:
        service.predict(xrays[0], model)  # load + warm-up
    result: dict[str, Any] = {}
    for model in MODELS:
        walls, cpus = [], []
        for _ in range(args.rounds):
            for xray in xrays:
                w0, c0 = time.perf_counter(), time.process_time()
                service.predict(xray, model)
                walls.append((time.perf_counter() - w0) * 1e3)
                cpus.append((time.process_time() - c0) * 1e3)
        result[model] = {"wall_ms": median(walls), "cpu_ms": median(cpus), "n": len(walls),
                         "tta": bool(service.predictor(model).default_tta)}
    result["torch_imported"] = "torch" in sys.modules
    return result


def part_memory(args: argparse.Namespace, with_torch: bool) -> dict[str, Any]:
    if with_torch:
        import torch  # noqa: F401  (the state before issue 15: serving imported torch)
    from pneumo.io import read_xray
    from pneumo.service import InferenceService

    xray = read_xray(dicoms(1)[0])
    service = InferenceService(args.model_dir, backend="onnx", num_threads=args.threads)
    loaded = [info.name for info in service.available_models()]
    for model in MODELS:
        service.predict(xray, model)
    rss, peak = rss_mib()
    return {"rss_mib": rss, "peak_mib": peak, "models": loaded, "torch_imported": "torch" in sys.modules}


def _session(path: Path, level: str, threads: int, spinning: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _timed(fn, repeats: int) -> tuple[float, float, list]:
    fn()  # warm-up
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append((time.perf_counter() - w0) * 1e3)
        cpus.append((time.process_time() - c0) * 1e3)
    return median(walls), median(cpus), out


def _max_diff(a: list, b: list) -> float:
    import numpy as np

    worst = 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            worst = max(worst, float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()))
    return worst


def part_levers(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from pneumo.export.decoders import INPUT_NAME, decoder
    from pneumo.export.metadata import OnnxMetadata
    from pneumo.io import read_xray
    from pneumo.preprocess import Preprocessor

    xray = read_xray(dicoms(1)[0])
    repeats = max(3, args.n * args.rounds // 2)
    result: dict[str, Any] = {}
    for family in FAMILIES:
        path = args.model_dir / f"{family}.onnx"
        base = _session(path, "ORT_ENABLE_ALL", args.threads, False)
        size = OnnxMetadata.from_props(base.get_modelmeta().custom_metadata_map).size
        canvas = Preprocessor.from_dict({"size": size})(xray.pixels)[0].astype(np.float32)
        one = np.ascontiguousarray(canvas[None, None])
        flipped = np.ascontiguousarray(canvas[None, None, :, ::-1])
        pair = np.concatenate([one, flipped])
        names = list(decoder(family).outputs)
        rows: dict[str, Any] = {}
        two_runs = lambda s=base: [s.run(names, {INPUT_NAME: one}), s.run(names, {INPUT_NAME: flipped})]
        w, c, ref_two = _timed(two_runs, repeats)
        rows["tta: 2 runs of batch 1"] = {"wall_ms": w, "cpu_ms": c, "max_diff": 0.0}
        if decoder(family).dynamic_batch:
            w, c, out = _timed(lambda s=base: s.run(names, {INPUT_NAME: pair}), repeats)
            split = [[o[:1] for o in out], [o[1:] for o in out]]
            diff = max(_max_diff(split[0], ref_two[0]), _max_diff(split[1], ref_two[1]))
            rows["tta: 1 run of batch 2"] = {"wall_ms": w, "cpu_ms": c, "max_diff": diff}
        reference = base.run(names, {INPUT_NAME: one})
        variants = [(level, args.threads, False) for level in ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")]
        variants += [("ORT_ENABLE_ALL", threads, spin) for threads in (1, 2) for spin in (False, True)
                     if (threads, spin) != (args.threads, False)]
        for level, threads, spin in variants:
            session = _session(path, level, threads, spin)
            w, c, out = _timed(lambda s=session: s.run(names, {INPUT_NAME: one}), repeats)
            rows[f"b1 {level.removeprefix('ORT_').lower()}, {threads} thread{'s' if threads > 1 else ''}"
                 f"{', spinning' if spin else ''}"] = {"wall_ms": w, "cpu_ms": c, "max_diff": _max_diff(out, reference)}
            del session
        result[family] = {"size": size, "repeats": repeats, "rows": rows}
    return result


def part_cli(args: argparse.Namespace, src: Path, runs: int) -> dict[str, Any]:
    """Start-to-exit of ``pneumo predict --model chexnet`` on one DICOM (``runs`` fresh processes)."""
    image = dicoms(1)[0]
    walls, cpus, peaks = [], [], []
    env = {**os.environ, "PYTHONPATH": str(src), "PNEUMO_BACKEND": ""}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            command = [sys.executable, "-m", "pneumo", "predict", "--model", "chexnet", "--model-dir", str(args.model_dir),
                       "--no-progress", "--output", f"{tmp}/p{i}.jsonl", str(image)]
            w0 = time.perf_counter()
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(process.pid, 0)
            walls.append((time.perf_counter() - w0) * 1e3)
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                raise SystemExit(f"pneumo predict failed: {process.stderr.read().decode()[-2000:]}")
            process.stderr.close()
            cpus.append((usage.ru_utime + usage.ru_stime) * 1e3)
            peaks.append(usage.ru_maxrss / 1024)
    return {"wall_ms": median(walls), "cpu_ms": median(cpus), "peak_rss_mib": median(peaks), "runs": runs}


# ---------------------------------------------------------------- report

def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [START, "## Serving lean: torch-free ONNX serving, ONNX Runtime levers, memory, CLI start-up (issue 15)", "",
             f"Measured {m['date_utc']} on {m['cpu']} ({', '.join(m.get('cpu_features') or ['flags unknown'])}), {m['cores']} cores usable, {m['ram_gib']} GiB RAM; Python "
             f"{m['python']}, onnxruntime {m['onnxruntime']}, torch {m['torch']} (installed, not imported by the "
             f"served processes). Shipped models (`models/`, their ONNX exports). Reproduce: "
             "`.venv/bin/python bench/serving_lean.py --before-src DIR --write bench/RESULTS.md`.", "",
             f"**Load**: a 2-core machine that other sessions may share: load average "
             f"{r['load_start']['loadavg_1m']} at start, {r['load_end']['loadavg_1m']} at end "
             f"(busiest at start: {'; '.join(r['load_start']['busiest'][:3])}). Absolute times are inflated by "
             "that load; compare rows of the same table. Medians; CPU = process CPU time (all threads).", ""]
    lat = r["latency"]
    lines += ["### Per-image latency, `InferenceService(backend=\"onnx\").predict` (decoded DICOM -> Prediction, heatmap included)", "",
              f"{r['args']['threads']} intra-op thread(s); torch imported by this process: {lat['torch_imported']}.", "",
              "| model | TTA | wall ms | CPU ms | n |", "|---|---|---|---|---|"]
    for model in MODELS:
        row = lat[model]
        lines.append(f"| {model} | {'flip' if row['tta'] else 'none'} | {row['wall_ms']} | {row['cpu_ms']} | {row['n']} |")
    lines += ["", "### Levers, model only (`session.run` on one real image at the serving size)", "",
              "max diff = largest |output - default session's output| (0 = identical).", "",
              "| family | size | variant | wall ms | CPU ms | max diff |", "|---|---|---|---|---|---|"]
    for family, block in r["levers"].items():
        for name, row in block["rows"].items():
            lines.append(f"| {family} | {block['size']} | {name} | {row['wall_ms']} | {row['cpu_ms']} | {row['max_diff']:.2g} |")
    mem = r["memory"]
    lines += ["", "### Memory of a served process (every shipped model loaded, one prediction each)", "",
              "| state | torch in sys.modules | RSS MiB | peak RSS MiB |", "|---|---|---|---|"]
    for name, row in mem.items():
        lines.append(f"| {name} | {row['torch_imported']} | {row['rss_mib']} | {row['peak_mib']} |")
    lines += ["", "### `pneumo predict --model chexnet` on one DICOM, start to exit (fresh process each run)", "",
              "| code | wall ms | CPU ms | peak RSS MiB | runs |", "|---|---|---|---|---|"]
    for name, row in r["cli"].items():
        lines.append(f"| {name} | {row['wall_ms']} | {row['cpu_ms']} | {row['peak_rss_mib']} | {row['runs']} |")
    lines += ["", END]
    return "\n".join(lines)


def write_results(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "models")
    parser.add_argument("--n", type=int, default=8, help="images per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the served processes")
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--before-src", type=Path, default=None, help="src/ of the code before, for the CLI row")
    parser.add_argument("--parts", nargs="+", default=["latency", "levers", "memory", "cli"])
    parser.add_argument("--write", type=Path, default=None, help="RESULTS.md to update (section between markers)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model_dir = args.model_dir.resolve()

    if args.child:
        parts = {"latency": part_latency, "levers": part_levers,
                 "memory-torch": lambda a: part_memory(a, True), "memory": lambda a: part_memory(a, False)}
        print(json.dumps(parts[args.child](args)))
        return

    result: dict[str, Any] = {"machine": machine(), "load_start": load(),
                              "args": {"n": args.n, "rounds": args.rounds, "threads": args.threads}}
    if "latency" in args.parts:
        result["latency"] = child("latency", args)
    if "levers" in args.parts:
        result["levers"] = child("levers", args)
    if "memory" in args.parts:
        result["memory"] = {"before: torch imported": child("memory-torch", args), "after: no torch": child("memory", args)}
    if "cli" in args.parts:
        result["cli"] = {}
        sources = [("after (this tree)", REPO / "src")] + ([("before", args.before_src.resolve())] if args.before_src else [])
        for name, src in sources:  # one warm-up run each (page cache), then the timed runs
            part_cli(args, src, 1)
        for name, src in sources:
            result["cli"][name] = part_cli(args, src, args.cli_runs)
    result["load_end"] = load()
    out = REPO / "bench" / "results" / f"serving-lean-{result['machine']['date_utc'][:10]}.json"
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(result, indent=1))
    if args.write and all(k in result for k in ("latency", "levers", "memory", "cli")):
        write_results(args.write, render(result))


if __name__ == "__main__":
    main()
