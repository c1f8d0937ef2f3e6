"""`pneumo serve` and `pneumo demo` as real processes on loopback ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from frontend_helpers import free_port, make_model_dir

from pneumo.samples import sample_dir, sample_files

pytestmark = pytest.mark.subprocess  # every test here runs `python -m pneumo` in a child process


def _env() -> dict[str, str]:
    return {**os.environ, "PNEUMO_TORCH_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _pneumo(*args: str) -> list[str]:
    return [sys.executable, "-m", "pneumo", *args]


def _wait_healthy(process: subprocess.Popen, url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(url + "healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("server did not answer /healthz in time")


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def test_demo_without_models_decodes_the_bundled_samples(tmp_path: Path) -> None:
    result = subprocess.run(_pneumo("demo", "--model-dir", str(tmp_path)), capture_output=True, text=True,
                            timeout=120, env=_env())
    assert result.returncode == 0, result.stderr
    assert "no trained models" in result.stdout
    for path in sample_files():
        assert re.search(rf"{re.escape(path.name)}: dicom, 1024x1024 px", result.stdout)


def test_demo_once_predicts_the_samples_with_the_ensemble(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, families=("chexnet",), histories=False)  # classifier-only ensemble: quick
    result = subprocess.run(_pneumo("demo", "--once", "--model-dir", str(model_dir)), capture_output=True,
                            text=True, timeout=180, env=_env())
    assert result.returncode == 0, result.stderr
    lines = re.findall(r"ensemble ensemble-\S+: pneumonia probability ([0-9.]+) %, (\d+) box", result.stdout)
    assert len(lines) == len(sample_files()) == 3
    assert all(0.0 <= float(p) <= 100.0 for p, _ in lines)


@pytest.mark.slow
def test_serve_and_demo_serve_the_api(tmp_path: Path) -> None:
    model_dir = make_model_dir(tmp_path, families=("chexnet",), ensemble=False, histories=False)  # quick to load
    port = free_port()
    serve = subprocess.Popen(_pneumo("serve", "--port", str(port), "--model-dir", str(model_dir), "--workers", "1"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_healthy(serve, url)
        names = {m["name"] for m in httpx.get(url + "v1/models", timeout=30).json()["models"]}
        assert names == {"chexnet"}
        assert httpx.get(url + "readyz", timeout=30).status_code == 200
    finally:
        output = _stop(serve)
    assert url in output and serve.returncode is not None

    port = free_port()
    demo = subprocess.Popen(_pneumo("demo", "--port", str(port), "--model-dir", str(model_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_healthy(demo, url)
        sample = sample_files()[0]
        body = httpx.post(url + "v1/predictions?model=chexnet", files={"file": (sample.name, sample.read_bytes())},
                          timeout=60).json()
        assert body["ground_truth"] is not None  # demo serves the samples' labels
        assert "<title>" in httpx.get(url, timeout=10).text
    finally:
        output = _stop(demo)
    assert f"open {url}" in output
    assert (sample_dir() / "labels.csv").is_file()
