"""Median decode time of ``pneumo.io.read_xray`` from bytes, per encoding, and the machine it ran on.

    .venv/bin/python bench/decode.py --repeats 30 --write bench/RESULTS.md

Cases: JPEG Baseline 8-bit 1024x1024 (rsna-mini; also with pylibjpeg instead of the preferred Pillow plugin,
for comparison), the same pixels uncompressed (Explicit VR LE, in memory), JPEG 2000 (RG1_J2KI, 1841x1955,
15-bit) and its uncompressed twin (RG1_UNCI). Timings include sniffing, header checks, decoding and the
intensity policy. ``--write`` replaces (or appends) the ``## Decoding`` section of the results file only.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from pneumo.io import dicom as dicom_reader
from pneumo.io import read_xray

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("PNEUMO_SHARED_DATA", REPO.parent / "shared" / "data"))


def uncompressed_copy(data: bytes) -> bytes:
    """The same DICOM with its pixel data decompressed to Explicit VR Little Endian."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.decompress(decoding_plugin="pylibjpeg")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def median_ms(data: bytes, repeats: int) -> tuple[float, float]:
    """(median, min) wall time in ms of read_xray(data) over ``repeats`` runs after one warm-up."""
    read_xray(data)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read_xray(data)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def machine() -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    load = " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"- CPU: {model}; nproc (usable cores): {usable}; {platform.system()} {platform.machine()}",
        f"- load average (1/5/15 min) when the run ended: {load} (the machine is shared: medians include contention)",
        f"- Python {platform.python_version()}, torch {version('torch')}, pydicom {version('pydicom')}, "
        f"Pillow {version('pillow')}, numpy {version('numpy')}, pylibjpeg-libjpeg {version('pylibjpeg-libjpeg')}, "
        f"pylibjpeg-openjpeg {version('pylibjpeg-openjpeg')}",
    ]


def run(data_dir: Path, repeats: int, files: int) -> list[str]:
    rsna = sorted((data_dir / "rsna-mini" / "stage_2_train_images").glob("*.dcm"))[:files]
    samples = data_dir / "dicom-samples"
    if not rsna or not (samples / "RG1_J2KI.dcm").exists():
        raise SystemExit(f"real data not found under {data_dir} (pass --data)")
    rsna_bytes = [p.read_bytes() for p in rsna]
    rows: list[tuple[str, str, float, float]] = []

    def per_image(label: str, size: str, blobs: list[bytes]) -> None:
        results = [median_ms(b, repeats) for b in blobs]
        rows.append((label, size, statistics.median(r[0] for r in results), min(r[1] for r in results)))

    per_image("JPEG Baseline 8-bit (rsna-mini), Pillow plugin", "1024x1024", rsna_bytes)
    preferred = dict(dicom_reader.PREFERRED_PLUGIN)
    try:
        dicom_reader.PREFERRED_PLUGIN.clear()  # pydicom's default order: pylibjpeg first
        per_image("JPEG Baseline 8-bit (rsna-mini), pylibjpeg (comparison)", "1024x1024", rsna_bytes)
    finally:
        dicom_reader.PREFERRED_PLUGIN.update(preferred)
    per_image("Uncompressed 8-bit (rsna-mini pixels, Explicit VR LE)", "1024x1024", [uncompressed_copy(b) for b in rsna_bytes])
    per_image("JPEG 2000 15-bit MONOCHROME1 (RG1_J2KI)", "1841x1955", [(samples / "RG1_J2KI.dcm").read_bytes()])
    per_image("Uncompressed 15-bit MONOCHROME1 (RG1_UNCI)", "1841x1955", [(samples / "RG1_UNCI.dcm").read_bytes()])

    lines = [
        "## Decoding",
        "",
        f"`pneumo.io.read_xray(bytes)` wall time per image: median over {repeats} repeats after a warm-up "
        f"(for rsna-mini: the median of the per-file medians over {len(rsna)} files), single process, "
        "includes sniffing, header checks, decoding and the intensity policy.",
        "",
        "| encoding | size (W x H) | median ms | best ms |",
        "|---|---|---|---|",
        *[f"| {label} | {size} | {med:.1f} | {best:.1f} |" for label, size, med, best in rows],
        "",
        "Machine:",
        *machine(),
        "",
        f"Reproduce: `.venv/bin/python bench/decode.py --repeats {repeats} --files {files} --write bench/RESULTS.md`",
        "",
    ]
    return lines


def write_section(path: Path, lines: list[str]) -> None:
    """Replace the ``## Decoding`` section of ``path`` (up to the next ``## `` heading) or append it."""
    section = "\n".join(lines)
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    pattern = re.compile(r"^## Decoding\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (rsna-mini, dicom-samples)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per file (>= 20 recommended)")
    parser.add_argument("--files", type=int, default=10, help="rsna-mini files to time")
    parser.add_argument("--write", type=Path, default=None, help="results markdown file to update")
    args = parser.parse_args(argv)
    lines = run(args.data, args.repeats, args.files)
    print("\n".join(lines))
    if args.write:
        write_section(args.write, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
