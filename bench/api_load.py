"""The REST API under concurrent clients on loopback: requests/s and latency percentiles.

    .venv/bin/python bench/api_load.py --model-dir DIR [--model chexnet] [--backend onnx] [--clients 8] [--requests 96]

Starts ``pneumo serve`` (a separate process, loopback only, a free port), waits until ``/readyz`` says the
model is loaded, sends ``--warmup`` requests, then ``--requests`` POST /v1/predictions (a bounded number,
split over ``--clients`` threads, each with its own keep-alive connection, each uploading a different rsna-mini
DICOM). Reports requests/s over the timed phase, p50/p95/max latency, HTTP errors and the server's peak RSS
(VmHWM), then stops the server.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchlib import REPO, rsna_dicoms, summary, write_json


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--model", default="chexnet")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--server-workers", type=int, default=2, help="pneumo serve --workers")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "pneumo", "serve", "--host", "127.0.0.1", "--port", str(port), "--model-dir",
               str(args.model_dir), "--workers", str(args.server_workers), "--log-level", "warning"]
    env = {**os.environ, "PNEUMO_BACKEND": args.backend}
    if args.backend != "auto":
        command += ["--backend", args.backend]
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    files = rsna_dicoms()
    blobs = [(f.name, f.read_bytes()) for f in files]
    url = f"{base}/v1/predictions"
    params = {"model": args.model}
    try:
        deadline = time.time() + 300
        with httpx.Client(timeout=30) as probe:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"pneumo serve exited: {server.stderr.read()[-2000:]}")
                try:
                    if probe.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("pneumo serve did not start within 300 s")
                time.sleep(0.3)
            t0 = time.perf_counter()
            for name, blob in blobs[: args.warmup]:  # loads the model and warms it up
                response = probe.post(url, params=params, files={"file": (name, blob, "application/dicom")}, timeout=300)
                response.raise_for_status()
            warm_s = time.perf_counter() - t0
        per_client = [args.requests // args.clients + (1 if i < args.requests % args.clients else 0)
                      for i in range(args.clients)]
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        start_gate = threading.Barrier(args.clients + 1)

        def client(index: int, count: int) -> None:
            with httpx.Client(timeout=300) as http:
                start_gate.wait()
                for k in range(count):
                    name, blob = blobs[(index * 31 + k) % len(blobs)]
                    t = time.perf_counter()
                    try:
                        response = http.post(url, params=params, files={"file": (name, blob, "application/dicom")})
                        ok = response.status_code == 200
                        detail = f"HTTP {response.status_code}"
                    except httpx.HTTPError as error:
                        ok, detail = False, type(error).__name__
                    elapsed = (time.perf_counter() - t) * 1000
                    with lock:
                        (latencies.append(elapsed) if ok else errors.append(detail))

        threads = [threading.Thread(target=client, args=(i, n)) for i, n in enumerate(per_client)]
        for thread in threads:
            thread.start()
        start_gate.wait()
        t_start = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - t_start
        write_json(args.json, {
            "model": args.model, "backend": args.backend, "clients": args.clients, "requests": args.requests,
            "server_workers": args.server_workers, "warmup_s": round(warm_s, 2), "elapsed_s": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 2), "latency_ms": summary(latencies) if latencies else None,
            "errors": len(errors), "error_kinds": sorted(set(errors)), "server_peak_rss_mib": vm_hwm_mib(server.pid),
        })
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
