"""Shared helpers of the benchmark scripts: the machine, the data, the models under test, statistics.

Models under test (``build_model_dir``): a shipped checkpoint under ``models/`` when it exists, else a
random-init checkpoint built from ``configs/<family>.yaml`` (its ``image_size`` and ``model`` section, i.e. the
serving size and architecture training uses; speed does not depend on the weights). Every checkpoint is
exported to ONNX beside it; ``ensemble.json`` is the shipped one or unet + maskrcnn boxes with a chexnet gate.
Nothing here downloads anything.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("chexnet", "unet", "maskrcnn")
MODELS = (*FAMILIES, "ensemble")
DEFAULT_ENSEMBLE = {
    "type": "ensemble", "format_version": 1, "name": "ensemble",
    "members": [{"model": "unet", "weight": 1.0}, {"model": "maskrcnn", "weight": 1.0}],
    "classifier": {"model": "chexnet", "weight": 1.0},
}


# CPU flags that decide which kernels ONNX Runtime / OpenVINO use: "AMD EPYC" alone names machines 2-3x apart
SPEED_FEATURES = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8"}


def shared_data() -> Path:
    return Path(os.environ.get("PNEUMO_SHARED_DATA", REPO.parent / "shared" / "data"))


def rsna_dicoms() -> list[Path]:
    """The 210 rsna-mini DICOMs, sorted."""
    folder = shared_data() / "rsna-mini" / "stage_2_train_images"
    files = sorted(folder.glob("*.dcm"))
    if not files:
        raise SystemExit(f"no DICOMs under {folder} (set PNEUMO_SHARED_DATA)")
    return files


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and its speed-relevant flags (``SPEED_FEATURES``) from /proc/cpuinfo."""
    cpu, features = platform.processor() or "unknown", []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return cpu, features
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return cpu, sorted(set(flags) & SPEED_FEATURES)


def machine() -> dict[str, Any]:
    """CPU model, cores usable, RAM, versions, load average (what else was running matters on a shared box)."""
    import onnxruntime
    import torch

    cpu, features = cpu_info()
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu, "cpu_features": features, "cores": len(os.sched_getaffinity(0)), "ram_gib": ram_gib,
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def other_processes(limit: int = 6) -> list[str]:
    """The busiest other processes right now (name and %CPU), to say what else was running."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,comm,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out:
        pid, pcpu, comm, *args = line.split(None, 3)
        if int(pid) == os.getpid() or float(pcpu) < 5:
            continue
        rows.append(f"{pcpu}% {' '.join(args)[:90]}")
        if len(rows) >= limit:
            break
    return rows


def fold_records(fold: int, folds: int = 5) -> tuple[list, list]:
    """(train, held-out) RSNA records of CV fold ``fold`` of the shipped run (rsna-mini + rsna-plus, patient-level)."""
    import tempfile

    from pneumo.pipeline.cv import Pipeline, PipelineSettings

    data = shared_data()
    settings = PipelineSettings(root=REPO, work=Path(tempfile.mkdtemp()), data=(data / "rsna-mini", data / "rsna-plus"),
                                folds=folds)
    return Pipeline(settings, {}, echo=lambda line: None).fold_split(fold)


def shipped_fold(family: str = "chexnet") -> int:
    """The CV fold whose training side made the shipped ``family`` checkpoint (``models/cv_summary.json``)."""
    summary = json.loads((REPO / "models" / "cv_summary.json").read_text())
    return int(summary["shipped"][family]["fold"])


def summary(values_ms: list[float]) -> dict[str, float]:
    """median, p95, mean, min, n of latencies in ms."""
    ordered = sorted(values_ms)
    p95 = ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered) + 0.5)) - 1))]
    return {"median": round(statistics.median(ordered), 2), "p95": round(p95, 2),
            "mean": round(statistics.fmean(ordered), 2), "min": round(ordered[0], 2), "n": len(ordered)}


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB: ``VmHWM`` of /proc/self/status (``ru_maxrss`` survives
    ``exec``, so a child started by a big parent would report the parent's peak), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def build_model_dir(dest: Path, *, export: bool = True, families: tuple[str, ...] = FAMILIES) -> dict[str, Any]:
    """Fill ``dest`` with a checkpoint (+ ONNX export) per family and an ensemble spec -> what each one is."""
    import torch

    from pneumo.export.exporter import export_checkpoint
    from pneumo.models import create_model
    from pneumo.models.checkpoint import save_checkpoint
    from pneumo.models.registry import resolve_model_config

    dest.mkdir(parents=True, exist_ok=True)
    shipped_dir = REPO / "models"
    origin: dict[str, Any] = {}
    for family in families:
        shipped = shipped_dir / f"{family}.pt"
        target = dest / f"{family}.pt"
        if shipped.is_file():
            shutil.copy2(shipped, target)
            origin[family] = {"source": "shipped", "path": str(shipped.relative_to(REPO))}
        else:
            config_file = REPO / "configs" / f"{family}.yaml"
            values = _yaml(config_file) if config_file.is_file() else {}
            size = int(values.get("image_size", 256))
            model_values = dict(values.get("model") or {})
            if family == "maskrcnn":
                model_values["image_size"] = size
            config = resolve_model_config(family, model_values)
            if hasattr(config, "pretrained"):  # no download, no wheel weights needed: speed only
                config = dataclasses.replace(config, pretrained=False)
            gen_state = torch.random.get_rng_state()
            torch.manual_seed(0)
            model = create_model(family, config)
            torch.random.set_rng_state(gen_state)
            save_checkpoint(target, model, config=config, preprocess={"size": size}, thresholds={}, metrics={},
                            data_fingerprint="bench-random-init")
            origin[family] = {"source": "random-init", "config": f"configs/{family}.yaml", "size": size,
                              "arch": model_values}
        if export:
            report = export_checkpoint(target)
            origin[family]["export_s"] = round(report.seconds, 1)
            origin[family]["onnx_mb"] = round(report.size_bytes / 1e6, 1)
    spec = shipped_dir / "ensemble.json"
    if spec.is_file():
        shutil.copy2(spec, dest / "ensemble.json")
        origin["ensemble"] = {"source": "shipped"}
    else:
        (dest / "ensemble.json").write_text(json.dumps(DEFAULT_ENSEMBLE, indent=1), encoding="utf-8")
        origin["ensemble"] = {"source": "default spec: unet + maskrcnn boxes, chexnet classifier"}
    return origin


def torch_only_copy(model_dir: Path, dest: Path) -> Path:
    """A copy of ``model_dir`` without the ONNX exports (so the service's ``auto`` backend runs torch)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.suffix != ".onnx":
            shutil.copy2(path, dest / path.name)
    return dest


#: run the pneumo CLI in a child and report that child's own peak RSS on stderr (threads included)
CLI_WITH_RSS = (
    "import sys\n"
    "from pneumo.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
    "print('PEAK_RSS_KIB', hwm[0] if hwm else 0, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> dict[str, Any]:
    """Run ``pneumo ARGS`` in a fresh interpreter -> {returncode, wall_s, peak_rss_mib, stderr tail}."""
    import time

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CLI_WITH_RSS, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=REPO, timeout=timeout)
    wall = time.perf_counter() - start
    peak = None
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK_RSS_KIB"):
            peak = round(int(line.split()[1]) / 1024, 1)
    return {"returncode": proc.returncode, "wall_s": round(wall, 2), "peak_rss_mib": peak,
            "stderr_tail": proc.stderr.strip().splitlines()[-3:]}


def write_json(path: Path | None, data: Any) -> None:
    text = json.dumps(data, indent=1, default=str)
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
