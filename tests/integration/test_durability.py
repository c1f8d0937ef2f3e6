"""`kill -9` of a real `pneumo serve` during a burst of uploads leaves a consistent database (SQLite, and a
real PostgreSQL server): SQLite's integrity check passes, every row is complete with its files present, every
acknowledged result is there, and after a restart each one answers exactly as it did before."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
REQUIRED = ("id", "created_at", "requested_by", "source_format", "file_sha256", "submission_id", "model",
            "model_version", "thresholds", "probability", "flagged", "boxes", "timings", "warnings", "extra",
            "payload", "image_sha256", "image_height", "image_width", "review_status")


def _helpers():
    spec = importlib.util.spec_from_file_location("frontend_helpers", REPO / "tests" / "api" / "frontend_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_server(model_dir: Path, data_dir: Path, port: int, log: Path, database: str | None) -> subprocess.Popen:
    env = {**os.environ, "PNEUMO_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("PNEUMO_DATABASE_URL", None)
    handle = open(log, "ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "pneumo", "serve", "--port", str(port), "--model-dir", str(model_dir),
         "--workers", "2", "--log-level", "warning", *(["--database", database] if database else [])], env=env, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    pytest.fail("pneumo serve did not become ready: " + log.read_text()[-2000:])


def check_consistent(data_dir: Path, database: str | None) -> list[str]:
    """Integrity + completeness of the database after the crash; returns the stored result ids."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database or f"sqlite:///{data_dir / 'pneumo.db'}")
    try:
        conn = engine.connect()
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        rows = [row._mapping for row in conn.execute(text("SELECT * FROM analyses"))]
        for row in rows:
            assert all(row[name] is not None for name in REQUIRED), dict(row)
            payload = row["payload"]
            assert (json.loads(payload) if isinstance(payload, str) else payload)["id"] == row["id"]
            for sha, suffix in ((row["image_sha256"], ".png"), (row["heatmap_sha256"], ".npy")):
                if sha is None:
                    continue
                blob = data_dir / "blobs" / sha[:2] / f"{sha}{suffix}"
                assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha
        ids = [row["id"] for row in rows]
        analysed = [r[0] for r in conn.execute(text("SELECT result_id FROM audit WHERE action = 'analyse'"))]
        assert sorted(analysed) == sorted(ids)  # the row and its audit event commit together
        conn.close()
        return ids
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_during_a_burst_of_writes_leaves_a_consistent_database(tmp_path: Path, backend: str,
                                                                    request: pytest.FixtureRequest) -> None:
    database = None if backend == "sqlite" else request.getfixturevalue("postgres_url")
    helpers = _helpers()
    model_dir = helpers.make_model_dir(tmp_path / "models", histories=False)
    data_dir = tmp_path / "data"
    port = helpers.free_port()
    server = start_server(model_dir, data_dir, port, tmp_path / "server.log", database)
    acknowledged: dict[str, dict] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def burst(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(10_000):
                if stop.is_set():
                    return
                data = helpers.dicom_bytes(patient_id=f"D{worker}-{i}")
                try:
                    response = client.post("/v1/predictions?model=chexnet", files={"file": ("x.dcm", data)})
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 200:
                    with lock:
                        acknowledged[response.json()["id"]] = response.json()

    threads = [threading.Thread(target=burst, args=(w,), daemon=True) for w in range(4)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acknowledged) >= 12, "the burst did not get going"
        os.kill(server.pid, signal.SIGKILL)  # mid-burst: requests are being decoded, predicted and stored
        server.wait(timeout=30)
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
        for thread in threads:
            thread.join(timeout=30)

    stored = check_consistent(data_dir, database)
    assert set(acknowledged) <= set(stored)  # an answered upload was durable before its answer
    print(f"{backend}: {len(acknowledged)} uploads acknowledged before the kill, {len(stored)} stored")

    server = start_server(model_dir, data_dir, port, tmp_path / "server.log", database)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for rid, body in acknowledged.items():
                assert client.get(f"/v1/predictions/{rid}").json() == body
                assert client.get(f"/v1/predictions/{rid}/overlay.png").status_code == 200
            listed = client.get("/v1/predictions", params={"limit": 200}).json()["items"]
            assert {item["id"] for item in listed} == set(stored)
    finally:
        server.terminate()
        server.wait(timeout=30)
