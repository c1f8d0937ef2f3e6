"""Run every serving benchmark in one go and record the results.

    .venv/bin/python bench/run_all.py            # full run (about 10-15 minutes on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # smoke run: fewer images and requests, recorded only in /tmp
    .venv/bin/python bench/run_all.py --render bench/results/serving-DATE.json   # re-render a recorded run

Steps (each measurement in its own process, so peak RSS is per scenario): build the models under test
(``benchlib.build_model_dir``: shipped checkpoints, else random-init ones at the configs' serving sizes) and
export them to ONNX; model-only torch vs ONNX (``backends.py``); end-to-end latency DICOM bytes -> Prediction
per model and backend (``latency.py``); folder throughput of ``pneumo predict`` (``throughput.py``); the API
under 8 concurrent clients (``api_load.py``); torchxrayvision's pipeline on the same images
(``xrv_baseline.py``); pyinstrument profiles of the models that miss their target (``profile_predict.py``).

A full run writes ``bench/results/serving-<UTC date>.json`` and replaces the section between the
``serving-bench`` markers in ``bench/RESULTS.md`` (other sections are left alone).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import MODELS, REPO, build_model_dir, machine, other_processes, write_json

BENCH = Path(__file__).resolve().parent
START, END = "<!-- serving-bench:start -->", "<!-- serving-bench:end -->"
#: target per measurement (ms unless stated), from the "Performance" issue
TARGETS = {"chexnet": 25.0, "unet": 350.0, "maskrcnn": 350.0, "ensemble": 600.0}
TARGET_CLASSIFIER_IPS = 20.0
TARGET_XRV_RATIO = 2.0


def child(script: str, *args: str, timeout: float = 1800) -> dict:
    """Run ``bench/<script> ARGS --json TMP`` in a fresh interpreter and return its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(BENCH / script), *args, "--json", str(out)]
    print("+", " ".join(command[1:]), file=sys.stderr, flush=True)
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    try:
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}", "stderr": proc.stderr.strip().splitlines()[-8:]}
        return json.loads(out.read_text(encoding="utf-8"))
    finally:
        out.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run; results printed, not recorded")
    parser.add_argument("--threads", type=int, default=None, help="inference threads (default: all usable CPUs)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--render", type=Path, default=None, help="only re-render this recorded JSON into RESULTS.md")
    args = parser.parse_args()
    if args.render is not None:
        update_results_md(render(json.loads(args.render.read_text(encoding="utf-8"))))
        return
    quick = args.quick
    threads = ["--threads", str(args.threads)] if args.threads else []

    results: dict = {"command": "bench/run_all.py" + (" --quick" if quick else "")
                     + (f" --threads {args.threads}" if args.threads else ""),
                     "machine": machine(), "busy_at_start": other_processes()}
    with tempfile.TemporaryDirectory(prefix="pneumo-bench-models-") as scratch:
        model_dir = Path(scratch)
        print("building and exporting the models under test ...", file=sys.stderr, flush=True)
        results["models"] = build_model_dir(model_dir)
        md = ["--model-dir", str(model_dir)]
        results["backends"] = [child("backends.py", *md, "--n", "4" if quick else "20", *t)
                               for t in (["--threads", "1"], threads)]
        results["latency"] = []
        for model in MODELS:
            backends = ("torch", "onnx", "auto") if model == "ensemble" else ("torch", "onnx")
            for backend in backends:
                n = {"chexnet": 40, "unet": 30, "maskrcnn": 15, "ensemble": 10}[model]
                results["latency"].append(child("latency.py", *md, "--model", model, "--backend", backend,
                                                "--n", str(3 if quick else n), "--warmup", "1" if quick else "3",
                                                *threads))
        results["throughput"] = child("throughput.py", *md, "--model", "chexnet", "--settings", "1x1", "16x1", "16x2",
                                      *(["--limit", "24"] if quick else []), *threads)
        results["api"] = [
            child("api_load.py", *md, "--model", "chexnet", "--backend", backend, "--requests", "16" if quick else "96")
            for backend in ("torch", "onnx")
        ] + [child("api_load.py", *md, "--model", "ensemble", "--backend", "auto", "--requests", "8" if quick else "24")]
        # 1 torch thread, decoding inline: the same cores as `pneumo predict --workers 1` (1 decoder + 1 model
        # thread); with 2 threads on the busy machine its OpenMP threads stall (0.27 img/s on 2026-11-25)
        results["xrv"] = child("xrv_baseline.py", *(["--limit", "12"] if quick else []), "--threads", "1")
        results["profiles"] = {}
        if not args.no_profile:
            for model in missed_latency(results):
                target = BENCH / "profiles" / f"{model}.txt" if not quick else Path(scratch) / f"{model}.txt"
                child_profile(model, model_dir, target, 3 if quick else 8, threads)
                results["profiles"][model] = str(target.relative_to(REPO)) if not quick else str(target)
    results["busy_at_end"] = other_processes()
    results["loadavg_end_1m"] = machine()["loadavg_1m"]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    raw = Path(tempfile.gettempdir()) / f"serving-{stamp}-quick.json" if quick else BENCH / "results" / f"serving-{stamp}.json"
    write_json(raw, results)  # before rendering: a rendering bug must not lose a long run
    print(f"raw results: {raw}", file=sys.stderr)
    markdown = render(results)
    if not quick:
        update_results_md(markdown)
    print(markdown)


