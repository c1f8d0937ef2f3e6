"""Issue 17 probes against the API, one test per defect (each failed before its fix)."""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from frontend_helpers import dicom_bytes, tiny_service
from PIL import Image

from pneumo.api import ApiSettings, create_app
from pneumo.api.app import log_safe
from pneumo.api.auth import FailureLimiter
from pneumo.api.errors import ApiError
from pneumo.api.state import Cancellation, InferencePool
from pneumo.errors import ConfigError
from pneumo.io import probes


def error_of(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def post(client: TestClient, data: bytes, name: str = "x.png", **params: object):
    return client.post("/v1/predictions", params=params, files={"file": (name, data, "application/octet-stream")})


@pytest.fixture(scope="module")
def client(model_dir: Path) -> TestClient:
    settings = ApiSettings(model_dir=model_dir, max_upload_mb=4, workers=1)
    with TestClient(create_app(settings, service_factory=tiny_service)) as test_client:
        yield test_client


def test_non_radiographs_get_422_with_a_reason(client: TestClient) -> None:
    for data, reason in ((probes.tiny_black_png(1), "1x1 pixels"), (probes.rgb_noise_png(256), "colour image")):
        response = post(client, data, model="chexnet")
        assert error_of(response) == (422, "not_chest_radiograph")
        assert reason in response.json()["error"]["message"]


def test_bomb_png_is_answered_in_original_pixels_with_bounded_renders(client: TestClient, rsna_cases: dict) -> None:
    # a real radiograph scaled up to 6144 x 6144 (reduced on read to 2048), boxes in the 6144 px frame
    from pneumo.io import read_xray

    pixels = (read_xray(rsna_cases["positive"]).pixels * 255).astype(np.uint8)
    big = Image.fromarray(pixels).resize((6144, 6144), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG", compress_level=1)
    response = post(client, buffer.getvalue(), model="unet")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["image_width"], body["image_height"]) == (6144, 6144)
    assert any("reduced" in w for w in body["warnings"])
    for box in body["boxes"]:
        assert 0 <= box["x"] and box["x"] + box["width"] <= 6144 + 1e-3
    image = Image.open(io.BytesIO(client.get(f"/v1/predictions/{body['id']}/image.png").content))
    overlay = Image.open(io.BytesIO(client.get(f"/v1/predictions/{body['id']}/overlay.png?heatmap=true").content))
    assert image.size == overlay.size and image.size[0] * image.size[1] <= 1536 * 1536


def test_zeros_dicom_is_refused_fast_through_the_api(client: TestClient) -> None:
    data = probes.preamble_and_zeros(3)  # 3 MiB: under this client's 4 MiB upload limit
    start = time.perf_counter()
    assert error_of(post(client, data, "z.dcm")) == (400, "invalid_image")
    assert time.perf_counter() - start < 5.0


def test_readyz_says_busy_when_the_queue_is_full(client: TestClient) -> None:
    pool: InferencePool = client.app.state.pneumo.pool
    saved = pool.pending
    pool.pending = pool.max_pending
    try:
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["status"] == "busy"
        assert "queue" in response.json()["detail"] and response.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 200
    finally:
        pool.pending = saved
    assert client.get("/readyz").json()["status"] == "ready"


def test_queued_work_is_dropped_on_disconnect_and_past_its_deadline() -> None:
    ran: list[str] = []
    release = threading.Event()

    def slow(name: str) -> str:
        ran.append(name)
        release.wait(5)
        return name

    async def scenario() -> tuple[object, object, list[str]]:
        pool = InferencePool(workers=1, max_queue=4, poll_s=0.02)
        outcomes: dict[str, object] = {}

        async def call(name: str, token: Cancellation, gone: bool = False) -> None:
            async def disconnected() -> bool:
                return gone
            try:
                outcomes[name] = await pool.run(slow, name, token=token, disconnected=disconnected)
            except ApiError as error:
                outcomes[name] = (error.status, error.code)

        async with anyio.create_task_group() as group:
            group.start_soon(call, "first", Cancellation(10))
            await anyio.sleep(0.05)
            group.start_soon(call, "hung-up", Cancellation(10), True)
            group.start_soon(call, "late", Cancellation(0.2))
            await anyio.sleep(0.5)
            release.set()
        return outcomes["hung-up"], outcomes["late"], list(ran)

    hung_up, late, ran_names = anyio.run(scenario)
    assert hung_up == (499, "client_closed_request")
    assert late == (503, "deadline_exceeded")
    assert ran_names == ["first"]  # neither queued request ever started


def test_running_work_stops_at_its_next_check() -> None:
    token = Cancellation(None)
    token.check()
    token.cancel()
    with pytest.raises(ApiError) as info:
        token.check()
    assert info.value.status == 499
    expired = Cancellation(0.001)
    time.sleep(0.01)
    with pytest.raises(ApiError, match="deadline"):
        expired.check()


def test_renders_run_in_the_bounded_pool(client: TestClient, rsna_cases: dict, monkeypatch) -> None:
    path = rsna_cases["negative"]
    rid = client.post("/v1/predictions?model=chexnet",
                      files={"file": (path.name, path.read_bytes(), "application/dicom")}).json()["id"]
    pool = client.app.state.pneumo.pool
    seen: list[int] = []
    original = pool.run

    async def counting(func, *args, **kwargs):
        seen.append(pool.pending)
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(pool, "run", counting)
    assert client.get(f"/v1/predictions/{rid}/overlay.png?heatmap=true").status_code == 200
    assert seen, "the overlay render did not go through the inference pool"


def test_log_lines_cannot_be_forged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    assert log_safe("/a\r\nINFO forged\x1b[31m") == "/a\\x0d\\x0aINFO forged\\x1b[31m"
    with caplog.at_level(logging.INFO, logger="pneumo.api"):
        client.get("/nothing%0a2026-01-01 INFO pneumo.api: forged%0d")
    lines = [r.getMessage() for r in caplog.records if "nothing" in r.getMessage()]
    assert lines and all("\n" not in line and "\r" not in line for line in lines)
    assert "\\x0a2026-01-01" in lines[0]


def test_failed_api_keys_are_rate_limited_per_client(model_dir: Path) -> None:
    settings = ApiSettings(model_dir=model_dir, api_key="s3cret", auth_max_failures=3, auth_window_s=60)
    with TestClient(create_app(settings, service_factory=tiny_service)) as locked:
        for _ in range(3):
            assert error_of(locked.get("/v1/models", headers={"X-API-Key": "guess"})) == (401, "unauthorized")
        response = locked.get("/v1/models", headers={"X-API-Key": "guess"})
        assert error_of(response) == (429, "too_many_failed_attempts") and int(response.headers["retry-after"]) >= 1
        # even the right key waits: guessing cannot go on while blocked
        assert locked.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 429
    limiter = FailureLimiter(max_failures=2, window_s=10)
    limiter.failed("a", now=0.0)
    limiter.failed("a", now=1.0)
    assert limiter.retry_after("a", now=2.0) == pytest.approx(8.0) and limiter.retry_after("b", now=2.0) is None
    assert limiter.retry_after("a", now=10.5) is None  # the first failure left the sliding window


def test_docs_need_the_key_when_one_is_set(model_dir: Path) -> None:
    settings = ApiSettings(model_dir=model_dir, api_key="s3cret")
    with TestClient(create_app(settings, service_factory=tiny_service)) as locked:
        for path in ("/docs", "/openapi.json"):
            assert error_of(locked.get(path)) == (401, "unauthorized")
            assert locked.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200
    public = ApiSettings(model_dir=model_dir, api_key="s3cret", protect_docs=False)
    with TestClient(create_app(public, service_factory=tiny_service)) as open_docs:
        assert open_docs.get("/openapi.json").status_code == 200


def test_trusted_hosts_refuse_forged_host_headers(model_dir: Path) -> None:
    settings = ApiSettings.from_env({"PNEUMO_TRUSTED_HOSTS": "testserver, pneumo.example.org"}, model_dir=model_dir)
    assert settings.trusted_hosts == ("testserver", "pneumo.example.org")
    with TestClient(create_app(settings, service_factory=tiny_service)) as guarded:
        assert guarded.get("/healthz").status_code == 200
        assert guarded.get("/healthz", headers={"Host": "evil.example.com"}).status_code == 400
        assert guarded.get("/healthz", headers={"Host": "pneumo.example.org"}).status_code == 200


def test_api_key_comes_from_a_file_or_the_environment_never_argv(tmp_path: Path) -> None:
    import argparse

    from pneumo.commands.serve import add_server_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert settings_from_args(parser.parse_args(["--api-key-file", str(key_file)])).api_key == "from-file"
    with pytest.raises(ConfigError, match="process list"):
        settings_from_args(parser.parse_args(["--api-key", "visible"]))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        settings_from_args(parser.parse_args(["--api-key-file", str(tmp_path / "empty")]))
    args = parser.parse_args(["--shutdown-timeout", "3"])
    assert settings_from_args(args).shutdown_timeout_s == 3.0


def test_shutdown_is_bounded(monkeypatch) -> None:
    import uvicorn

    from pneumo.api.server import run_server

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    run_server(ApiSettings(shutdown_timeout_s=4.0))
    assert seen["timeout_graceful_shutdown"] == 4.0


def test_submission_csv_cells_cannot_be_formulas(client: TestClient) -> None:
    data = dicom_bytes(patient_id="=HYPERLINK(\"http://x\")")
    body = client.post("/v1/predictions?model=chexnet", content=data, headers={"content-type": "application/dicom"})
    assert body.status_code == 200, body.text
    text = client.get(f"/v1/predictions/{body.json()['id']}/submission.csv").text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][0].startswith("'=")
