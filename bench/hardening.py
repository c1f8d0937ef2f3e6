"""Cost of issue 17's hostile requests against the API with the shipped models: peak memory above steady state
and wall time per probe, each in a fresh process (so ``ru_maxrss`` is that probe's own peak).

Steady state = the app after one real rsna-mini radiograph was analysed (default model) and its overlay with
heatmap rendered. Probe files are built with ``pneumo.io.probes`` into a temporary folder first, so the same
files can be sent to an older tree (``--pythonpath OTHER/src``) to measure "before".
Usage: ``python bench/hardening.py [--probes NAME ...] [--pythonpath SRC] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PROBES = ("real_radiograph", "bomb_png_post", "bomb_png_overlay_heatmap", "five_parallel_bomb_overlays",
          "large_radiograph_overlay_heatmap", "five_parallel_large_overlays", "zeros_dicom_60mib", "pixeldata_overrun", "tiny_black_png", "rgb_noise_png")

CHILD = r'''
import json, resource, sys, threading, time
from pathlib import Path
from fastapi.testclient import TestClient
from pneumo.api import ApiSettings, create_app

probe, folder, models, real = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def post(client, data, name):
    return client.post("/v1/predictions", files={"file": (name, data, "application/octet-stream")})
with TestClient(create_app(ApiSettings(model_dir=models, workers=2))) as client:
    warm = post(client, real.read_bytes(), "real.dcm").json()
    client.get(f"/v1/predictions/{warm['id']}/overlay.png", params={"heatmap": "true"})
    steady = rss()
    start = time.perf_counter()
    statuses = []
    if probe == "real_radiograph":
        statuses.append(post(client, real.read_bytes(), "real2.dcm").status_code)
    elif "bomb" in probe or "large" in probe:
        data = (folder / ("bomb.png" if "bomb" in probe else "large.png")).read_bytes()
        n = 5 if probe.startswith("five") else 1
        ids = []
        for k in range(n):
            r = post(client, data, f"bomb{k}.png"); statuses.append(r.status_code)
            ids.append(r.json().get("id"))
        if probe != "bomb_png_post" and all(ids):
            def get(i):
                statuses.append(client.get(f"/v1/predictions/{i}/overlay.png", params={"heatmap": "true"}).status_code)
            threads = [threading.Thread(target=get, args=(i,)) for i in ids]
            [t.start() for t in threads]; [t.join() for t in threads]
    else:
        name = {"zeros_dicom_60mib": "zeros.dcm", "pixeldata_overrun": "overrun.dcm",
                "tiny_black_png": "tiny.png", "rgb_noise_png": "noise.png"}[probe]
        r = post(client, (folder / name).read_bytes(), name); statuses.append(r.status_code)
        try: statuses.append(r.json().get("error", {}).get("code") or r.json().get("probability"))
        except Exception: pass
    seconds = time.perf_counter() - start
    print(json.dumps({"probe": probe, "steady_mib": round(steady), "peak_mib": round(rss()),
                      "delta_mib": round(rss() - steady), "seconds": round(seconds, 2), "answers": statuses}))
'''


def write_probes(folder: Path, real: Path) -> None:
    """The probe files; ``large.png``: ``real`` scaled up to 7745 x 7745 (a 60 MP image that is a radiograph,
    so it reaches the model and the renders; the 1-bit bomb is blank and is refused before any model)."""
    import io

    from PIL import Image

    from pneumo.io import probes, read_xray

    (folder / "bomb.png").write_bytes(probes.one_bit_png(7745))
    (folder / "zeros.dcm").write_bytes(probes.preamble_and_zeros(60))
    (folder / "overrun.dcm").write_bytes(probes.pixel_data_overrun(200_000_000))
    (folder / "tiny.png").write_bytes(probes.tiny_black_png(1))
    (folder / "noise.png").write_bytes(probes.rgb_noise_png(512))
    pixels = (read_xray(real).pixels * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((7745, 7745), Image.Resampling.NEAREST).save(buffer, format="PNG", compress_level=9)
    (folder / "large.png").write_bytes(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probes", nargs="+", default=list(PROBES), choices=PROBES)
    parser.add_argument("--pythonpath", default=str(ROOT / "src"), help="source tree to measure (default: this one)")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    real = sorted((SHARED / "rsna-mini" / "stage_2_train_images").glob("*.dcm"))[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="pneumo-probes-") as tmp:
        write_probes(Path(tmp), real)
        env = {**os.environ, "PYTHONPATH": args.pythonpath, "PNEUMO_TORCH_THREADS": "2"}
        for probe in args.probes:
            try:
                done = subprocess.run([sys.executable, "-c", CHILD, probe, tmp, str(args.models), str(real)],
                                      capture_output=True, text=True, env=env, timeout=args.timeout)
                line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
                result = json.loads(line) if line.startswith("{") else {"probe": probe, "error": done.stderr[-500:]}
            except subprocess.TimeoutExpired:
                result = {"probe": probe, "error": f"timed out after {args.timeout:.0f} s"}
            print(json.dumps(result), flush=True)
            results.append(result)
    report = {"machine": f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()}",
              "tree": args.pythonpath, "results": results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