def child_profile(model: str, model_dir: Path, target: Path, n: int, threads: list[str]) -> None:
    command = [sys.executable, str(BENCH / "profile_predict.py"), "--model-dir", str(model_dir), "--model", model,
               "--n", str(n), "--output", str(target), *threads]
    print("+", " ".join(command[1:]), file=sys.stderr, flush=True)
    subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)


def best_latency(results: dict, model: str) -> dict | None:
    rows = [r for r in results["latency"] if r.get("model") == model and "total_ms" in r]
    return min(rows, key=lambda r: r["total_ms"]["median"]) if rows else None


def missed_latency(results: dict) -> list[str]:
    missed = []
    for model, target in TARGETS.items():
        best = best_latency(results, model)
        if best is not None and best["total_ms"]["median"] > target:
            missed.append(model)
    return missed


def _ms(row: dict | None, key: str = "total_ms") -> str:
    if not row or key not in row:
        return "n/a"
    return f"{row[key]['median']:.0f} / {row[key]['p95']:.0f}"


def render(results: dict) -> str:
    m = results["machine"]
    lines = [START, "## Serving: latency, throughput, API, memory, ONNX vs PyTorch, torchxrayvision", "",
             f"Measured {m['date_utc']} on {m['cpu']}, {m['cores']} cores usable, {m['ram_gib']} GiB RAM; "
             f"Python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}. "
             f"Reproduce: `.venv/bin/python {results['command']}`.", "",
             f"Load average at start {m['loadavg_1m']}, at end {results.get('loadavg_end_1m')} "
             "(a 2-core machine shared with other engineers' tests and training; see 'Also running').", ""]
    models = results["models"]
    lines += ["Models under test: " + "; ".join(
        f"{k}: {v.get('source')}" + (f" ({v.get('config')}, {v.get('size')} px)" if v.get("source") == "random-init" else "")
        for k, v in models.items()) + ". Random weights do not change the speed of these networks, except that a "
        "random Mask R-CNN keeps its full detection budget (10 boxes) on every image.", ""]

    lines += ["### Targets", "", "| target | goal | measured (best backend) | met |", "|---|---|---|---|"]
    for model, target in TARGETS.items():
        best = best_latency(results, model)
        value = best["total_ms"]["median"] if best else None
        lines.append(f"| {model} end to end, median | <= {target:.0f} ms | "
                     + (f"{value:.0f} ms ({best['backend']})" if value is not None else "n/a") + " | "
                     + ("yes" if value is not None and value <= target else
                        f"no (+{value - target:.0f} ms, {value / target:.1f}x)" if value is not None else "?") + " |")
    tp = results.get("throughput", {})
    ips = [r for r in tp.get("in_process", []) if "images_per_s" in r]
    cli = [r for r in tp.get("runs", []) if r.get("returncode") == 0]
    best_ip = max(ips, key=lambda r: r["images_per_s"]) if ips else None
    best_cli = max(cli, key=lambda r: r["images_per_s"]) if cli else None
    if best_ip:
        v = best_ip["images_per_s"]
        lines.append(f"| classifier folder throughput (batch loop, model loaded) | >= {TARGET_CLASSIFIER_IPS:.0f} img/s | "
                     f"{v:.1f} img/s ({best_ip['backend']}, batch {best_ip['batch_size']}, {best_ip['workers']} workers) | "
                     + ("yes" if v >= TARGET_CLASSIFIER_IPS else f"no ({v / TARGET_CLASSIFIER_IPS:.0%} of target)") + " |")
    if best_cli:
        v = best_cli["images_per_s"]
        lines.append(f"| classifier folder throughput (`pneumo predict`, start-up included) | >= {TARGET_CLASSIFIER_IPS:.0f} img/s | "
                     f"{v:.1f} img/s ({best_cli['backend']}, batch {best_cli['batch_size']}, {best_cli['workers']} workers) | "
                     + ("yes" if v >= TARGET_CLASSIFIER_IPS else f"no ({v / TARGET_CLASSIFIER_IPS:.0%} of target)") + " |")
    xrv = results.get("xrv", {})
    if best_ip and "images_per_s" in xrv:
        ratio = best_ip["images_per_s"] / xrv["images_per_s"]
        lines.append(f"| vs torchxrayvision's pipeline | >= {TARGET_XRV_RATIO:.0f}x | {ratio:.1f}x "
                     f"({best_ip['images_per_s']:.1f} vs {xrv['images_per_s']:.1f} img/s) | "
                     + ("yes" if ratio >= TARGET_XRV_RATIO else "no") + " |")
    lines.append("")

    lines += ["### End-to-end latency per image (DICOM bytes -> Prediction, heatmap included)", "",
              "median / p95 in ms after warm-up; parts are medians; CPU = process CPU time per call (median, all "
              "threads: what the call costs the machine, little affected by waiting for a core); RSS = the process's peak.", "",
              "| model | backend | threads | total | CPU | decode | preprocess | inference | postprocess | load s | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["latency"]:
        if "total_ms" not in row:
            lines.append(f"| ? | ? | | error: {row.get('error')} {' '.join(row.get('stderr', []))[-200:]} | | | | | | | |")
            continue
        cpu = f"{row['cpu_ms']['median']:.0f}" if "cpu_ms" in row else "n/a"
        lines.append(f"| {row['model']} | {row['backend']} | {row.get('threads', '?')} | {_ms(row)} | {cpu} | "
                     f"{row['decode_ms']['median']:.0f} | "
                     f"{row['preprocess_ms']['median']:.0f} | {row['inference_ms']['median']:.0f} | "
                     f"{row['postprocess_ms']['median']:.0f} | {row['load_s']} | {row['peak_rss_mib']} |")
    lines.append("")

    lines += ["### Backends: PyTorch eager vs ONNX Runtime, model only (ms per image, median / p95)", "",
              "Same input (real images preprocessed to the serving size), same threads for both, calls interleaved "
              "so both see the same load; `infer` includes the family's shared post-processing.", "",
              "| threads | family | size | torch b1 | onnx b1 | speed-up b1 | torch b8 | onnx b8 | faster |",
              "|---|---|---|---|---|---|---|---|---|"]
    for be in results.get("backends", []):
        for family, row in be.get("families", {}).items():
            lines.append(f"| {be['threads']} | {family} | {row['size']} | {_ms(row, 'torch_b1')} | {_ms(row, 'onnx_b1')} | "
                         f"{row['speedup_b1']}x | {_ms(row, 'torch_b8')} | {_ms(row, 'onnx_b8')} | {row['faster_b1']} |")
        if "error" in be:
            lines.append(f"| error | {be['error']} | {' '.join(be.get('stderr', []))[-200:]} | | | | | | |")
    lines.append("")

    lines += ["### Folder throughput: `pneumo predict` over the rsna-mini DICOMs (classifier)", "",
              f"{tp.get('images', '?')} DICOMs (1024 x 1024 JPEG Baseline).", "",
              "| backend | batch | workers | wall s | img/s (whole command) | img/s (steady, by subtraction) | peak RSS MiB |",
              "|---|---|---|---|---|---|---|"]
    for r in tp.get("runs", []):
        lines.append(f"| {r['backend']} | {r['batch_size']} | {r['workers']} | {r['wall_s']} | {r['images_per_s']} | "
                     f"{r['steady_images_per_s']} | {r['peak_rss_mib']} |")
    lines += ["", "| backend | batch | workers | img/s (batch loop in-process, model loaded) |", "|---|---|---|---|"]
    for r in ips:
        lines.append(f"| {r['backend']} | {r['batch_size']} | {r['workers']} | {r['images_per_s']} |")
    lines.append("")

    lines += ["### API under concurrent clients (loopback, `pneumo serve --workers 2`)", "",
              "| model | backend | clients | requests | req/s | p50 ms | p95 ms | errors | server peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results.get("api", []):
        if "requests_per_s" not in r:
            lines.append(f"| error | {r.get('error')} | {' '.join(r.get('stderr', []))[-200:]} | | | | | | |")
            continue
        lat = r["latency_ms"] or {}
        lines.append(f"| {r['model']} | {r['backend']} | {r['clients']} | {r['requests']} | {r['requests_per_s']} | "
                     f"{lat.get('median', 'n/a')} | {lat.get('p95', 'n/a')} | {r['errors']} | {r['server_peak_rss_mib']} |")
    lines.append("")

    if "images_per_s" in xrv:
        lines += ["### torchxrayvision's own pipeline on the same DICOMs", "",
                  f"{xrv['pipeline']}, batch {xrv['batch_size']}, {xrv['threads']} threads, no network: "
                  f"{xrv['images']} images in {xrv['elapsed_s']} s = **{xrv['images_per_s']} img/s** "
                  f"(per image median {xrv['per_image_ms']['median']:.0f} ms, p95 {xrv['per_image_ms']['p95']:.0f} ms); "
                  f"peak RSS {xrv['peak_rss_mib']} MiB.", ""]
    if results.get("profiles"):
        lines += ["Profiles of the models over their target: "
                  + ", ".join(f"`{p}`" for p in results["profiles"].values()) + ".", ""]
    lines += ["### Also running", "", "At start: " + ("; ".join(results["busy_at_start"]) or "nothing above 5 % CPU"),
              "", "At end: " + ("; ".join(results["busy_at_end"]) or "nothing above 5 % CPU"), "", END]
    return "\n".join(lines)


def update_results_md(section: str) -> None:
    path = BENCH / "RESULTS.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
