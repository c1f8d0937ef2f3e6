"""How the data layer scales: a Kaggle-layout replica of N patients (hard links of rsna-mini DICOMs under new
patientIds + a generated labels CSV), then, each in a fresh subprocess so peak memory is its own:

  read     read_rsna(replica) with DICOM headers: seconds, peak RSS
  cache    build_cache(records, 256 px, workers=1): seconds, images/s, bytes on disk, peak RSS
  workers  the same build on the first M records with workers=1 and workers=2 (does a 2nd process help?)
  iterate  one augmented epoch of ImageDataset over the cache (DataLoader, batch 32, 0 workers):
           seconds, RSS before/after, peak RSS
  mini     build_cache of shared rsna-mini (210 patients) at 256 px

and a linear extrapolation to the challenge's 26,684 training patients. Usage:

    .venv/bin/python bench/data_scale.py --source ../shared/data/rsna-mini --n 3000 [--size 256] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL_CHALLENGE = 26_684


def _memory() -> dict[str, float]:
    """Resident memory of this process, MB (Linux /proc): current, peak, and its anonymous (heap) and
    file-backed (memory-mapped cache pages, shared and reclaimable) parts."""
    names = {"VmRSS:": "rss_mb", "VmHWM:": "peak_rss_mb", "RssAnon:": "anon_mb", "RssFile:": "file_mb"}
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0] + ":"
        if key in names:
            values[names[key]] = round(int(line.split()[1]) / 1024, 1)
    return values


def stage(name: str, data: Path, size: int, cache_dir: Path, subset: int, workers: int) -> dict:
    from pneumo.data.cache import IMAGES_FILE, build_cache, ensure_cache
    from pneumo.data.rsna import read_rsna

    if name == "iterate":  # torch (~670 MB RSS on import here) only where the stage needs it
        import torch

        torch.set_num_threads(1)
        from pneumo.data.augment import AugmentConfig
        from pneumo.data.datasets import ImageDataset, collate

    result: dict = {"stage": name, "baseline": _memory()}
    if name == "read":
        start = time.perf_counter()
        records = read_rsna(data)
        result.update(seconds=time.perf_counter() - start, records=len(records))
    elif name in ("cache", "workers", "mini"):
        records = read_rsna(data, limit=subset or None)
        start = time.perf_counter()
        cache = build_cache(records, size, data_dir=data, cache_dir=cache_dir, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        result.update(
            seconds=seconds,
            images=len(cache),
            workers=workers,
            images_per_s=len(cache) / seconds,
            disk_mb=(cache.directory / IMAGES_FILE).stat().st_size / 1e6
            + (cache.directory / "meta.json").stat().st_size / 1e6,
        )
    elif name == "iterate":
        records = read_rsna(data, read_headers=False)
        cache = ensure_cache(records, size, data_dir=data, cache_dir=cache_dir, progress=False)
        dataset = ImageDataset(records, cache, augment=AugmentConfig(), seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(0))
        before = _memory()
        start = time.perf_counter()
        checksum = 0.0
        for images, _targets in loader:
            checksum += float(images.mean())
        result.update(seconds=time.perf_counter() - start, items=len(dataset), before=before,
                      items_per_s=len(dataset) / (time.perf_counter() - start), checksum=round(checksum, 3))
    result["end"] = _memory()
    return result


def run_stage(name: str, args: argparse.Namespace, data: Path, cache_dir: Path, subset: int = 0, workers: int = 1) -> dict:
    command = [sys.executable, __file__, "--stage", name, "--data", str(data), "--size", str(args.size),
               "--cache-dir", str(cache_dir), "--subset", str(subset), "--workers", str(workers)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="rsna-mini (Kaggle layout) to replicate")
    parser.add_argument("--n", type=int, default=3000, help="patients in the replica")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers-subset", type=int, default=420, help="images for the 1-vs-2 worker comparison")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--subset", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args.stage, args.data, args.size, args.cache_dir, args.subset, args.workers)))
        return 0
    if args.source is None:
        parser.error("--source is required")

    from pneumo.data.replica import replicate
    from pneumo.data.rsna import read_rsna

    work = Path(tempfile.mkdtemp(prefix="pneumo-data-scale-"))
    try:
        start = time.perf_counter()
        replica = replicate(read_rsna(args.source, read_headers=False), work / "rsna", args.n, seed=0, link=True)
        print(f"replica of {args.n} patients in {time.perf_counter() - start:.1f} s at {replica}", flush=True)
        results = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "load_avg_at_start": os.getloadavg()},
            "n": args.n,
            "size": args.size,
            "read": run_stage("read", args, replica, work / "cache"),
            "cache": run_stage("cache", args, replica, work / "cache"),
            "workers_1": run_stage("workers", args, replica, work / "w1", args.workers_subset, 1),
            "workers_2": run_stage("workers", args, replica, work / "w2", args.workers_subset, 2),
            "iterate": run_stage("iterate", args, replica, work / "cache"),
            "mini": run_stage("mini", args, Path(args.source), work / "mini"),
        }
        results["machine"]["load_avg_at_end"] = os.getloadavg()
        factor = FULL_CHALLENGE / args.n
        results["extrapolated_26684"] = {
            "read_s": results["read"]["seconds"] * factor,
            "cache_build_s": results["cache"]["seconds"] * factor,
            "cache_disk_gb": results["cache"]["disk_mb"] * factor / 1e3,
            "epoch_iterate_s": results["iterate"]["seconds"] * factor,
        }
        print(json.dumps(results["extrapolated_26684"]))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
